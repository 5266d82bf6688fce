"""Teacher-forced fidelity (pipelines.fidelity): zero against itself, small for an F16 GGUF, large for noise."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from invoker.runtimes import load_runtime
from pipelines.eval import load_suite
from pipelines.fidelity import Reference, build_reference, case_ids, load_or_build_reference, reference_key, score_variant

RECORDS = load_suite("synthetic", limit=3)


@pytest.fixture(scope="module")
def fp16(tiny_random_model):
    return load_runtime(tiny_random_model)


@pytest.fixture(scope="module")
def reference(fp16):
    return build_reference(runtime=fp16, records=RECORDS, top_k=8, progress=False)


def test_the_reference_marks_where_the_answer_starts(fp16, reference):
    ids, start = case_ids(fp16, RECORDS[0])
    assert reference.ids[0].tolist() == ids and reference.answer_start[0] == start
    answer = fp16.tokenizer.decode(ids[start:])
    assert answer.lstrip().startswith("```{") and answer.rstrip().endswith("```")
    assert reference.top_ids[0].shape == (len(ids) - 1, 8)


def test_a_model_against_itself_has_zero_divergence(fp16, reference):
    summary = score_variant(runtime=fp16, reference=reference, progress=False)
    for part in ("answer", "prompt"):
        assert summary[part]["mean_kl"] == pytest.approx(0.0, abs=1e-6)
        assert summary[part]["top1_agreement"] == 1.0
        assert summary[part]["delta_loglik_per_token"] == pytest.approx(0.0, abs=1e-6)
    assert summary["answer"]["positions"] + summary["prompt"]["positions"] == sum(len(i) - 1 for i in reference.ids)


@pytest.mark.e2e
def test_an_f16_gguf_is_close_and_a_noisy_copy_is_far(tiny_random_model, tiny_f16_gguf, reference, tmp_path):
    close = score_variant(runtime=load_runtime(tiny_f16_gguf), reference=reference, progress=False)
    noisy_dir = tmp_path / "noisy"
    shutil.copytree(tiny_random_model, noisy_dir)
    noisy = load_runtime(noisy_dir)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        for parameter in noisy.model.parameters():
            parameter.add_(torch.randn_like(parameter) * parameter.std() * 0.5)
    far = score_variant(runtime=noisy, reference=reference, progress=False)
    assert close["answer"]["mean_kl"] < 1e-3 and close["answer"]["top1_agreement"] > 0.95
    assert far["answer"]["mean_kl"] > 100 * close["answer"]["mean_kl"]
    assert far["answer"]["top1_agreement"] < close["answer"]["top1_agreement"]


def test_the_reference_is_cached_and_rebuilt_only_when_cases_or_weights_change(tiny_random_model, tmp_path):
    fp16_dir, cache = tmp_path / "fp16", tmp_path / "cache"
    shutil.copytree(tiny_random_model, fp16_dir)
    first, path = load_or_build_reference(fp16_dir=fp16_dir, records=RECORDS[:2], cache_dir=cache, top_k=4, progress=False)
    stamp = path.stat().st_mtime_ns
    again, same_path = load_or_build_reference(fp16_dir=fp16_dir, records=RECORDS[:2], cache_dir=cache, top_k=4, progress=False)
    assert same_path == path and path.stat().st_mtime_ns == stamp
    assert [a.tolist() for a in again.ids] == [a.tolist() for a in first.ids]
    other, other_path = load_or_build_reference(fp16_dir=fp16_dir, records=RECORDS, cache_dir=cache, top_k=4, progress=False)
    assert other_path != path and len(other.case_ids) == 3
    assert np.array_equal(Reference.load(other_path).top_logprobs[2], other.top_logprobs[2])
    weights = next(fp16_dir.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")  # other weights (content no longer matters: only the key)
    assert reference_key(fp16_dir=fp16_dir, records=RECORDS, top_k=4)[:20] not in other_path.name


@pytest.mark.e2e
def test_the_cli_measures_a_gguf_against_fp16(tiny_random_model, tiny_f16_gguf, tmp_path, capsys, monkeypatch):
    import json

    from pipelines.cli import main

    monkeypatch.setenv("INVOKER_CACHE", str(tmp_path / "cache"))
    fp16_dir = tmp_path / "fp16"
    shutil.copytree(tiny_random_model, fp16_dir)
    assert main(["fidelity", str(tiny_f16_gguf), "--reference", str(fp16_dir), "--limit", "2", "--top-k", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cases"] == 2 and result["top_k"] == 4 and result["answer"]["top1_agreement"] > 0.9
    assert len(list((tmp_path / "cache" / "fidelity").glob("reference-*.npz"))) == 1  # fp16's dir is left as it was
    assert main(["fidelity", str(fp16_dir), "--reference", str(tiny_f16_gguf)]) == 2
    assert "must be an fp16 checkpoint" in capsys.readouterr().err
