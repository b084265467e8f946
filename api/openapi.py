"""The OpenAPI 3.1 document served at /openapi.json (schemathesis tests against it)."""

from api import spec_parts as sp

SPEC = {
    "openapi": "3.1.0",
    "info": {
        "title": "Digit recogniser",
        "version": "1.0.0",
        "description": "Draw a digit, get the digit and the probability of each one. "
                       "Every response carries an X-Request-ID header: the request's own "
                       "when it is 1-128 characters of A-Z a-z 0-9 . _ : + / = @ -, "
                       "else a new one; error bodies repeat it as error.request_id.",
    },
    "paths": {
        "/predict": {
            "post": {
                "summary": "Recognise one drawn digit",
                "requestBody": sp.image_body(),
                "responses": {
                    "200": sp.answer("The recognised digit", "Prediction"),
                    **sp.IMAGE_ERRORS,
                    "422": sp.error("Blank canvas"),
                    **sp.SERVING_ERRORS,
                },
            }
        },
        "/predict/batch": {
            "post": {
                "summary": "Recognise many drawn digits, each answered on its own",
                "description": "Each result is the /predict answer for that image, or an "
                               "error for that image alone. The whole request is refused "
                               "only when its body is (too large, too many images, no "
                               "array) or when nothing could answer (503, 504).",
                "requestBody": {"required": True, "content": sp.json_content({
                    "type": "object",
                    "required": ["images"],
                    "properties": {"images": {
                        "type": "array",
                        "description": "base64 PNG or JPEG images, with or without a "
                                       "data:image/...;base64, prefix; at most "
                                       "BATCH_MAX_IMAGES",
                        "items": {"type": "string"},
                    }},
                })},
                "responses": {
                    "200": sp.answer("One result per image, in order", "Batch"),
                    "400": sp.error("Malformed body, or no images array"),
                    "413": sp.error("Body too large, or more than BATCH_MAX_IMAGES images"),
                    "415": sp.error("Not JSON"),
                    **sp.SERVING_ERRORS,
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
            "required": ["digit", "confidence", "probabilities", "not_a_digit", "is_digit",
                         "model_version"],
            "properties": {
                "digit": sp.DIGIT,
                "confidence": sp.UNIT,
                "probabilities": sp.PROBABILITIES,
                "not_a_digit": {
                    "type": ["number", "null"], "minimum": 0, "maximum": 1,
                    "description": "the model's score that the drawing is not a digit; null "
                                   "from a model version without that output"},
                "is_digit": {
                    "type": "boolean",
                    "description": "false when not_a_digit is at or over "
                                   "NOT_A_DIGIT_THRESHOLD"},
                "model_version": {"type": "integer"},
                "latency_ms": {"type": "number"},
            },
        },
        "Batch": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {"type": "array", "items": {"oneOf": [
                    {"$ref": "#/components/schemas/Prediction"},
                    {"$ref": "#/components/schemas/Error"},
                ]}},
                "latency_ms": {"type": "number"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "request_id": {"type": "string", "description": "the X-Request-ID "
                                   "of the request (also in the response header)"},
                },
            }},
        },
    }},
}

# POST /feedback and GET /feedback/{id} (api/feedback.py).
from api.feedback_spec import OPENAPI_PATHS, OPENAPI_SCHEMAS  # noqa: E402

SPEC["paths"].update(OPENAPI_PATHS)
SPEC["components"]["schemas"].update(OPENAPI_SCHEMAS)

# POST /predict/number (api/numbers.py).
from api import numbers_spec  # noqa: E402

SPEC["paths"].update(numbers_spec.OPENAPI_PATHS)
SPEC["components"]["schemas"].update(numbers_spec.OPENAPI_SCHEMAS)
