"""Conversation data for Invoker models: the synthetic generator and loaders (see docs/DATA.md)."""

from invoker.data.loaders import DataError, convert_row, load_conversations, read_jsonl, write_jsonl
from invoker.data.synth import SPLITS, approximate_prompt, function_split, generate_conversations, value_split

__all__ = [
    "SPLITS",
    "DataError",
    "approximate_prompt",
    "convert_row",
    "function_split",
    "generate_conversations",
    "load_conversations",
    "read_jsonl",
    "value_split",
    "write_jsonl",
]
