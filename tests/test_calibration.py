"""The shared calibration set: Invoker-rendered conversations, BOS-first samples, packed, seeded, hashed."""

from __future__ import annotations

import json

import pytest

from convert.calibration import CalibrationSpec, build_calibration, load_tokenizer, sha256_ids
from invoker.data.loaders import write_jsonl
from invoker.data.synth import generate_conversations
from invoker.prompt import render_prompt


@pytest.fixture(scope="module")
def tokenizer(tiny_random_model):
    return load_tokenizer(tiny_random_model)


def encode_document(tokenizer, text: str) -> list[int]:
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def test_samples_are_whole_bos_first_documents_packed_up_to_max_length(any_random_model):
    tokenizer = load_tokenizer(any_random_model)
    spec = CalibrationSpec(n_samples=6, max_length=2048, seed=0)
    calibration = build_calibration(tokenizer_dir=any_random_model, spec=spec)

    assert len(calibration.input_ids) == 6
    assert all(ids[0] == tokenizer.bos_token_id and len(ids) <= 2048 for ids in calibration.input_ids)
    packed = [token for ids in calibration.input_ids for token in ids]
    documents = [token for text in calibration.texts for token in encode_document(tokenizer, text)]
    assert packed == documents  # whole documents, in order, nothing dropped or cut at this length
    assert any(ids.count(tokenizer.bos_token_id) > 1 for ids in calibration.input_ids)  # short ones share a sample


def test_documents_are_the_calibration_split_rendered_in_invoker_format(tiny_random_model):
    calibration = build_calibration(tokenizer_dir=tiny_random_model, spec=CalibrationSpec(n_samples=2, max_length=1024))
    records = generate_conversations(split="calibration", n=len(calibration.texts), seed=0)
    expected = [render_prompt(r["messages"], functions=r["functions"], add_generation_prompt=False) for r in records]
    assert calibration.texts == expected
    assert calibration.texts[0].startswith("Available Functions:")


def test_long_documents_are_truncated_to_max_length(tiny_random_model, tokenizer):
    calibration = build_calibration(tokenizer_dir=tiny_random_model, spec=CalibrationSpec(n_samples=4, max_length=64))
    assert [len(ids) for ids in calibration.input_ids] == [64] * 4
    assert calibration.input_ids[0] == encode_document(tokenizer, calibration.texts[0])[:64]


def test_same_spec_same_hash_and_seed_changes_it(tiny_random_model):
    spec = CalibrationSpec(n_samples=3, max_length=512, seed=1)
    first = build_calibration(tokenizer_dir=tiny_random_model, spec=spec)
    again = build_calibration(tokenizer_dir=tiny_random_model, spec=spec)
    other = build_calibration(tokenizer_dir=tiny_random_model, spec=CalibrationSpec(n_samples=3, max_length=512, seed=2))
    assert first.sha256 == again.sha256 == sha256_ids(first.input_ids)
    assert first.sha256 != other.sha256
    manifest = first.to_manifest()
    assert manifest["spec"] == spec.to_dict() and manifest["sha256"] == first.sha256
    assert manifest["n_tokens"] == sum(len(ids) for ids in first.input_ids)
    json.dumps(manifest)  # goes into manifest.json as is


def test_a_jsonl_source_is_used_whole_and_shuffled_by_seed(tmp_path, tiny_random_model):
    records = generate_conversations(split="calibration", n=5, seed=3)
    path = write_jsonl(records, tmp_path / "calibration.jsonl")
    spec = CalibrationSpec(source=str(path), n_samples=100, max_length=4096, seed=0)
    calibration = build_calibration(tokenizer_dir=tiny_random_model, spec=spec)
    rendered = {render_prompt(r["messages"], functions=r["functions"], add_generation_prompt=False) for r in records}
    assert set(calibration.texts) == rendered  # all five, fewer samples than asked when the data runs out
    assert len(calibration.input_ids) < 100
    reseeded = build_calibration(tokenizer_dir=tiny_random_model,
                                 spec=CalibrationSpec(source=str(path), n_samples=100, max_length=4096, seed=1))
    assert reseeded.texts != calibration.texts and set(reseeded.texts) == rendered


def test_general_text_is_mixed_in_at_the_given_fraction(tmp_path, tiny_random_model):
    passages = [f"General passage number {i} about weather, cafés and trains." for i in range(200)]
    text_file = tmp_path / "general.txt"
    text_file.write_text("\n\n".join(passages), encoding="utf-8")
    spec = CalibrationSpec(n_samples=8, max_length=1024, general_text=str(text_file), general_text_fraction=0.5)
    calibration = build_calibration(tokenizer_dir=tiny_random_model, spec=spec)
    general = [t for t in calibration.texts if t.startswith("General passage")]
    assert general == passages[: len(general)]  # in file order
    assert 0.3 < len(general) / len(calibration.texts) < 0.8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_samples=0), "n_samples"),
        (dict(max_length=8), "max_length"),
        (dict(general_text_fraction=0.3), "general_text"),
        (dict(general_text="x.txt"), "general_text"),
        (dict(general_text="x.txt", general_text_fraction=1.5), "general_text_fraction"),
        (dict(source=""), "source"),
    ],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CalibrationSpec(**kwargs)


def test_a_dir_without_tokenizer_is_named(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}.*no tokenizer"):
        build_calibration(tokenizer_dir=tmp_path, spec=CalibrationSpec(n_samples=1, max_length=64))
