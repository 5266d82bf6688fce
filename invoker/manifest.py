"""The artifact manifest: what a variant dir holds, where it came from, and how it did (contract).

Every variant dir (``out/<model>/<variant>/``) carries ``manifest.json``; the gate, the report,
the model card and publish read nothing else. See docs/MANIFEST.md for each field. ``read_manifest``
gives the validated JSON object; ``load_manifest`` the same as a ``Manifest``, which also holds the
one definition of what the report, the cards and publish derive from it: the gated suite, the
weight bytes, whether it may be published.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from invoker.files import sha256_file, sha256_text, write_json_atomic
from invoker.formats import ARTIFACTS, HF_WEIGHT_SUFFIXES, is_weight_file  # a manifest's format is a registered one

MANIFEST_NAME = "manifest.json"
REQUIRED_KEYS = ("format", "variant", "source", "calibration", "tools", "files", "eval", "bench", "verified", "gate")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or lacks a contract field; the message names the file."""


def sha256_weights(model_dir: str | Path) -> str:
    """One sha256 over a checkpoint's weight files: sha256 of ``"<name> <sha256>\\n"`` lines, names sorted."""
    root = Path(model_dir)
    weights = sorted(p for p in root.iterdir() if p.is_file() and is_weight_file(p.name))
    if not weights:
        suffixes = [*HF_WEIGHT_SUFFIXES, *(a.suffix for a in ARTIFACTS.values() if a.suffix)]
        raise ManifestError(f"{root}: no weight files ({', '.join(suffixes)}) to hash")
    return sha256_text("".join(f"{p.name} {sha256_file(p)}\n" for p in weights))


def tool_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None where one is not installed)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def validate_manifest(manifest: dict) -> list[str]:
    """Contract problems of a manifest dict, as ``"<key>: <problem>"`` strings ([] when valid)."""
    problems = [f"{key}: missing" for key in REQUIRED_KEYS if key not in manifest]
    if "format" in manifest and manifest["format"] not in ARTIFACTS:
        problems.append(f"format: {manifest['format']!r} is not one of {', '.join(ARTIFACTS)}")
    if "variant" in manifest and (problem := variant_name_problem(manifest["variant"])):
        problems.append(f"variant: {problem}, got {json.dumps(manifest['variant'])[:80]}")
    for key in ("verified", "release"):
        if key in manifest and not isinstance(manifest[key], bool):
            problems.append(f"{key}: must be true or false")
    for key in ("source", "calibration", "tools", "files", "eval", "bench", "gate", "fidelity", "failures"):
        if key in manifest and not isinstance(manifest[key], dict):
            problems.append(f"{key}: must be an object")
    gate, source = manifest.get("gate"), manifest.get("source")
    if isinstance(gate, dict) and gate.get("suite") is not None and not isinstance(gate["suite"], str):
        problems.append("gate.suite: must be a suite name (a string)")
    if isinstance(gate, dict) and "reason" in gate and not isinstance(gate["reason"], str):
        problems.append("gate.reason: must be a string")
    parameters = source.get("parameters") if isinstance(source, dict) else None
    if parameters is not None and (isinstance(parameters, bool) or not isinstance(parameters, int) or parameters <= 0):
        problems.append(f"source.parameters: must be a positive integer, got {json.dumps(parameters)[:80]}")
    files = manifest.get("files")
    for name, entry in (files.items() if isinstance(files, dict) else ()):
        name_problem = file_name_problem(name)
        if name_problem:
            problems.append(f"files.{json.dumps(name)}: {name_problem}")
        elif not isinstance(entry, dict) or not {"sha256", "bytes"} <= set(entry):
            problems.append(f"files.{name}: needs sha256 and bytes")
        elif not isinstance(entry["sha256"], str) or not SHA256.match(entry["sha256"]):
            problems.append(f"files.{name}.sha256: must be 64 lowercase hex digits, got {entry['sha256']!r}")
        elif isinstance(entry["bytes"], bool) or not isinstance(entry["bytes"], int) or entry["bytes"] < 0:
            problems.append(f"files.{name}.bytes: must be a non-negative integer, got {entry['bytes']!r}")
    return problems


VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]{0,99}$")


def variant_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a variant's name, or None. It becomes part of file names (``Modelfile.<variant>``,
    ``imatrix-<variant>.gguf``) and repo ids, so it is one plain word: letters, digits and ``._+@-``."""
    if not isinstance(name, str) or not VARIANT_NAME.match(name) or ".." in name:
        return "must be a name of letters, digits and ._+@- (at most 100, not starting with a symbol, no '..')"
    return None


def file_name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain relative file name inside a variant dir (``model.safetensors``,
    ``sub/tokenizer.json``), or None. Absolute paths, ``..``, ``.``, empty parts and backslashes are refused:
    a manifest names files of its own dir, nothing else."""
    if not isinstance(name, str) or not name:
        return "a file name must be a non-empty string"
    if "\\" in name or "\0" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "must be a plain relative file name inside the variant dir (no absolute path, drive or backslash)"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "must be a plain relative file name inside the variant dir (no '..', '.' or empty parts)"
    return None


