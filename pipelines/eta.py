"""The whole run's time left, not only the stage's.

Before the stages run, ``expected_work`` gives every piece of the run — each stage, and each variant dir of the
per-dir stages — a weight: the seconds it took on this project's 2-core machine (README's ``make quantize``
figures: a GGUF converts in ~10 s, GPTQ in ~120 s, AWQ in ~300 s, as each format's registry entry says; an
eval case takes ~1.5 s through llama.cpp and ~2 s through transformers; …). Only the weights' ratios matter:
``RunClock`` measures how fast
the weights are being worked off on *this* machine and this run (done weight per second of wall time) and
divides what is left by that rate, so a faster or slower machine corrects the estimate as the run goes. A
piece that is up to date (a rerun) leaves the total without counting as work done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

# seconds per piece on the reference machine, per case or per run where so named (a format's conversion: its
# registry entry's convert_seconds)
SHARED_BASE_SECONDS = 60.0  # the F16 GGUF and the importance matrix
CALIBRATE_SECONDS = 30.0
EVAL_CASE_SECONDS = {"llama.cpp": 1.5, "transformers": 2.0}
FIDELITY_CASE_SECONDS = 1.2
BENCH_RUN_SECONDS = 5.0
SMALL_SECONDS = 1.0  # gate, report, fp16's "conversion" (a copy)
BFCL_CASES = 200  # a BFCL suite without a limit: about its size


class RunClock:
    """Weights worked off over wall time -> the run's time left. ``pieces``: ``{(stage, dir or "") : seconds}``."""

    def __init__(self, pieces: dict[tuple[str, str], float], *, now: float | None = None) -> None:
        self._left = dict(pieces)
        self._done = 0.0
        self._started = time.monotonic() if now is None else now

    def done(self, stage: str, target: str = "") -> None:
        """``(stage, target)`` was worked off."""
        self._done += self._left.pop((stage, target), 0.0)

    def skipped(self, stage: str, targets: Iterable[str]) -> None:
        """Those pieces were up to date: they leave the run without counting as work done."""
        for target in targets:
            self._left.pop((stage, target), None)

    def stage_done(self, stage: str) -> None:
        """Whatever of ``stage`` is still listed was worked off (a stage may skip pieces without naming them)."""
        for key in [key for key in self._left if key[0] == stage]:
            self.done(*key)

    def seconds_left(self, *, now: float | None = None) -> float | None:
        """The estimate, or None before any work was done."""
        elapsed = (time.monotonic() if now is None else now) - self._started
        if self._done <= 0 or elapsed <= 0:
            return None
        return sum(self._left.values()) * elapsed / self._done

    def describe(self, *, now: float | None = None) -> str:
        """``run: 12.3 min elapsed, about 25 min left`` (or ``… time left not known yet``)."""
        elapsed = (time.monotonic() if now is None else now) - self._started
        left = self.seconds_left(now=now)
        estimate = "time left not known yet" if left is None else f"about {_minutes(left)} left"
        return f"run: {elapsed / 60:.1f} min elapsed, {estimate}"


def _minutes(seconds: float) -> str:
    return "under a minute" if seconds < 60 else f"{round(seconds / 60)} min"


def expected_work(ws) -> dict[tuple[str, str], float]:
    """Every piece of the run of workspace ``ws`` (``pipelines.workspace.Workspace``) with its weight."""
    from convert.formats import get
    from pipelines.eval import SYNTHETIC_EVAL_SIZE

    recipe = ws.recipe
    pieces: dict[tuple[str, str], float] = {("calibrate", ""): CALIBRATE_SECONDS if ws.calibration_sets else SMALL_SECONDS,
                                            ("shared bases", ""): SHARED_BASE_SECONDS, ("report", ""): SMALL_SECONDS,
                                            ("fidelity", ""): 2 * recipe.fidelity.limit * FIDELITY_CASE_SECONDS}  # fp16's reference
    cases = sum(recipe.eval.limit_for(suite) or (SYNTHETIC_EVAL_SIZE if suite == "synthetic" else BFCL_CASES) for suite in recipe.eval.suites)
    for variant, target in zip(ws.targets, ws.dirs):
        spec = get(variant.format)
        runtime = spec.runtime
        if target != ws.baseline_dir:
            pieces[("convert", target.name)] = spec.convert_seconds
            pieces[("fidelity", target.name)] = recipe.fidelity.limit * FIDELITY_CASE_SECONDS
        pieces[("eval", target.name)] = cases * EVAL_CASE_SECONDS.get(runtime, 2.0)
        pieces[("bench", target.name)] = (recipe.bench.runs + recipe.bench.warmup) * BENCH_RUN_SECONDS
        pieces[("gate", target.name)] = SMALL_SECONDS
    return pieces
