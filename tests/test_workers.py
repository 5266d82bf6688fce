"""Jobs in worker processes: a native crash fails its variant alone, with the cause; the others go on."""

from __future__ import annotations

import os
import signal

import pytest

from pipelines.steps import RunLog, run_jobs
from pipelines.workers import exit_cause


def work(item: str) -> str:
    """What a runtime may do in a job: answer, raise, die of a signal (as llama.cpp's AMX path did) or exit."""
    if item.startswith("segv"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if item == "killed":
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer sends
    if item == "error":
        raise ValueError("a bad input, reported as a Python error")
    return f"{item}: ok in {os.getpid()}"


def run(items: list[str], tmp_path, *, jobs_n: int = 1):
    log, finished, failed = RunLog(tmp_path / "run.log"), [], []
    ran = run_jobs(work, items, jobs_n=jobs_n, desc="eval", progress=False, log=log, isolate=True, finished=finished.append,
                   failed=lambda item, cause: failed.append((item, cause)), label=lambda item: f"gguf-{item} (llama.cpp runtime)")
    log.close()
    return ran, finished, failed, (tmp_path / "run.log").read_text()


@pytest.mark.parametrize("jobs_n", [1, 2])
def test_a_job_whose_process_dies_fails_alone_and_the_others_go_on(tmp_path, jobs_n):
    ran, finished, failed, text = run(["a", "segv", "b", "killed", "c"], tmp_path, jobs_n=jobs_n)
    assert ran == 3 and sorted(finished) == ["a", "b", "c"]
    assert sorted(failed) == [("killed", "SIGKILL (signal 9)"), ("segv", "SIGSEGV (signal 11)")]
    assert "gguf-segv (llama.cpp runtime): FAILED, its worker process died with SIGSEGV (signal 11)" in text
    assert "a rerun retries this one" in text
    assert len({line.rsplit(" ", 1)[-1] for line in text.splitlines() if ": ok in " in line}) <= jobs_n + 2  # workers reused


def test_a_python_error_in_a_job_is_raised_here_as_in_process(tmp_path):
    with pytest.raises(ValueError, match="a bad input"):
        run(["a", "error"], tmp_path)


def test_exit_causes_name_the_signal():
    assert exit_cause(-11) == "SIGSEGV (signal 11)" and exit_cause(-4) == "SIGILL (signal 4)" and exit_cause(3) == "exit code 3"
