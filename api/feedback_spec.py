"""The OpenAPI entries of ``POST /feedback`` and ``GET /feedback/{id}`` (api/feedback.py);
api/openapi.py adds them to the document."""

MAX_PREDICTED = 10  # 0..9, or 10: the not-a-digit class of an 11-output model
MAX_ID = 2**31 - 1  # the id column is a 32-bit integer in both databases

_ERR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
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
            "201": {"description": "Committed", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/FeedbackCreated"}}}},
            "200": {"description": "Already committed under this request_id",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/FeedbackCreated"}}}},
            "400": {"description": "Malformed body, image or field (invalid_label...)", **_ERR},
            "409": {"description": "request_id already holds another label", **_ERR},
            "413": {"description": "Body or image too large", **_ERR},
            "415": {"description": "Not JSON, or a data: URL that is not an image", **_ERR},
            "422": {"description": "Blank canvas", **_ERR},
            "429": {"description": "Rate limited (FEEDBACK_RATE_LIMIT)", **_ERR},
            "503": {"description": "Database unreachable; see Retry-After", **_ERR},
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
            "404": {"description": "No such id", **_ERR},
            "503": {"description": "Database unreachable; see Retry-After", **_ERR},
        },
    }},
}
OPENAPI_SCHEMAS = {"FeedbackCreated": {
    "type": "object", "required": ["id", "label"],
    "properties": {"id": {"type": "integer"}, "label": {"type": "integer"}},
}}
