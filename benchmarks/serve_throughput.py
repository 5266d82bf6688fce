"""Streaming speed through the server vs the same runtime called in-process, as ratios.

    .venv/bin/python benchmarks/serve_throughput.py out/tiny-invoker/gguf-Q4_K_M [--max-tokens 128] [--runs 5] [--streams 4]

Both paths generate the same greedy tokens from the same prompt under the same grammar (in-process, the
server's own ``plan_completion`` of the same request, with the server's default settings), exactly
``--max-tokens`` of them (the runtime is wrapped to ignore EOS, in both paths alike). Three figures per path:

- decode speed, ``(completion_tokens - 1) / (time of the last chunk - time of the first chunk)``: prompt
  processing is left out. In-process, the chunks are the runtime's; through the server, the first is the
  arrival of the response headers (the server sends them once the runtime's first chunk exists) and the
  last is ``data: [DONE]``;
- the first chunk's latency: from the call (in-process) or the request (server) to that first chunk;
- with ``--streams N`` (N > 1): aggregate speed of N streams started at once, all their completion tokens
  over the time from the start to the last one's end, and the same for one stream alone, so N/1 says what
  running streams together gives. Both paths then run N streams at once (``run_parallel(N)`` in-process,
  ``--max-concurrency N`` for the server), one-stream runs included.

The server runs in a child process (``uvicorn`` on a free 127.0.0.1 port). Runs alternate between the two
paths (in-process, server, in-process, …), so a change in the machine's load while the benchmark runs
affects both alike; each ratio is of the medians, in-process over server for latency (so ≥ 0.95 is the goal
for all of them).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

MESSAGES = [{"role": "user", "content": "Tell me everything you know about the weather in Singapore, Paris and Tokyo."}]


class EndlessRuntime:
    """The runtime, generating past EOS so every run decodes exactly ``max_tokens`` tokens."""

    def __init__(self, runtime) -> None:
        self._runtime = runtime
        self.format = runtime.format
        self.runtime = runtime.runtime
        self.model_path = runtime.model_path
        self.context_length = runtime.context_length
        self.max_concurrent_streams = getattr(runtime, "max_concurrent_streams", None)

    def count_tokens(self, text: str) -> int:
        return self._runtime.count_tokens(text)

    def run_parallel(self, streams: int) -> int:
        self.max_concurrent_streams = self._runtime.run_parallel(streams)
        return self.max_concurrent_streams

    def stream(self, prompt, params):
        return self._runtime.stream(prompt, dataclasses.replace(params, ignore_eos=True))


def decode_rate(*, completion_tokens: int, first: float, last: float) -> float:
    return (completion_tokens - 1) / (last - first)


@dataclasses.dataclass
class Run:
    """One generation: when it was asked for, its first and last chunk, and its completion tokens."""

    started: float
    first: float
    last: float
    tokens: int

    @property
    def rate(self) -> float:
        return decode_rate(completion_tokens=self.tokens, first=self.first, last=self.last)


def in_process_run(runtime, *, prompt: str, params) -> Run:
    """One in-process generation."""
    started = time.perf_counter()
    first = last = None
    for chunk in runtime.stream(prompt, params):
        last = time.perf_counter()
        first = first or last
    return Run(started=started, first=first, last=last, tokens=chunk.completion_tokens)


def request_body(max_tokens: int) -> dict:
    return {"model": "bench", "messages": MESSAGES, "temperature": 0, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}


def server_run(client, *, url: str, max_tokens: int) -> Run:
    """One streamed generation, through the server."""
    body = request_body(max_tokens)
    usage = None
    started = time.perf_counter()
    with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        first = time.perf_counter()
        for line in response.iter_lines():
            if line == "data: [DONE]":
                last = time.perf_counter()
            elif line.startswith("data: ") and '"usage"' in line:
                usage = json.loads(line[len("data: "):])["usage"]
    return Run(started=started, first=first, last=last, tokens=usage["completion_tokens"])


def at_once(one, streams: int) -> list[Run]:
    """``streams`` runs of ``one()``, started at once."""
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        return list(pool.map(lambda _: one(), range(streams)))


def aggregate_rate(runs: list[Run]) -> float:
    """All the runs' tokens over the time from the first start to the last end."""
    return sum(run.tokens for run in runs) / (max(run.last for run in runs) - min(run.started for run in runs))


