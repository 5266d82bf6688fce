"""The whole run's time left: weights worked off over wall time, corrected by this machine's own speed."""

from __future__ import annotations

import pytest

from pipelines.eta import RunClock, expected_work
from pipelines.recipe import load_recipe
from pipelines.workspace import Workspace


def test_the_estimate_scales_what_is_left_by_this_runs_own_rate():
    clock = RunClock({("convert", "a"): 10, ("convert", "b"): 30, ("eval", "a"): 60}, now=0.0)
    assert clock.seconds_left(now=5.0) is None and "not known yet" in clock.describe(now=5.0)
    clock.done("convert", "a")  # 10 expected seconds took 20 real ones: this machine is half as fast
    assert clock.seconds_left(now=20.0) == pytest.approx(180.0)
    clock.skipped("convert", ["b"])  # up to date: leaves the run, not counted as done
    assert clock.seconds_left(now=20.0) == pytest.approx(120.0)
    assert clock.describe(now=20.0) == "run: 0.3 min elapsed, about 2 min left"
    clock.stage_done("eval")
    assert clock.seconds_left(now=40.0) == 0 and clock.describe(now=40.0).endswith("about under a minute left")


def test_every_piece_of_the_default_run_has_a_weight_and_slow_formats_weigh_more(tmp_path):
    recipe = load_recipe("pipelines/recipes/tiny-invoker.toml")
    ws = Workspace(recipe=recipe, variants=recipe.variants, source_dir=tmp_path, out_dir=tmp_path / "out", source={})
    pieces = expected_work(ws)
    names = [d.name for d in ws.dirs]
    for stage in ("eval", "bench", "gate"):
        assert {target for s, target in pieces if s == stage} == set(names)
    assert {target for s, target in pieces if s in ("convert", "fidelity") and target} == set(names[1:])
    assert pieces[("convert", "awq-4bit-g128")] > pieces[("convert", "gptq-4bit-g128")] > pieces[("convert", "gguf-Q4_K_M")]
    # the evals dominate: 200 synthetic + 3 x 20 BFCL cases per variant
    assert pieces[("eval", "gguf-Q8_0")] == pytest.approx(260 * 1.5) and pieces[("eval", "fp16")] == pytest.approx(260 * 2.0)
    assert all(weight > 0 for weight in pieces.values())
