"""The one loader: find an artifact's format, pick the runtime that serves it, load it.

Eval, bench and the server all call ``load_runtime``, so what is verified is what is served.
A runtime is registered below by name, with the formats it loads and where its class lives
(imported only when used, so optional backends cost nothing until asked for).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from invoker.runtimes.base import Chunk, Generation, GenerationParams, Runtime, StopMatcher, generate

__all__ = [
    "Chunk",
    "FORMATS",
    "Generation",
    "GenerationParams",
    "ModelFormatError",
    "RUNTIMES",
    "Runtime",
    "StopMatcher",
    "detect_format",
    "generate",
    "load_runtime",
]

# runtime name -> (module, class, formats it loads). Add a runtime with one line here and one module;
# a format a runtime already loads is one more word in its tuple (convert/formats.py holds the rest).
RUNTIMES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "transformers": ("invoker.runtimes.transformers_runtime", "TransformersRuntime", ("fp16", "gptq", "awq", "ct")),
    "llama.cpp": ("invoker.runtimes.llamacpp_runtime", "LlamaCppRuntime", ("gguf",)),
    "exllamav2": ("invoker.runtimes.exllamav2_runtime", "ExLlamaV2Runtime", ("gptq",)),  # CUDA only; used when named
}
FORMATS = tuple(dict.fromkeys(fmt for _, _, formats in RUNTIMES.values() for fmt in formats))
# config.json quantization_config.quant_method -> our format name (checkpoints transformers loads)
QUANT_METHODS = {"gptq": "gptq", "awq": "awq", "compressed-tensors": "ct"}


class ModelFormatError(ValueError):
    """The path is not a model artifact we recognise, or no runtime loads its format."""


def detect_format(path: str | Path) -> str:
    """The artifact format of a model dir: ``fp16`` | ``gptq`` | ``awq`` | ``gguf``.

    Looked for in order: ``manifest.json``'s ``format``; ``*.gguf`` files; ``config.json``'s
    ``quantization_config.quant_method``; ``config.json`` with safetensors (or PyTorch ``.bin``) weights.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix == ".gguf":
            return "gguf"
        raise ModelFormatError(f"{path}: is a file, not a model directory (or a .gguf file)")
    manifest = path / "manifest.json"
    if manifest.is_file():
        fmt = _read_json(manifest).get("format")
        if fmt not in FORMATS:
            raise ModelFormatError(f"{manifest}: format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    if any(path.glob("*.gguf")):
        return "gguf"
    config = path / "config.json"
    if config.is_file():
        method = (_read_json(config).get("quantization_config") or {}).get("quant_method")
        if method is not None:
            method = str(method).lower()
            if method not in QUANT_METHODS:
                raise ModelFormatError(f"{config}: quantization method {method!r} is not supported "
                                       f"({', '.join(QUANT_METHODS)} are)")
            return QUANT_METHODS[method]
        if any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin")):
            return "fp16"
    raise ModelFormatError(
        f"{path}: not a model directory — looked for manifest.json, *.gguf, "
        "config.json with quantization_config, config.json with *.safetensors weights"
    )


def load_runtime(path: str | Path, *, device: str = "cpu", runtime: str | None = None) -> Runtime:
    """Load the model at ``path`` with the runtime for its format (or the named ``runtime``)."""
    fmt = detect_format(path)
    if runtime is not None and runtime not in RUNTIMES:
        raise ModelFormatError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")
    names = [runtime] if runtime else [name for name, (_, _, formats) in RUNTIMES.items() if fmt in formats]
    if not names or fmt not in RUNTIMES[names[0]][2]:
        supported = "; ".join(f"{name}: {', '.join(formats)}" for name, (_, _, formats) in RUNTIMES.items())
        problem = f"runtime {runtime!r} does not load format {fmt!r}" if runtime else f"no runtime loads format {fmt!r}"
        raise ModelFormatError(f"{path}: {problem} (supported — {supported})")
    module, cls, _ = RUNTIMES[names[0]]
    return getattr(importlib.import_module(module), cls).load(Path(path), device=device)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data
