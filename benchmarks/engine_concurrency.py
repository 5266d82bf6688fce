"""What batching N streams gives the llama.cpp engine itself, with no server in the way.

    .venv/bin/python benchmarks/engine_concurrency.py <GGUF variant dir> [--streams 4] [--runs 3] [--max-tokens 128]

In-process, on one GGUF: tokens per second of one stream through the single-stream path
(``LlamaCppRuntime.stream``), of one stream through the batched engine (``run_parallel(N)``), and of N
threads generating at once on that engine (all completion tokens / wall time). Every run generates
exactly ``--max-tokens`` greedy tokens (EOS ignored) from the same prompt, prompt reading included (a
repeated prompt is read from the cache); the three measures alternate, medians of ``--runs``. Compare
with ``benchmarks/serve_vs_llama_cpp_server.py``, which measures the same through the server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invoker.prompt import render_prompt  # noqa: E402
from invoker.runtimes import GenerationParams, generate, load_runtime  # noqa: E402

MESSAGES = [{"role": "user", "content": "Tell me everything you know about the weather in Singapore, Paris and Tokyo."}]


def rate(runtime, prompt: str, params: GenerationParams, *, streams: int) -> float:
    """Completion tokens per second of ``streams`` threads generating at once."""
    tokens: list[int] = []

    def one() -> None:
        tokens.append(generate(runtime, prompt, params).completion_tokens)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(tokens) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    prompt = render_prompt(MESSAGES, functions=None)
    params = GenerationParams(max_tokens=args.max_tokens, ignore_eos=True)
    single, batched = load_runtime(args.path), load_runtime(args.path)
    batched.run_parallel(args.streams)
    cases = {"single-stream path, 1 stream": (single, 1), "batched engine, 1 stream": (batched, 1),
             f"batched engine, {args.streams} streams": (batched, args.streams)}
    figures: dict[str, list[float]] = {name: [] for name in cases}
    for run in range(args.runs + 1):  # the first round warms up (and fills the caches) and is not counted
        for name, (runtime, streams) in cases.items():
            measured = rate(runtime, prompt, params, streams=streams)
            if run:
                figures[name].append(measured)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        print(f"{name:34s}{value:8.1f} tok/s")
    one, many = medians["batched engine, 1 stream"], medians[f"batched engine, {args.streams} streams"]
    print(f"{args.streams} streams / 1 stream on the batched engine: {many / one:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
