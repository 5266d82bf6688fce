"""Conversation pieces several tests share: the seed README's own example function, the batched-generation cases."""

from invoker.examples import GET_TIME
from invoker.runtimes import GenerationParams

__all__ = ["BATCH_PARAMS", "BATCH_PROMPTS", "GET_TIME"]

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
