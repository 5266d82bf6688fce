"""The one loader: find an artifact's format (``invoker.formats``), pick the runtime that serves it, load it.

Eval, bench and the server all call ``load_runtime``, so what is verified is what is served.
A runtime is registered below by name with where its class lives (imported only when used, so optional
backends cost nothing until asked for); each format names the runtime that loads it (``invoker.formats``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from invoker.formats import ARTIFACTS, ModelFormatError, detect_format
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
    "formats_of",
    "generate",
    "load_runtime",
]

# runtime name -> (module, class). Add a runtime with one line here and one module; which formats it loads is
# each format's own declaration (``invoker.formats``: its runtime, and the runtimes that load it when named).
RUNTIMES: dict[str, tuple[str, str]] = {
    "transformers": ("invoker.runtimes.transformers_runtime", "TransformersRuntime"),
    "llama.cpp": ("invoker.runtimes.llamacpp_runtime", "LlamaCppRuntime"),
    "exllamav2": ("invoker.runtimes.exllamav2_runtime", "ExLlamaV2Runtime"),  # CUDA only; used when named
}
FORMATS = tuple(ARTIFACTS)  # every format a runtime loads: those of the registry


def formats_of(runtime: str) -> tuple[str, ...]:
    """The formats ``runtime`` loads."""
    return tuple(name for name, artifact in ARTIFACTS.items() if artifact.loaded_by(runtime))


def load_runtime(path: str | Path, *, device: str = "cpu", runtime: str | None = None) -> Runtime:
    """Load the model at ``path`` with the runtime for its format (or the named ``runtime``)."""
    fmt = detect_format(path)
    if runtime is not None and runtime not in RUNTIMES:
        raise ModelFormatError(f"unknown runtime {runtime!r}; available: {', '.join(RUNTIMES)}")
    name = runtime or ARTIFACTS[fmt].runtime
    if name not in RUNTIMES or not ARTIFACTS[fmt].loaded_by(name):
        supported = "; ".join(f"{name}: {', '.join(formats_of(name))}" for name in RUNTIMES)
        problem = f"runtime {runtime!r} does not load format {fmt!r}" if runtime else f"no runtime loads format {fmt!r}"
        raise ModelFormatError(f"{path}: {problem} (supported — {supported})")
    module, cls = RUNTIMES[name]
    return getattr(importlib.import_module(module), cls).load(Path(path), device=device)
