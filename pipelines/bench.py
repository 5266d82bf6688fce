"""Tokens/second of any runtime, measured through ``Runtime.stream`` (the code that serves).

Method (docs/BENCH.md): for each run, one generation from a fresh prompt of exactly ``prompt_tokens``
tokens (BOS included; every prompt differs from its first word on, so no prompt cache helps) with
``max_tokens=gen_tokens`` and ``ignore_eos``, timed at its first chunk (t1) and at its end (t2). Then

- prompt tokens/s = prompt tokens / t1,
- decode tokens/s = (gen_tokens − 1) / (t2 − t1),

each from the median of the runs after ``warmup`` runs. For a GGUF the decode rate is also compared
with the memory-bandwidth limit: decoding reads every weight once per token (the token embedding
only one row), so ``copy bandwidth / bytes per token`` bounds the rate on a memory-bound machine. The
prompt rate is compared with the compute limit: reading a prompt multiplies every decoder-layer matrix
once per token (2 FLOP per weight), so ``matmul peak / FLOP per token`` bounds it, the peak measured
with torch's best kernel for the dtype the runtime computes in.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import threading
import time

from tqdm import tqdm

from invoker.runtimes import GenerationParams, Runtime

DEFAULT_PROMPT_TOKENS = 128
DEFAULT_GEN_TOKENS = 128
DEFAULT_RUNS = 5
DEFAULT_WARMUP = 1
BANDWIDTH_BUFFER_BYTES = 256 << 20


def bench(
    *,
    runtime: Runtime,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    gen_tokens: int = DEFAULT_GEN_TOKENS,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Measure prompt-processing and decode tokens/s of ``runtime``; returns figures, hardware and versions."""
    if prompt_tokens < 2 or gen_tokens < 2 or runs < 1 or warmup < 0:
        raise ValueError("bench needs prompt_tokens >= 2, gen_tokens >= 2, runs >= 1, warmup >= 0")
    if prompt_tokens + gen_tokens > runtime.context_length:
        raise ValueError(f"{prompt_tokens} + {gen_tokens} tokens exceed the model's context of {runtime.context_length}")
    used_threads = apply_threads(runtime, threads)
    prompts = bench_prompts(runtime=runtime, n_tokens=prompt_tokens, count=warmup + runs)
    samples = []
    for index in tqdm(range(warmup + runs), desc="bench", unit="run", disable=not progress, file=sys.stderr):
        first_seconds, total_seconds, last = time_stream(
            runtime, prompts[index], GenerationParams(max_tokens=gen_tokens, ignore_eos=True))
        if last.completion_tokens != gen_tokens:
            raise RuntimeError(f"{runtime.runtime} generated {last.completion_tokens} tokens, asked for {gen_tokens}")
        if index >= warmup:
            samples.append({
                "prompt_tokens": last.prompt_tokens,
                "prompt_seconds": round(first_seconds, 6),
                "decode_seconds": round(total_seconds - first_seconds, 6),
            })
    prompt_seconds = statistics.median(s["prompt_seconds"] for s in samples)
    decode_seconds = statistics.median(s["decode_seconds"] for s in samples)
    measured_prompt_tokens = statistics.median(s["prompt_tokens"] for s in samples)
    result = {
        "format": runtime.format,
        "runtime": runtime.runtime,
        "threads": used_threads,
        "prompt_tokens": measured_prompt_tokens,
        "gen_tokens": gen_tokens,
        "runs": runs,
        "warmup": warmup,
        "prompt_tok_s": round(measured_prompt_tokens / prompt_seconds, 2),
        "decode_tok_s": round((gen_tokens - 1) / decode_seconds, 2) if decode_seconds > 0 else None,
        "time_to_first_token_s": round(prompt_seconds, 4),
        "samples": samples,
        "hardware": hardware(),
        "versions": library_versions(runtime),
    }
    decode_bytes = getattr(getattr(runtime, "info", None), "decode_bytes", None)  # a runtime that knows it (llama.cpp)
    if decode_bytes:
        result["memory_bandwidth"] = bandwidth_ratio(
            decode_tok_s=result["decode_tok_s"], bytes_per_token=decode_bytes, threads=used_threads
        )
    weights = getattr(runtime, "matmul_weights", None)  # a runtime that knows it (llama.cpp, transformers)
    if weights:
        result["matmul_peak"] = compute_ratio(prompt_tok_s=result["prompt_tok_s"], weights=weights,
                                              dtype=runtime.compute_dtype, threads=used_threads)
    return result


