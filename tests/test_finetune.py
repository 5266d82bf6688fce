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