def alternating_runs(path: Path, *, url: str, max_tokens: int, runs: int, warmup: int, streams: int) -> tuple[dict, dict]:
    """The figures of each path, one run of each in turn (the first ``warmup`` pairs not kept): per run, the
    decode rate and first-chunk latency of one stream and, with ``streams`` > 1, the aggregate rates of one
    and of ``streams`` streams started at once."""
    import httpx

    from invoker.runtimes import load_runtime
    from serve_minimal.completion import plan_completion
    from serve_minimal.schemas import ChatCompletionRequest
    from serve_minimal.settings import ServerSettings

    runtime = EndlessRuntime(load_runtime(path))
    if streams > 1:
        runtime.run_parallel(streams)
    plan = plan_completion(ChatCompletionRequest(**request_body(max_tokens)), runtime=runtime,
                           constrained=ServerSettings(model_name="bench").constrained)
    prompt, params = plan.prompt, plan.params
    figures = {"in_process": {}, "server": {}}
    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=streams + 1)) as client:
        paths = {"in_process": lambda: in_process_run(runtime, prompt=prompt, params=params),
                 "server": lambda: server_run(client, url=url, max_tokens=max_tokens)}
        for run in range(warmup + runs):
            for name, one in paths.items():
                single = one()
                measured = {"tok_s": single.rate, "first_chunk_ms": 1000 * (single.first - single.started)}
                if streams > 1:  # the one-stream aggregate is this same run's, on the same measure as N streams'
                    measured |= {"one_stream_tok_s": aggregate_rate([single]), "streams_tok_s": aggregate_rate(at_once(one, streams))}
                if run >= warmup:
                    for key, value in measured.items():
                        figures[name].setdefault(key, []).append(value)
    return figures["in_process"], figures["server"]


def start_server(path: Path, *, port: int, streams: int) -> subprocess.Popen:
    args = [sys.executable, __file__, str(path), "--serve-child", str(port), "--streams", str(streams)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_until_up(url: str, *, process: subprocess.Popen, timeout: float = 600.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{process.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within {timeout:g} s")


def serve_child(path: Path, *, port: int, streams: int) -> None:
    """The child process: the same runtime wrapper, behind the real app, on 127.0.0.1:port."""
    import uvicorn

    from invoker.runtimes import load_runtime
    from serve_minimal.app import create_app
    from serve_minimal.settings import ServerSettings

    app = create_app(runtime=EndlessRuntime(load_runtime(path)), settings=ServerSettings(model_name="bench", max_concurrency=streams))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="model dir or variant dir (a GGUF for the acceptance figure)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens decoded per run (default: 128)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per path (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default: 1)")
    parser.add_argument("--streams", type=int, default=1, help="also measure this many streams at once (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        serve_child(args.path, port=args.serve_child, streams=args.streams)
        return 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.path, port=port, streams=args.streams)
    try:
        wait_until_up(url, process=server)
        local, served = alternating_runs(args.path, url=url, max_tokens=args.max_tokens, runs=args.runs,
                                         warmup=args.warmup, streams=args.streams)
    finally:
        server.terminate()
        server.wait(timeout=60)
    medians = {name: {key: statistics.median(values) for key, values in figures.items()}
               for name, figures in (("in_process", local), ("server", served))}
    ratios = {key: (medians["in_process"][key] / medians["server"][key] if key == "first_chunk_ms"
                    else medians["server"][key] / medians["in_process"][key]) for key in medians["server"]}
    result = {"model": str(args.path), "max_tokens": args.max_tokens, "runs": args.runs, "streams": args.streams,
              "cpus": len(os.sched_getaffinity(0)),
              **{f"{name}_{key}": round(value, 2) for name, figures in medians.items() for key, value in figures.items()},
              **{f"ratio_{key}": round(value, 3) for key, value in ratios.items()},
              "in_process_runs": {key: [round(v, 2) for v in values] for key, values in local.items()},
              "server_runs": {key: [round(v, 2) for v in values] for key, values in served.items()}}
    if args.streams > 1:
        for name in medians:
            result[f"{name}_streams_over_one"] = round(medians[name]["streams_tok_s"] / medians[name]["one_stream_tok_s"], 3)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model  {result['model']}  ({args.max_tokens} tokens/run, {args.runs} runs, {result['cpus']} CPUs)")
    print(f"{'':28}{'in-process':>12}{'server':>12}{'ratio':>8}  (goal >= 0.95)")
    labels = {"tok_s": "decode, 1 stream (tok/s)", "first_chunk_ms": "first chunk (ms)",
              "one_stream_tok_s": "aggregate, 1 stream (tok/s)", "streams_tok_s": f"aggregate, {args.streams} streams (tok/s)"}
    for key, label in labels.items():
        if key in ratios:
            print(f"{label:28}{medians['in_process'][key]:12.1f}{medians['server'][key]:12.1f}{ratios[key]:8.3f}")
    if args.streams > 1:
        print(f"{args.streams} streams / 1 stream: in-process {result['in_process_streams_over_one']:.2f}, "
              f"server {result['server_streams_over_one']:.2f}  (goal >= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
