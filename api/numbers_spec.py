"""The OpenAPI entry of ``POST /predict/number`` (api/numbers.py), merged by api/openapi.py."""

from api import spec_parts as sp

OPENAPI_PATHS = {
    "/predict/number": {
        "post": {
            "summary": "Recognise a whole number drawn on one canvas",
            "description": "The digits are read left to right. Every candidate digit of "
                           "the drawing (cuts between touching neighbours included) goes "
                           "to the workers as one task; the model's answers choose the "
                           "reading (docs/numbers.md).",
            "requestBody": sp.image_body(
                sp.IMAGE_FORMATS + "; typically a wide canvas such as 840x280"),
            "responses": {
                "200": sp.answer("The number read", "Number"),
                **sp.IMAGE_ERRORS,
                "422": sp.error("Blank canvas (blank_image), or more digits than MAX_DIGITS "
                             "(too_many_digits)"),
                **sp.SERVING_ERRORS,
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
                    "digit": sp.DIGIT,
                    "confidence": sp.UNIT,
                    "probabilities": sp.PROBABILITIES,
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
