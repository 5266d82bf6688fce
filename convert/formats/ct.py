"""The ct format's entry in the registry (``convert.formats``): its converter module, variants and how
it is published. Data only: the converter is ``convert/ct.py``."""

from __future__ import annotations

from convert.formats import FormatSpec, register

SPEC = register(FormatSpec(
    name="ct",
    convert_seconds=120.0,
    title="compressed-tensors",
    converter="convert.ct",
    converts_on_cuda=True,
    tool_packages=("torch", "transformers", "safetensors", "compressed-tensors"),
    variants=("w4a16-g128", "w4a16-g64", "w4a16-g32"),
    repo_suffix="W4A16",
    default_variant="w4a16-g128",
    card_tags=("compressed-tensors", "4-bit", "gptq"),
    card_library="transformers",
    snippets=("transformers", "vllm", "serve"),
    install="compressed-tensors",
))
