"""The OpenAPI entries of ``POST /feedback`` and ``GET /feedback/{id}`` (api/feedback.py);
api/openapi.py adds them to the document."""

from api.spec_parts import answer, error

MAX_PREDICTED = 10  # 0..9, or 10: the not-a-digit class of an 11-output model
MAX_ID = 2**31 - 1  # the id column is a 32-bit integer in both databases

OPENAPI_PATHS = {
    "/feedback": {"post": {
        "summary": "Keep a drawing with its right digit, for fine-tuning",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object",
            "required": ["image", "label"],
            "properties": {
                "image": {"type": "string",
                          "description": "base64 PNG or JPEG, or a data:image/...;base64, URL"},
                "label": {"type": "integer", "minimum": 0, "maximum": 9,
                          "description": "the digit the drawing shows"},
                "predicted": {"type": "integer", "minimum": 0, "maximum": MAX_PREDICTED,
                              "description": "what the model answered"},
                "model_version": {"type": "integer", "minimum": 0, "maximum": MAX_ID,
                                  "description": "the version that answered"},
                "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._:+/=@-]{1,128}$",
                               "description": "names this correction: a retry with the "
                                              "same value adds no row"},
            },
        }}}},
        "responses": {
            "201": answer("Committed", "FeedbackCreated"),
            "200": answer("Already committed under this request_id", "FeedbackCreated"),
            "400": error("Malformed body, image or field (invalid_label...)"),
            "409": error("request_id already holds another label"),
            "413": error("Body or image too large"),
            "415": error("Not JSON, or a data: URL that is not an image"),
            "422": error("Blank canvas"),
            "429": error("Rate limited (FEEDBACK_RATE_LIMIT)"),
            "503": error("Database unreachable; see Retry-After"),
        },
    }},
    "/feedback/{id}": {"get": {
        "summary": "A correction, and the serving model version that learned from it",
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}],
        "responses": {
            "200": {"description": "The correction", "content": {"application/json": {
                "schema": {
                    "type": "object", "required": ["id", "label", "learned_by", "learned_in"],
                    "properties": {
                        "id": {"type": "integer"}, "label": {"type": "integer"},
                        "learned_by": {"type": "array", "items": {"type": "integer"},
                                       "description": "fine-tuned versions trained on it"},
                        "learned_in": {"type": ["integer", "null"],
                                       "description": "the oldest of those a worker serves"},
                    }}}}},
            "404": error("No such id"),
            "503": error("Database unreachable; see Retry-After"),
        },
    }},
}
OPENAPI_SCHEMAS = {"FeedbackCreated": {
    "type": "object", "required": ["id", "label"],
    "properties": {"id": {"type": "integer"}, "label": {"type": "integer"}},
}}
