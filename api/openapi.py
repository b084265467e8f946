"""The OpenAPI 3.1 document served at /openapi.json (schemathesis tests against it)."""

_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


SPEC = {
    "openapi": "3.1.0",
    "info": {
        "title": "Digit recogniser",
        "version": "1.0.0",
        "description": "Draw a digit, get the digit and the probability of each one.",
    },
    "paths": {
        "/predict": {
            "post": {
                "summary": "Recognise one drawn digit",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {"image": {
                            "type": "string",
                            "description": "base64 PNG or JPEG, with or without a "
                                           "data:image/...;base64, prefix",
                        }},
                    }}},
                },
                "responses": {
                    "200": {"description": "The recognised digit", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Prediction"}}
                    }},
                    "400": _error("Malformed body or image"),
                    "413": _error("Body or image too large"),
                    "415": _error("Not JSON, or a data: URL that is not an image"),
                    "422": _error("Blank canvas"),
                    "429": _error("Rate limited"),
                    "503": _error("No worker, or Redis unreachable"),
                    "504": _error("No answer within the timeout"),
                },
            }
        },
        "/health": {"get": {"summary": "Liveness", "responses": {"200": {
            "description": "This process answers",
            "content": {"application/json": {"schema": {
                "type": "object", "required": ["status", "model_loaded"],
                "properties": {"status": {"const": "healthy"},
                               "model_loaded": {"type": "boolean"}},
            }}},
        }}}},
        "/ready": {"get": {"summary": "Readiness", "responses": {
            "200": {"description": "Redis answers and a worker serves a model",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            "503": {"description": "Not ready, with the reason",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
        }}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }}}},
    },
    "components": {"schemas": {
        "Prediction": {
            "type": "object",
            "required": ["digit", "confidence", "probabilities", "model_version"],
            "properties": {
                "digit": {"type": "integer", "minimum": 0, "maximum": 9},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "probabilities": {
                    "type": "object",
                    "required": [str(d) for d in range(10)],
                    "additionalProperties": False,
                    "properties": {str(d): {"type": "number"} for d in range(10)},
                },
                "model_version": {"type": "integer"},
                "latency_ms": {"type": "number"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }},
        },
    }},
}
