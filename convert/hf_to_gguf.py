"""llama.cpp's own HF -> GGUF converter script: fetched once from the installed llama-cpp-python's sdist, then run.

``convert_hf_to_gguf.py`` is the maintained HF -> GGUF mapping (tensor names, the Q/K RoPE permutation,
vocabularies, special tokens). It is taken from the sdist of the *installed* llama-cpp-python release,
so converter and runtime come from the same llama.cpp commit (docs/GGUF.md, "Decision"); ``make setup``
fetches it (``python -m convert.gguf --fetch-converter``), so conversion needs no network later.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from invoker.files import sha256_file
from invoker.registry_files import RegistryFileError, pip_download

CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")
FETCH_ARGS = "-m convert.gguf --fetch-converter"  # run with the environment's python: .venv/bin/python -m convert.gguf ...


def default_converter_dir(version: str) -> Path:
    """Where the converter of llama-cpp-python ``version`` is kept: inside the environment, beside the package."""
    return Path(sys.prefix) / "share" / "invoker-pack" / f"llama.cpp-convert-{version}"


def fetch_converter(*, version: str | None = None, dest: Path | None = None) -> Path:
    """The dir holding llama.cpp's ``convert_hf_to_gguf.py`` (+ ``conversion/``, bundled ``gguf-py``) from the
    installed llama-cpp-python's own sdist; downloaded once with pip from the package index, then reused.

    ``make setup`` runs it once (``python -m convert.gguf --fetch-converter``), so conversion needs no
    network later; without it, the first conversion downloads it, or says which command to run."""
    version = version or installed_version("llama-cpp-python")
    dest = dest or default_converter_dir(version)
    if (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        try:
            sdist = download_sdist(version=version, into=Path(tmp))
        except RuntimeError as err:
            raise RuntimeError(
                f"llama.cpp's converter (convert_hf_to_gguf.py from the llama-cpp-python {version} sdist) is not in {dest} "
                f"and could not be downloaded: {err}. Fetch it once, while the package index is reachable, with: "
                f"{sys.executable} {FETCH_ARGS} (make setup runs it)"
            ) from None
        staged = Path(tmp) / "converter"
        extract_converter(sdist=sdist, version=version, into=staged)
        (staged / "SOURCE.json").write_text(json.dumps({
            "package": "llama-cpp-python",
            "version": version,
            "sdist": sdist.name,
            "sdist_sha256": sha256_file(sdist),
            "members": list(CONVERTER_MEMBERS),
        }, indent=2) + "\n")
        os.replace(staged, dest)
    return dest


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"{package} is not installed; install the gguf extra (make setup EXTRAS=gguf,dev)") from None


def download_sdist(*, version: str, into: Path) -> Path:
    try:
        return pip_download(f"llama-cpp-python=={version}", dest=into, sdist=True)
    except RegistryFileError as error:
        raise RuntimeError(str(error)) from None


def extract_converter(*, sdist: Path, version: str, into: Path) -> None:
    """Copy only the converter's files out of the sdist (vendor/llama.cpp/...), refusing any path that escapes."""
    root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist, "r:gz") as archive:
        wanted = [m for m in archive.getmembers()
                  if m.name.startswith(root) and m.name[len(root):].startswith(CONVERTER_MEMBERS) and m.isfile()]
        if not any(m.name == root + "convert_hf_to_gguf.py" for m in wanted):
            raise RuntimeError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
        for member in wanted:
            relative = Path(member.name[len(root):])
            if relative.is_absolute() or ".." in relative.parts:
                raise RuntimeError(f"{sdist}: unsafe path {member.name}")
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as data, open(target, "wb") as out:
                shutil.copyfileobj(data, out)


def converter_provenance(converter_dir: Path) -> dict:
    source = json.loads((converter_dir / "SOURCE.json").read_text())
    return {"script": "convert_hf_to_gguf.py", **{k: source[k] for k in ("package", "version", "sdist", "sdist_sha256")}}



def run_converter(*, command: list[str], source_dir: Path, progress: bool) -> None:
    """Run the converter; show its log and progress lines (not the echoed chat template) when ``progress``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tail: list[str] = []
    buffer = b""
    while chunk := process.stderr.read1(65536):
        buffer += chunk
        *segments, buffer = _split_keep(buffer)
        for segment in segments:
            text = segment.decode("utf-8", errors="replace")
            tail = (tail + [text.rstrip()])[-20:] if text.strip() else tail
            if progress and text.startswith(("WARNING:", "ERROR:", "Writing:")):
                sys.stderr.write(text if len(text) < 240 else text[:200] + " …\n")
                sys.stderr.flush()
    process.wait()
    if process.returncode != 0:
        reason = "\n".join(line for line in tail if line)[-2000:]
        raise RuntimeError(f"llama.cpp convert_hf_to_gguf.py failed on {source_dir} (exit {process.returncode}):\n{reason}")


def _split_keep(data: bytes) -> list[bytes]:
    """Split after every \\n or \\r, keeping them; the last item is the unfinished rest."""
    parts, start = [], 0
    for index, byte in enumerate(data):
        if byte in (10, 13):
            parts.append(data[start : index + 1])
            start = index + 1
    return [*parts, data[start:]]