def verify_files(path: str | Path) -> list[str]:
    """What no longer matches the manifest beside a model: ``path`` is a variant dir with ``manifest.json``
    (every file it lists), or a file in one (that file). Each problem names the file; ``[]`` when all
    match or there is no manifest. Reads every listed file once (sha256)."""
    path = Path(path)
    variant_dir = path.parent if path.is_file() else path
    if not (variant_dir / MANIFEST_NAME).is_file():
        return []
    files = read_manifest(variant_dir)["files"]
    if path.is_file():
        files = {name: entry for name, entry in files.items() if (variant_dir / name).resolve() == path.resolve()}
    problems = []
    for name, entry in sorted(files.items()):
        file = variant_dir / name
        if not file.is_file():
            problems.append(f"{file}: listed in {variant_dir / MANIFEST_NAME} but missing")
        elif file.stat().st_size != entry["bytes"]:
            problems.append(f"{file}: {file.stat().st_size} bytes, but its manifest says {entry['bytes']}")
        elif sha256_file(file) != entry["sha256"]:
            problems.append(f"{file}: sha256 differs from its manifest (changed since it was written)")
    return problems


def check_artifact(path: str | Path, *, refuse: bool, warn) -> None:
    """Before eval or serve load ``path``: files that no longer match their manifest (``verify_files``) are
    a ``ManifestError`` with ``refuse`` (``--verify``), else each is passed to ``warn``."""
    problems = verify_files(path)
    if problems and refuse:
        raise ManifestError("; ".join(problems) + " (--verify refuses to load it; rerun the pipeline to rebuild it)")
    for problem in problems:
        warn(f"{problem}; loading it anyway (--verify refuses)")


def write_manifest(variant_dir: str | Path, manifest: dict | Manifest) -> Path:
    """Validate and atomically write ``variant_dir/manifest.json``."""
    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()
    problems = validate_manifest(manifest)
    if problems:
        raise ManifestError(f"{Path(variant_dir) / MANIFEST_NAME}: " + "; ".join(problems))
    return write_json_atomic(Path(variant_dir) / MANIFEST_NAME, manifest)


def read_manifest(variant_dir: str | Path) -> dict:
    """Read and validate ``variant_dir/manifest.json``; a clear ``ManifestError`` otherwise."""
    path = Path(variant_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (is this a variant dir written by invoker-pack?)") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: must hold a JSON object")
    problems = validate_manifest(manifest)
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems))
    return manifest


def load_manifest(variant_dir: str | Path) -> Manifest:
    """``read_manifest`` as a ``Manifest``."""
    return Manifest.from_dict(read_manifest(variant_dir))


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A validated manifest, typed. Fields are docs/MANIFEST.md's; keys it does not name are kept in ``extra``
    and written back by ``to_dict`` in their place."""

    format: str
    variant: str
    source: dict
    calibration: dict
    tools: dict
    files: dict[str, FileEntry]
    eval: dict[str, dict]
    bench: dict[str, dict]
    verified: bool
    gate: dict
    conversion: dict = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)  # the fidelity stage's distance from fp16 (pipelines.fidelity)
    release: bool | None = None  # set by the gate stage: False for a variant the recipe keeps out of a release
    failures: dict = field(default_factory=dict)  # stage -> why its job's process died; cleared when it next succeeds
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        problems = validate_manifest(data)
        if problems:
            raise ManifestError("; ".join(problems))
        named = {key: data[key] for key in (*REQUIRED_KEYS, "conversion", "fidelity", "release", "failures") if key in data}
        named["files"] = {name: FileEntry(sha256=entry["sha256"], bytes=entry["bytes"]) for name, entry in data["files"].items()}
        return cls(**named, extra={key: value for key, value in data.items() if key not in named})

    def to_dict(self) -> dict:
        data = {key: getattr(self, key) for key in REQUIRED_KEYS}
        data["files"] = {name: {"sha256": entry.sha256, "bytes": entry.bytes} for name, entry in self.files.items()}
        data["conversion"] = self.conversion
        if self.fidelity:
            data["fidelity"] = self.fidelity
        if self.release is not None:
            data["release"] = self.release
        if self.failures:
            data["failures"] = self.failures
        return {**data, **self.extra}

    @property
    def gated_suite(self) -> str | None:
        """The suite the gate judged this variant on; before gating, the one it will judge (the first evaluated)."""
        return self.gate.get("suite") or next(iter(self.eval), None)

    def metrics(self, suite: str | None = None) -> dict:
        """The eval results on ``suite`` (default: the gated suite); {} when it was not evaluated."""
        return self.eval.get(suite or self.gated_suite) or {}

    def metric(self, key: str, suite: str | None = None) -> float | None:
        value = self.metrics(suite).get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def weight_files(self) -> list[str]:
        """The model's weights: ``*.safetensors``, ``*.bin``, the model ``.gguf`` (not what merely sits beside them)."""
        return [name for name in self.files if is_weight_file(name)]

    @property
    def weight_bytes(self) -> int:
        return sum(self.files[name].bytes for name in self.weight_files)

    @property
    def size_bytes(self) -> int:
        """Every file of the variant dir (tokenizer, imatrix, Modelfile included)."""
        return sum(entry.bytes for entry in self.files.values())

    @property
    def parameters(self) -> int | None:
        return self.source.get("parameters")

    @property
    def bits_per_weight(self) -> float | None:
        """8 × weight bytes / the source's parameter count (None without a count)."""
        parameters, weight_bytes = self.parameters, self.weight_bytes
        return round(8 * weight_bytes / parameters, 3) if parameters and weight_bytes else None

    @property
    def gate_reason(self) -> str:
        return self.gate.get("reason") or "no gate verdict recorded"

    @property
    def publishable(self) -> bool:
        """Verified by the gate and not kept out of the release by the recipe."""
        return self.verified is True and self.release is not False
