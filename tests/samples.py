"""Conversation pieces several tests share: the seed README's own example function."""

GET_TIME = {
    "name": "get_time",
    "description": "Get the current time",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. New York City, NY"},
            "format": {"type": "string", "enum": ["12-hour", "24-hour"]},
        },
        "required": ["location"],
    },
}
