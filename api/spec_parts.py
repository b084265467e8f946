"""Pieces the OpenAPI entries share (api/openapi.py, api/feedback_spec.py,
api/numbers_spec.py): error answers, JSON bodies and the image and probability fields."""

ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}
IMAGE_FORMATS = "base64 PNG or JPEG, with or without a data:image/...;base64, prefix"


def error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def answer(description: str, schema_name: str) -> dict:
    return {"description": description,
            "content": json_content({"$ref": f"#/components/schemas/{schema_name}"})}


def image_body(description: str = IMAGE_FORMATS) -> dict:
    """A required JSON body {"image": "<base64>"}."""
    return {"required": True, "content": json_content({
        "type": "object",
        "required": ["image"],
        "properties": {"image": {"type": "string", "description": description}},
    })}


# What every endpoint that sends work to the workers may answer besides its own.
SERVING_ERRORS = {
    "429": error("Rate limited"),
    "503": error("No worker, or Redis unreachable"),
    "504": error("No answer within the timeout"),
}
IMAGE_ERRORS = {
    "400": error("Malformed body or image"),
    "413": error("Body or image too large"),
    "415": error("Not JSON, or a data: URL that is not an image"),
}

DIGIT = {"type": "integer", "minimum": 0, "maximum": 9}
UNIT = {"type": "number", "minimum": 0, "maximum": 1}
PROBABILITIES = {
    "type": "object",
    "required": [str(d) for d in range(10)],
    "additionalProperties": False,
    "properties": {str(d): {"type": "number"} for d in range(10)},
}
