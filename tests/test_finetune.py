"""The bundled model's fine-tune data (models/tiny-invoker/finetune.py): what is learned, in which order."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from invoker.prompt import render_assistant_turn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finetune():
    spec = importlib.util.spec_from_file_location("finetune", ROOT / "models" / "tiny-invoker" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["finetune"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer(tiny_bpe_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bpe_model))


def test_labels_cover_every_assistant_turn_and_the_final_eos_only(finetune, tokenizer):
    records = finetune.training_records(n=60, seed=0, function_rate=0.4, parameter_rate=0.3)
    followup = next(r for r in records if r["kind"] == "followup")
    ids, labels = finetune.encode_record(followup, tokenizer, max_tokens=4096)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == labels[-1] == tokenizer.eos_token_id
    learned = tokenizer.decode([token for token, label in zip(ids, labels) if label != finetune.IGNORE][:-1])
    turns = [m for m in followup["messages"] if m["role"] == "assistant"]
    expected = "".join(" " + render_assistant_turn(content=m.get("content"), function_call=m.get("function_call"))
                       for m in turns)
    assert learned == expected  # the call and the summary, nothing of the prompt or the function result
    assert all(label in (token, finetune.IGNORE) for token, label in zip(ids, labels))


def test_varied_schemas_leave_the_renames_and_the_conversations_as_runs_without_them(finetune):
    plain = finetune.training_records(n=60, seed=0, function_rate=0.4, parameter_rate=0.3)
    varied = finetune.training_records(n=60, seed=0, function_rate=0.4, parameter_rate=0.3, schema_rate=1.0)
    assert [r["messages"] for r in varied] == [r["messages"] for r in plain]  # a resumed run keeps its data
    assert [[f["name"] for f in r["functions"]] for r in varied] == [[f["name"] for f in r["functions"]] for r in plain]
    assert any(a["parameters"] != b["parameters"] for r, q in zip(plain, varied) for a, b in zip(r["functions"], q["functions"]))


def test_too_long_conversations_are_left_out(finetune, tokenizer):
    record = finetune.training_records(n=1, seed=0, function_rate=0.0, parameter_rate=0.0)[0]
    assert finetune.encode_record(record, tokenizer, max_tokens=20) is None


def test_the_batch_plan_is_a_prefix_of_any_longer_plan(finetune):
    lengths = [(i * 37) % 500 + 50 for i in range(1000)]
    short = finetune.batch_plan(lengths=lengths, batch_size=8, steps=300, seed=0)
    long = finetune.batch_plan(lengths=lengths, batch_size=8, steps=700, seed=0)
    assert long[:300] == short  # resuming with another --steps trains on the same batches
    assert sorted(i for batch in long[:125] for i in batch) == list(range(1000))  # one epoch covers every example once


def test_live_training_data_is_the_train_side_of_the_live_categories_only(finetune):
    """BFCL's non-live categories are never trained on, nor any function set of the live dev side; a call's
    target passes BFCL's own rules; an irrelevance case is answered with a decline."""
    from invoker.data.vocabulary import PHRASES
    from invoker.parse import parse_completion
    from invoker.prompt import render_assistant_turn
    from pipelines.bfcl import live_split, load_bfcl_suite
    from pipelines.metrics import score_case

    records = finetune.live_records(split="train", seed=0)
    dev = finetune.live_records(split="dev", seed=0)
    ids = [record["id"] for record in records]
    assert all(record_id.startswith(("live_simple_", "live_multiple_", "live_irrelevance_")) for record_id in ids)
    assert {live_split(record_id) for record_id in ids} == {"train"} and not set(ids) & {r["id"] for r in dev}
    assert 0.65 < len(records) / (len(records) + len(dev)) < 0.9
    originals = {r["id"]: r for category in ("live_simple", "live_multiple") for r in load_bfcl_suite(category)}
    for record in records:
        target = record["messages"][-1]
        if record["kind"] == "no_call":
            assert target["content"] in PHRASES["refusals_generic"]
            continue
        parsed = parse_completion(render_assistant_turn(content=None, function_call=target["function_call"]),
                                  functions=record["functions"])
        assert score_case(originals[record["id"]], parsed).call_correct, record["id"]
    assert finetune.live_records(split="train", seed=0) == records  # seeded
