"""The gguf format's entry in the registry (``convert.formats``): its converter module, variants and how
it is published. Data only: the converter is ``convert/gguf.py``."""

from __future__ import annotations

from types import MappingProxyType

from convert.formats import FormatSpec, register

SPEC = register(FormatSpec(
    name="gguf",
    title="GGUF",
    converter="convert.gguf",
    tool_packages=("llama-cpp-python", "gguf", "torch", "transformers", "sentencepiece", "numpy"),
    variants=("F16", "Q8_0", "Q5_K_M", "Q4_K_M"),
    shared_base=True,
    repo_suffix="GGUF",
    recommended=("Q4_K_M", "Q5_K_M", "Q8_0", "F16"),
    repo_names=MappingProxyType({"Modelfile": "Modelfile.{variant}", "imatrix.gguf": "imatrix-{variant}.gguf"}),
    card_tags=("gguf", "llama.cpp", "ollama"),
    card_library="gguf",
    snippets=("llama-cpp-python", "llama-server", "ollama", "serve"),
))
