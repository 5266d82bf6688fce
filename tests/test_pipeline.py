"""`invoker-pack quantize` end to end on a tiny random model: build, rerun (nothing to do), --force, kill -9 + resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from invoker.files import sha256_file
from invoker.manifest import read_manifest, validate_manifest

REPO = Path(__file__).resolve().parent.parent
VARIANT_DIRS = ("fp16", "gguf-F16", "gguf-Q8_0")
DETERMINISTIC = ("gguf-F16", "gguf-Q8_0")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def recipe(tiny_random_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(f"""
name = "tiny"
variants = ["gguf:F16", "gguf:Q8_0"]
[source]
path = "{tiny_random_model}"
[eval]
limit = 2
max_tokens = 16
[fidelity]
limit = 2
top_k = 8
[bench]
prompt_tokens = 8
gen_tokens = 8
runs = 1
warmup = 0
""", encoding="utf-8")
    return path


def start(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipelines.cli", "quantize", "--recipe", str(recipe), "--out", str(out), *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: kill -9 reaches the converter child too


def watch(process: subprocess.Popen, out: Path, *, kill_when: str | None = None, timeout: float = 600) -> dict:
    """Poll ``out`` while the run goes: every visible variant dir must hold a valid manifest. Optionally kill -9
    the run's process group once a dot-named temp dir whose name starts with ``kill_when`` appears."""
    seen_incomplete, killed, deadline = [], False, time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        entries = list(out.iterdir()) if out.is_dir() else []
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith(".") and entry.name != "logs":
                try:
                    problems = validate_manifest(json.loads((entry / "manifest.json").read_text()))
                except (OSError, ValueError) as err:
                    problems = [str(err)]
                if problems and entry.exists():  # (a dir replaced between listing and reading is not a finding)
                    seen_incomplete.append((entry.name, problems))
        if kill_when and not killed and any(e.name.startswith(kill_when) for e in entries):
            os.killpg(process.pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"quantize did not finish in {timeout} s")
    stdout, stderr = process.communicate()
    return {"returncode": process.returncode, "stdout": stdout, "stderr": stderr, "killed": killed,
            "incomplete": seen_incomplete}


def run(recipe: Path, out: Path, *extra: str, kill_when: str | None = None) -> dict:
    result = watch(start(recipe, out, *extra), out, kill_when=kill_when)
    assert result["incomplete"] == [], result["incomplete"]
    return result


def file_hashes(out: Path, name: str) -> dict[str, str]:
    return {file: entry["sha256"] for file, entry in read_manifest(out / name)["files"].items()}


def snapshot(out: Path) -> dict[str, tuple[str, int]]:
    """Every output file's sha256 and mtime (the logs and the run lock excluded)."""
    return {p.relative_to(out).as_posix(): (sha256_file(p), p.stat().st_mtime_ns) for p in sorted(out.rglob("*"))
            if p.is_file() and "logs" not in p.relative_to(out).parts and p.name != "lock"}


def last_log(out: Path) -> str:
    return sorted((out / "logs").glob("quantize-*.log"))[-1].read_text()


FIRST_RUN = {}


