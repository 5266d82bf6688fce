"""Conversation pieces several tests share: the seed README's own example function, the batched-generation cases,
and concurrent streams."""

import concurrent.futures

from invoker.examples import GET_TIME
from invoker.functions import validate_functions
from invoker.runtimes import GenerationParams, generate

__all__ = ["BATCH_PARAMS", "BATCH_PROMPTS", "GET_TIME", "WEATHER", "together"]

# generate_batch must equal one-by-one generation on prompts of different lengths, with and without stops
BATCH_PROMPTS = [
    "USER: what is the weather in Paris?\nASSISTANT:",
    "USER: hi\nASSISTANT:",
    "USER: please convert 25 USD to EUR and tell me the time in Tokyo, then book a table\nASSISTANT:",
    "Available Functions:\nNone\n\nUSER: send email to the user with subject note\nASSISTANT:",
]
BATCH_PARAMS = [
    GenerationParams(max_tokens=20),
    GenerationParams(max_tokens=12, stop=("e", "the")),
    GenerationParams(max_tokens=9, ignore_eos=True),
]

# a function whose calls the grammar bounds (a short city, an enum): what concurrent constrained streams decode
WEATHER = validate_functions([{"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}}])


def together(runtime, prompts, params_list):
    """``generate`` of each prompt with its params, all started at once (one thread each)."""
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(lambda args: generate(runtime, *args), zip(prompts, params_list)))
