"""The awq format's entry in the registry (``convert.formats``): its converter module, variants and how
it is published. Data only: the converter is ``convert/awq.py``."""

from __future__ import annotations

from convert.formats import FormatSpec, register

SPEC = register(FormatSpec(
    name="awq",
    convert_seconds=300.0,
    title="AWQ",
    converter="convert.awq",
    converts_on_cuda=True,
    tool_packages=("torch", "transformers", "safetensors"),
    variants=("4bit-g128", "4bit-g64", "4bit-g32"),
    repo_suffix="AWQ",
    default_variant="4bit-g128",
    card_tags=("awq", "4-bit"),
    card_library="transformers",
    snippets=("transformers", "vllm", "serve"),
    install="gptqmodel",
))
