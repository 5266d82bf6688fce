"""The artifact manifest: what a variant dir holds, where it came from, and how it did (contract).

Every variant dir (``out/<model>/<variant>/``) carries ``manifest.json``; the gate, the report,
the model card and publish read nothing else. See docs/MANIFEST.md for each field.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from invoker.files import sha256_file, sha256_text, write_json_atomic

MANIFEST_NAME = "manifest.json"
FORMATS = ("fp16", "gguf", "gptq", "awq")
REQUIRED_KEYS = ("format", "variant", "source", "calibration", "tools", "files", "eval", "bench", "verified", "gate")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or lacks a contract field; the message names the file."""


def sha256_weights(model_dir: str | Path) -> str:
    """One sha256 over a checkpoint's weight files: sha256 of ``"<name> <sha256>\\n"`` lines, names sorted."""
    root = Path(model_dir)
    weights = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise ManifestError(f"{root}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) to hash")
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
    if "format" in manifest and manifest["format"] not in FORMATS:
        problems.append(f"format: {manifest['format']!r} is not one of {', '.join(FORMATS)}")
    if "verified" in manifest and not isinstance(manifest["verified"], bool):
        problems.append("verified: must be true or false")
    for key in ("source", "calibration", "tools", "files", "eval", "bench", "gate"):
        if key in manifest and not isinstance(manifest[key], dict):
            problems.append(f"{key}: must be an object")
    for name, entry in (manifest.get("files") or {}).items():
        if not isinstance(entry, dict) or not {"sha256", "bytes"} <= set(entry):
            problems.append(f"files.{name}: needs sha256 and bytes")
    return problems


def write_manifest(variant_dir: str | Path, manifest: dict) -> Path:
    """Validate and atomically write ``variant_dir/manifest.json``."""
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
