"""The OpenAPI entry of ``POST /predict/number`` (api/numbers.py), merged by api/openapi.py."""


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


OPENAPI_PATHS = {
    "/predict/number": {
        "post": {
            "summary": "Recognise a whole number drawn on one canvas",
            "description": "The digits are read left to right. Every candidate digit of "
                           "the drawing (cuts between touching neighbours included) goes "
                           "to the workers as one task; the model's answers choose the "
                           "reading (docs/numbers.md).",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {
                        "type": "string",
                        "description": "base64 PNG or JPEG, with or without a "
                                       "data:image/...;base64, prefix; typically a wide "
                                       "canvas such as 840x280",
                    }},
                }}},
            },
            "responses": {
                "200": {"description": "The number read", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Number"}}
                }},
                "400": _error("Malformed body or image"),
                "413": _error("Body or image too large"),
                "415": _error("Not JSON, or a data: URL that is not an image"),
                "422": _error("Blank canvas (blank_image), or more digits than MAX_DIGITS "
                              "(too_many_digits)"),
                "429": _error("Rate limited"),
                "503": _error("No worker, or Redis unreachable"),
                "504": _error("No answer within the timeout"),
            },
        }
    },
}

OPENAPI_SCHEMAS = {
    "Number": {
        "type": "object",
        "required": ["number", "digits", "confidence", "model_version"],
        "properties": {
            "number": {"type": "string", "pattern": "^[0-9]+$",
                       "description": "the digits, left to right"},
            "digits": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["digit", "confidence", "probabilities", "box"],
                "properties": {
                    "digit": {"type": "integer", "minimum": 0, "maximum": 9},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "probabilities": {
                        "type": "object",
                        "required": [str(d) for d in range(10)],
                        "additionalProperties": False,
                        "properties": {str(d): {"type": "number"} for d in range(10)},
                    },
                    "box": {"type": "array", "items": {"type": "integer", "minimum": 0},
                            "minItems": 4, "maxItems": 4,
                            "description": "[x, y, width, height] in the image's pixels"},
                },
            }},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1,
                           "description": "the probability that the whole string is right"},
            "model_version": {"type": "integer"},
            "latency_ms": {"type": "number"},
        },
    },
}
