"""The bundled model's own card (models/tiny-invoker/card.py): it says exactly what the adapter was trained on."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "models" / "tiny-invoker"
SCORES = {"synthetic": {"n": 300, "call_accuracy": 0.9, "name_accuracy": 1.0, "json_valid_rate": 1.0, "relevance_accuracy": 1.0, "limit": None},
          "bfcl:simple": {"n": 50, "call_accuracy": 0.5, "limit": 50}}


@pytest.fixture(scope="module")
def card():
    spec = importlib.util.spec_from_file_location("tiny_invoker_card", HERE / "card.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_invoker_card"] = module
    spec.loader.exec_module(module)
    return module


def test_a_warm_started_adapter_describes_every_stage_and_its_data(card):
    pins = json.loads((HERE / "build.json").read_text())
    first = copy.deepcopy(card.stages(json.loads((HERE / "training_log.json").read_text()))[0])  # generator only
    assert "init_adapter" not in first and not first["args"].get("live_repeat")
    second = copy.deepcopy(first)
    second["args"].update(live_repeat=2, n_train=3000, seed=1, steps=480)
    second["curve"] = [{"step": 100, "loss": 0.123, "seconds": 1.0}]
    second["evals"] = [{"step": 100, "n": 60, "call_accuracy": 0.5, "name_accuracy": 0.9, "json_valid_rate": 1.0, "relevance_accuracy": 1.0}]
    second["init_adapter"] = {"path": "x/adapter", "sha256": "ab" * 32, "log": first}
    text = card.render(pins=pins, log=second, scores=SCORES)
    stage_one, stage_two = text.split("**Stage 1**")[1].split("**Stage 2**")
    assert "BFCL's live" not in stage_one and "live_simple, live_multiple, live_irrelevance" in stage_two
    assert "starting from stage 1's adapter" in stage_two and "3000 conversations" in stage_two and "100: 0.123" in stage_two
    assert "| 2 | 100 | 60 | 0.500 |" in text  # the learning curve names its stage
    assert "| `bfcl:simple` | 50 (the first) | 0.500 |" in text
    single = card.render(pins=pins, log=first, scores=SCORES)
    assert "**Stage 1**" in single and "**Stage 2**" not in single and "{" not in single.split("---", 2)[2]
