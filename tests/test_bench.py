"""``invoker-pack bench``: tokens/sec through any runtime, fixed prompt lengths, hardware and versions."""

from __future__ import annotations

import json

import pytest

from invoker.runtimes import load_runtime
from pipelines import bench as bench_module
from pipelines.cli import main


@pytest.fixture(scope="module")
def hf_runtime(tiny_random_model):
    return load_runtime(tiny_random_model)


def test_bench_prompts_have_the_asked_length_and_all_differ_from_the_start(hf_runtime):
    prompts = bench_module.bench_prompts(runtime=hf_runtime, n_tokens=64, count=6)
    assert [hf_runtime.count_tokens(p) for p in prompts] == [64] * 6
    ids = [hf_runtime.tokenizer(p)["input_ids"] for p in prompts]
    for i, a in enumerate(ids):  # no two share more than their first few tokens: no prompt cache can help
        for b in ids[i + 1 :]:
            assert next(k for k, (x, y) in enumerate(zip(a, b)) if x != y) <= 4


def test_bench_of_the_transformers_runtime(hf_runtime):
    result = bench_module.bench(runtime=hf_runtime, prompt_tokens=16, gen_tokens=24, runs=2, warmup=1, threads=1, progress=False)
    assert (result["format"], result["runtime"], result["threads"]) == ("fp16", "transformers", 1)
    assert (result["prompt_tokens"], result["gen_tokens"], result["runs"]) == (16, 24, 2)
    assert len(result["samples"]) == 2 and all(s["decode_seconds"] > 0 for s in result["samples"])
    assert result["prompt_tok_s"] > 0 and result["decode_tok_s"] > 0
    assert result["hardware"]["cpu"] and result["hardware"]["cpus_available"] >= 1
    assert result["versions"]["torch"] and "memory_bandwidth" not in result
    compute = result["matmul_peak"]  # reading the prompt against the compute limit, in the dtype it computes in
    layers = hf_runtime.model.config.num_hidden_layers
    linear = sum(m.weight.numel() for n, m in hf_runtime.model.named_modules() if ".layers." in n and hasattr(m, "in_features"))
    assert compute["dtype"] == "float32" and compute["flop_per_token"] == 2 * linear and linear > 0 and layers > 0
    assert compute["limit_tok_s"] == pytest.approx(compute["peak_gflop_s"] * 1e9 / compute["flop_per_token"], rel=0.01)
    assert compute["ratio"] == pytest.approx(result["prompt_tok_s"] / compute["limit_tok_s"], rel=0.01)
    json.dumps(result, allow_nan=False)


@pytest.mark.e2e
def test_bench_of_a_gguf_includes_the_memory_bandwidth_ratio(tiny_f16_gguf):
    runtime = load_runtime(tiny_f16_gguf)
    result = bench_module.bench(runtime=runtime, prompt_tokens=16, gen_tokens=48, runs=2, warmup=1, threads=1, progress=False)
    assert (result["format"], result["runtime"], result["threads"], result["prompt_tokens"]) == ("gguf", "llama.cpp", 1, 16)
    assert result["decode_tok_s"] > 0 and result["prompt_tok_s"] > 0
    bandwidth = result["memory_bandwidth"]
    assert bandwidth["bytes_per_token"] == runtime.info.decode_bytes > 0
    assert bandwidth["copy_bandwidth_gb_s"] > 0
    assert bandwidth["limit_tok_s"] == pytest.approx(bandwidth["copy_bandwidth_gb_s"] * 1e9 / bandwidth["bytes_per_token"], rel=0.01)
    assert bandwidth["ratio"] == pytest.approx(result["decode_tok_s"] / bandwidth["limit_tok_s"], rel=0.01)
    assert result["versions"]["llama-cpp-python"] and result["versions"]["gguf"]
    compute = result["matmul_peak"]  # an F16 GGUF: llama.cpp multiplies its weights in float32
    assert compute["dtype"] == "float32" and compute["flop_per_token"] == 2 * runtime.info.matmul_weights > 0
    assert compute["ratio"] == pytest.approx(result["prompt_tok_s"] / compute["limit_tok_s"], rel=0.01)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_matmul_peak_is_measured_in_each_dtype(dtype):
    assert bench_module.measure_matmul_peak(dtype=dtype, threads=1, repeats=1) > 1e8


def test_the_compute_dtype_of_a_gguf_follows_its_layer_matrices():
    from invoker.runtimes.llamacpp_runtime import gguf_compute_dtype

    def dtype(**types):
        return gguf_compute_dtype({"token_embd.weight": "Q6_K", "blk.0.attn_norm.weight": "F32", **types})
    assert dtype(**{"blk.0.attn_q.weight": "F16", "blk.0.ffn_up.weight": "F16"}) == "float32"
    assert dtype(**{"blk.0.attn_q.weight": "Q4_K", "blk.0.ffn_down.weight": "Q6_K"}) == "int8"
    assert dtype(**{"blk.0.attn_q.weight": "BF16"}) == "bfloat16"


def test_copy_bandwidth_is_measured():
    assert bench_module.measure_copy_bandwidth(threads=2, buffer_bytes=16 << 20, repeats=2) > 1e8


def test_bad_settings_are_refused(hf_runtime):
    with pytest.raises(ValueError, match="gen_tokens >= 2"):
        bench_module.bench(runtime=hf_runtime, gen_tokens=1, progress=False)
    with pytest.raises(ValueError, match="exceed the model's context of 2048"):
        bench_module.bench(runtime=hf_runtime, prompt_tokens=2000, gen_tokens=100, progress=False)


@pytest.mark.e2e
def test_cli_bench_prints_json(tiny_f16_gguf, capsys):
    code = main(["bench", str(tiny_f16_gguf), "--json", "--prompt-tokens", "16", "--gen-tokens", "8", "--runs", "1",
                 "--warmup", "1", "--threads", "1"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["model"], result["device"], result["format"]) == (str(tiny_f16_gguf), "cpu", "gguf")
    assert result["decode_tok_s"] > 0


def test_cli_bench_on_cuda_without_cuda_fails_clearly(tiny_random_model, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", str(tiny_random_model), "--device", "cuda"]) != 0
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.e2e
def test_cli_bench_of_a_gguf_on_cuda_without_gpu_build_fails_clearly(tiny_f16_gguf, capsys):
    assert main(["bench", str(tiny_f16_gguf), "--device", "cuda", "--json"]) != 0
    captured = capsys.readouterr()
    assert "no GPU offload" in captured.err and captured.out == ""
