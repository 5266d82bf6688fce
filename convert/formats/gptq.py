"""The gptq format's entry in the registry (``convert.formats``): its converter module, variants and how
it is published. Data only: the converter is ``convert/gptq.py``."""

from __future__ import annotations

from convert.formats import FormatSpec, register

SPEC = register(FormatSpec(
    name="gptq",
    convert_seconds=120.0,
    title="GPTQ",
    converter="convert.gptq",
    converts_on_cuda=True,
    tool_packages=("torch", "transformers", "safetensors"),
    variants=("4bit-g128", "4bit-g128-actorder", "4bit-g64", "4bit-g64-actorder", "4bit-g32", "4bit-g32-actorder"),
    repo_suffix="GPTQ",
    default_variant="4bit-g128",
    card_tags=("gptq", "4-bit"),
    card_library="transformers",
    snippets=("transformers", "vllm", "serve"),
    install="gptqmodel optimum",
))
