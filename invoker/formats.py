"""What a format's artifacts are to the reading side: how one is recognised and which runtime loads it.

One ``ArtifactFormat`` per format, registered here, one line each — the only list of formats. Everything that
reads an artifact asks this module: ``detect_format`` (the manifest's ``format``, a single-file artifact's
suffix, ``config.json``'s ``quant_method``), ``invoker.runtimes.load_runtime`` (the format's runtime),
``invoker.manifest`` (which files are weights), the server (a single-file artifact's name). The writing side
sits on top, in ``convert/``: a format's converter module ``convert/<name>.py`` declares its converter, its
variants and how it is published (``convert.formats.FormatSpec``), and the registry there finds it by this
name. This module imports nothing of the project.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

HF_WEIGHT_SUFFIXES = (".safetensors", ".bin")  # a Hugging Face checkpoint's weights (the baseline's, and formats
#                                                 transformers loads keep theirs in the same files)


class ModelFormatError(ValueError):
    """The path is not a model artifact we recognise, or no runtime loads its format."""


@dataclass(frozen=True)
class ArtifactFormat:
    """The reading side of one format."""

    name: str  # the manifest's ``format``; the recipe's prefix and the variant dir's (convert.formats)
    runtime: str  # the runtime of ``invoker.runtimes.RUNTIMES`` that loads it
    also: tuple[str, ...] = ()  # runtimes that load it too when asked by name (exllamav2: GPTQ on CUDA)
    quant_method: str | None = None  # config.json quantization_config.quant_method that marks it without a manifest
    suffix: str | None = None  # a single-file artifact: its suffix (``.gguf``), a weight file wherever it sits
    companions: tuple[str, ...] = ()  # name prefixes of files with that suffix that are not the model (imatrix)

    def loaded_by(self, runtime: str) -> bool:
        return runtime == self.runtime or runtime in self.also


_REGISTRY: dict[str, ArtifactFormat] = {}
ARTIFACTS: Mapping[str, ArtifactFormat] = MappingProxyType(_REGISTRY)


def register(artifact: ArtifactFormat) -> ArtifactFormat:
    if artifact.name in _REGISTRY:
        raise ValueError(f"format {artifact.name!r} is registered twice")
    _REGISTRY[artifact.name] = artifact
    return artifact


BASELINE = register(ArtifactFormat("fp16", runtime="transformers"))  # the source checkpoint itself
register(ArtifactFormat("gguf", runtime="llama.cpp", suffix=".gguf", companions=("imatrix",)))
register(ArtifactFormat("gptq", runtime="transformers", also=("exllamav2",), quant_method="gptq"))
register(ArtifactFormat("awq", runtime="transformers", quant_method="awq"))
register(ArtifactFormat("ct", runtime="transformers", quant_method="compressed-tensors"))


def get(name: str) -> ArtifactFormat:
    if name not in _REGISTRY:
        raise ModelFormatError(f"unknown format {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def file_format(path: Path) -> ArtifactFormat | None:
    """The single-file format whose suffix ``path`` has (a ``.gguf`` file), None for any other file."""
    return next((a for a in _REGISTRY.values() if a.suffix and Path(path).suffix == a.suffix), None)


def is_companion(name: str) -> bool:
    """A file kept beside a single-file model with its suffix that is not the model (``imatrix.gguf``)."""
    artifact = file_format(Path(name))
    return artifact is not None and Path(name).name.startswith(artifact.companions)


def is_weight_file(name: str) -> bool:
    """The model's weights: a Hugging Face checkpoint's ``*.safetensors`` / ``*.bin``, or a single-file model."""
    return Path(name).suffix in HF_WEIGHT_SUFFIXES or (file_format(Path(name)) is not None and not is_companion(name))


def checkpoint_format(config: dict) -> str:
    """The format of a Hugging Face checkpoint from its ``config.json``: by ``quantization_config.quant_method``,
    else the baseline (unquantized). A method no format declares raises ``ModelFormatError``."""
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method is None:
        return BASELINE.name
    known = {a.quant_method: a.name for a in _REGISTRY.values() if a.quant_method}
    method = str(method).lower()
    if method not in known:
        raise ModelFormatError(f"quantization method {method!r} is not supported ({', '.join(known)} are)")
    return known[method]


def detect_format(path: str | Path) -> str:
    """The artifact format of a model dir or file (a name of ``ARTIFACTS``).

    Looked for in order: ``manifest.json``'s ``format``; a single-file model (``*.gguf``, the file itself or in the
    dir); ``config.json``'s ``quantization_config.quant_method``; ``config.json`` with safetensors (or PyTorch
    ``.bin``) weights: the baseline.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file or directory")
    if path.is_file():
        artifact = file_format(path)
        if artifact is not None:
            return artifact.name
        suffixes = " or ".join(a.suffix for a in _REGISTRY.values() if a.suffix)
        raise ModelFormatError(f"{path}: is a file, not a model directory (or a {suffixes} file)")
    manifest = path / "manifest.json"
    if manifest.is_file():
        fmt = _read_json(manifest).get("format")
        if fmt not in _REGISTRY:
            raise ModelFormatError(f"{manifest}: format {fmt!r} is not one of {', '.join(_REGISTRY)}")
        return fmt
    for artifact in _REGISTRY.values():
        if artifact.suffix and any(path.glob(f"*{artifact.suffix}")):
            return artifact.name
    config = path / "config.json"
    if config.is_file():
        data = _read_json(config)
        if (data.get("quantization_config") or {}).get("quant_method") is not None:
            try:
                return checkpoint_format(data)
            except ModelFormatError as err:
                raise ModelFormatError(f"{config}: {err}") from None
        if any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin")):
            return BASELINE.name
    single = ", ".join(f"*{a.suffix}" for a in _REGISTRY.values() if a.suffix)
    raise ModelFormatError(
        f"{path}: not a model directory — looked for manifest.json, {single}, "
        "config.json with quantization_config, config.json with *.safetensors weights"
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return data