@pytest.fixture(scope="module")
def finished(recipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "tiny"
    result = run(recipe, out)
    assert result["returncode"] == 0, result["stderr"][-3000:]
    FIRST_RUN.update(result)
    return out


def test_the_terminal_shows_the_whole_runs_time_left_and_no_library_chatter(finished):
    terminal = FIRST_RUN["stdout"] + FIRST_RUN["stderr"]
    eta_lines = [line for line in terminal.splitlines() if "run: " in line and " min elapsed, " in line]
    assert len(eta_lines) >= 7, terminal[-3000:]  # after every stage but the last, and after each job
    assert any("min left" in line or "under a minute left" in line for line in eta_lines), eta_lines
    for chatter in ("Loading weights", "FutureWarning", "UserWarning", "_pytree", "Failed to load"):
        assert chatter not in terminal, chatter


def test_a_run_builds_evaluates_benches_gates_and_reports_every_variant(finished):
    for name in VARIANT_DIRS:
        manifest = read_manifest(finished / name)
        assert manifest["eval"]["synthetic"]["n"] == 2
        assert manifest["bench"]["cpu"]["prompt_tok_s"] > 0 and "decode_tok_s" in manifest["bench"]["cpu"]
        assert manifest["gate"]["reason"].startswith(("verified: ", "not verified: "))
        assert manifest["source"]["parameters"] > 0
    assert read_manifest(finished / "fp16")["format"] == "fp16" and "fidelity" not in read_manifest(finished / "fp16")
    f16, q8 = (read_manifest(finished / name)["fidelity"] for name in ("gguf-F16", "gguf-Q8_0"))
    assert f16["reference"]["cases"] == 2 and f16["reference"]["top_k"] == 8 and f16["answer"]["positions"] > 0
    assert f16["answer"]["mean_kl"] < 1e-3 and f16["answer"]["top1_agreement"] > 0.9  # F16 computes what fp16 does
    assert q8["answer"]["mean_kl"] >= f16["answer"]["mean_kl"]
    assert list((finished / ".pipeline" / "fidelity").glob("reference-*.npz"))
    report = json.loads((finished / "report.json").read_text())
    assert sorted(report) == sorted(VARIANT_DIRS)
    assert report["gguf-Q8_0"]["bits_per_weight"] < report["gguf-F16"]["bits_per_weight"]
    assert "| gguf-Q8_0 | gguf (int8) |" in (finished / "report.md").read_text()  # what its eval multiplied in
    dtypes = {name: read_manifest(finished / name)["eval"]["synthetic"]["compute_dtype"] for name in VARIANT_DIRS}
    assert dtypes["fp16"] == "float32" and dtypes["gguf-F16"] == "float32" and dtypes["gguf-Q8_0"] == "int8"
    assert (finished / "accuracy_vs_size.png").stat().st_size > 0
    assert not [p.name for p in finished.iterdir() if ".tmp-" in p.name]


def test_a_second_run_does_nothing_and_finishes_fast(recipe, finished):
    before = snapshot(finished)
    started = time.perf_counter()
    result = run(recipe, finished)
    seconds = time.perf_counter() - started
    assert result["returncode"] == 0, result["stderr"][-3000:]
    assert snapshot(finished) == before  # not a byte, not an mtime changed
    log = last_log(finished)
    for line in ("calibrate: no variant needs", "gguf-base: up to date", "convert: 3 dirs, 0 built, 3 up to date",
                 "eval: 3 dirs, 0 evaluated", "fidelity: 2 variants, 0 measured", "bench: 3 dirs, 0 measured", "gate: ",
                 "report: up to date"):
        assert line in log
    assert "3 up to date" in log.split("gate: ")[1]
    assert seconds < 30, f"a no-op rerun took {seconds:.1f} s"


def test_force_redoes_every_stage_and_deterministic_variants_come_out_identical(recipe, finished, tmp_path):
    out = tmp_path / "tiny"
    shutil.copytree(finished, out)
    before = snapshot(out)
    result = run(recipe, out, "--force")
    assert result["returncode"] == 0, result["stderr"][-3000:]
    log = last_log(out)
    assert "convert: 3 dirs, 3 built, 0 up to date" in log and "eval: 3 dirs, 3 evaluated" in log
    after = snapshot(out)
    gguf = "gguf-Q8_0/tiny-Q8_0.gguf"
    assert after[gguf][1] != before[gguf][1]  # rebuilt …
    for name in DETERMINISTIC:
        assert file_hashes(out, name) == file_hashes(finished, name)  # … to the same bytes


def test_kill_9_during_a_conversion_then_rerun_equals_an_uninterrupted_run(recipe, finished, tmp_path):
    out = tmp_path / "tiny"
    killed = run(recipe, out, kill_when=".gguf-F16.tmp-")
    assert killed["killed"] and killed["returncode"] == -signal.SIGKILL
    assert not (out / "gguf-F16").exists() and (out / "fp16" / "manifest.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".gguf-F16.tmp-")]  # what the kill left behind

    resumed = run(recipe, out)
    assert resumed["returncode"] == 0, resumed["stderr"][-3000:]
    log = last_log(out)
    assert "gguf-base: up to date" in log  # the shared F16 GGUF finished before the kill is not redone
    assert "convert: 3 dirs, 2 built, 1 up to date" in log  # fp16 was finished: only the two GGUF variants
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    for name in DETERMINISTIC:
        assert file_hashes(out, name) == file_hashes(finished, name)
    for name in VARIANT_DIRS:
        done, reference = read_manifest(out / name), read_manifest(finished / name)
        assert {k: done["eval"]["synthetic"][k] for k in ("call_accuracy", "name_accuracy", "n")} == \
               {k: reference["eval"]["synthetic"][k] for k in ("call_accuracy", "name_accuracy", "n")}
        assert done["verified"] == reference["verified"]