def apply_threads(runtime: Runtime, threads: int | None) -> int:
    """Set the runtime's CPU threads (llama.cpp: its context; torch: its intra-op pool); return what is used."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if hasattr(runtime, "set_threads"):
        if threads is not None:
            runtime.set_threads(threads)
        return runtime.threads
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def bench_prompts(*, runtime: Runtime, n_tokens: int, count: int) -> list[str]:
    """``count`` different prompts of ``n_tokens`` tokens each (as close as the tokenizer allows): the prompt's
    number, then the words of Invoker-rendered conversations shuffled per prompt (seeded), so prompts
    share at most their first few tokens."""
    from invoker.data.synth import generate_conversations
    from invoker.prompt import render_prompt

    records = generate_conversations(split="eval", n=8, seed=0)
    words = " ".join(render_prompt(r["messages"], functions=r["functions"]) for r in records).split()
    while runtime.count_tokens(" ".join(words)) < n_tokens:
        words = words + words
    prompts = []
    for index in range(count):
        shuffled = list(words)
        random.Random(index).shuffle(shuffled)
        prompts.append(prompt_of_length(runtime=runtime, words=[str(index), *shuffled], n_tokens=n_tokens))
    return prompts


def prompt_of_length(*, runtime: Runtime, words: list[str], n_tokens: int) -> str:
    """The shortest prefix of ``words`` with ``n_tokens`` tokens, its last word cut to hit the count exactly if it can."""
    low, high = 1, len(words)
    while low < high:  # smallest k with count(words[:k]) >= n_tokens
        middle = (low + high) // 2
        if runtime.count_tokens(" ".join(words[:middle])) >= n_tokens:
            high = middle
        else:
            low = middle + 1
    head = " ".join(words[: low - 1])
    last = words[low - 1]
    for cut in range(len(last), 0, -1):
        text = f"{head} {last[:cut]}" if head else last[:cut]
        if runtime.count_tokens(text) <= n_tokens:
            return text
    return head or last


def time_stream(runtime: Runtime, prompt: str, params: GenerationParams):
    """One stream run to its end: seconds to its first chunk (the prompt processed and the first token
    sampled), seconds to its end, and its last chunk (with the token counts). The decode rate is the
    tokens after the first over the time between the two, all from the same run."""
    started = time.perf_counter()
    first = None
    last = None
    for last in runtime.stream(prompt, params):
        if first is None:
            first = time.perf_counter() - started
    return first, time.perf_counter() - started, last


def measure_copy_bandwidth(*, threads: int, buffer_bytes: int = BANDWIDTH_BUFFER_BYTES, repeats: int = 5) -> float:
    """Memory copy bandwidth in bytes/s (STREAM "copy" convention: bytes read + bytes written), best of
    ``repeats``, with ``threads`` threads each copying its own part of a buffer larger than the caches."""
    import numpy as np

    source = np.ones(buffer_bytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    parts = np.array_split(np.arange(source.size), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts if p.size]
    best = float("inf")
    for _ in range(repeats):
        barrier = threading.Barrier(len(bounds) + 1)

        def copy(start: int, stop: int) -> None:
            barrier.wait()
            np.copyto(target[start:stop], source[start:stop])  # numpy releases the GIL for this copy

        workers = [threading.Thread(target=copy, args=bound) for bound in bounds]
        for worker in workers:
            worker.start()
        barrier.wait()
        started = time.perf_counter()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best


def bandwidth_ratio(*, decode_tok_s: float | None, bytes_per_token: int, threads: int) -> dict:
    """How close decoding is to the memory-bandwidth limit (copy bandwidth / bytes read per token)."""
    bandwidth = measure_copy_bandwidth(threads=threads)
    limit = bandwidth / bytes_per_token
    return {
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "bytes_per_token": bytes_per_token,
        "limit_tok_s": round(limit, 2),
        "ratio": round(decode_tok_s / limit, 3) if decode_tok_s else None,
    }


MATMUL_SHAPE = (512, 1024, 1024)  # m, k, n: large enough for torch's kernels to reach their peak, small enough for the caches


def measure_matmul_peak(*, dtype: str, threads: int, repeats: int = 5) -> float:
    """FLOP/s (2·m·k·n per product) of torch's matmul in ``dtype`` (``float32``, ``bfloat16``, ``float16``, or
    ``int8`` through ``torch._int_mm``, int32 accumulation) on ``threads`` threads, best of ``repeats``."""
    import torch

    m, k, n = MATMUL_SHAPE
    generator = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=generator)
        b = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=generator)
        product = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        a = torch.randn(m, k, generator=generator).to(getattr(torch, dtype))
        b = torch.randn(k, n, generator=generator).to(getattr(torch, dtype))
        product = lambda: a @ b  # noqa: E731
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        product()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return 2 * m * k * n / best


def compute_ratio(*, prompt_tok_s: float, weights: int, dtype: str, threads: int) -> dict:
    """How close reading the prompt is to the compute limit (matmul peak in ``dtype`` / FLOP per prompt token)."""
    peak = measure_matmul_peak(dtype=dtype, threads=threads)
    flop_per_token = 2 * weights
    return {
        "dtype": dtype,
        "peak_gflop_s": round(peak / 1e9, 1),
        "flop_per_token": flop_per_token,
        "limit_tok_s": round(peak / flop_per_token, 1),
        "ratio": round(prompt_tok_s * flop_per_token / peak, 3),
    }


def hardware() -> dict:
    return {
        "cpu": cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def library_versions(runtime: Runtime) -> dict:
    """Python's version and those of the packages the runtime computes with (its own ``packages``)."""
    from invoker.manifest import tool_versions

    return {"python": platform.python_version(), **tool_versions(getattr(runtime, "packages", ()))}
