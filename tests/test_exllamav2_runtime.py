"""The exllamav2 runtime's own logic. Its GPU path is not exercised here (no CUDA in CI): these tests
check the capability check, what it refuses, and how our parameters map onto exllamav2's sampler."""

from __future__ import annotations

import json

import pytest
import torch

from invoker.runtimes import GenerationParams, load_runtime
from invoker.runtimes.exllamav2_runtime import (
    ExLlamaV2Runtime,
    check_capability,
    check_gptq_dir,
    finish_reason_of,
    sampler_settings,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when there is no CUDA")


def _gptq_dir(tmp_path, quant_method="gptq", bits=4):
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": quant_method, "bits": bits}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    return tmp_path


@no_cuda
def test_without_cuda_loading_says_so_and_points_to_the_cpu_runtime(tmp_path):
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*transformers runtime"):
        ExLlamaV2Runtime.load(_gptq_dir(tmp_path), device="cuda")


@no_cuda
def test_load_runtime_by_name_gives_the_same_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="runs on CUDA GPUs only, not on 'cpu'"):
        load_runtime(_gptq_dir(tmp_path), runtime="exllamav2")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        load_runtime(_gptq_dir(tmp_path), runtime="exllamav2", device="cuda")


def test_the_default_runtime_for_gptq_stays_transformers():
    from invoker.formats import ARTIFACTS
    from invoker.runtimes import formats_of

    assert ARTIFACTS["gptq"].runtime == "transformers"
    assert formats_of("exllamav2") == ("gptq",)


def test_only_4bit_gptq_dirs_are_accepted(tmp_path):
    check_gptq_dir(_gptq_dir(tmp_path))
    with pytest.raises(ValueError, match="serves 4-bit GPTQ"):
        check_gptq_dir(_gptq_dir(tmp_path, quant_method="awq"))
    with pytest.raises(ValueError, match="serves 4-bit GPTQ"):
        check_gptq_dir(_gptq_dir(tmp_path, bits=8))


def test_capability_check_refuses_a_cpu_device():
    with pytest.raises(RuntimeError, match="CUDA GPUs only"):
        check_capability(device="cpu")


def test_temperature_zero_is_greedy_without_a_division_by_zero():
    settings = sampler_settings(GenerationParams(temperature=0.0, top_p=0.5))
    assert settings["top_k"] == 1 and settings["temperature"] == 1.0
    assert settings["token_repetition_penalty"] == 1.0


def test_sampling_uses_only_temperature_and_top_p():
    settings = sampler_settings(GenerationParams(temperature=0.7, top_p=0.9))
    assert settings["temperature"] == 0.7 and settings["top_p"] == 0.9
    assert settings["top_k"] == 0  # exllamav2's default would be 50
    assert settings["token_repetition_penalty"] == 1.0  # exllamav2's default would be 1.025
    assert settings["min_p"] == 0.0


def test_finish_reasons_map_to_the_api():
    assert finish_reason_of({"eos_reason": "max_new_tokens"}) == "length"
    assert finish_reason_of({"eos_reason": "stop_token"}) == "stop"
    assert finish_reason_of({"eos_reason": "stop_string"}) == "stop"


def test_a_grammar_is_refused_before_any_generation(tmp_path):
    runtime = ExLlamaV2Runtime(model=None, cache=None, tokenizer=None, generator=None, model_path=tmp_path, context_length=2048)
    with pytest.raises(ValueError, match="does not support grammar"):
        runtime.stream("USER: hi\nASSISTANT:", GenerationParams(grammar='root ::= "x"'))
