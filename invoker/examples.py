"""The original Invoker project's own example (its README): one function and the question that calls it.

Model cards show the prompt format with it; tests use it as the golden conversation."""

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

GET_TIME_QUESTION = [{"role": "user", "content": "Can you check what is the time in Singapore?"}]
