"""Streaming decode speed through the server vs the same runtime called in-process, as a ratio.

    .venv/bin/python benchmarks/serve_throughput.py out/tiny-invoker/gguf-Q4_K_M [--max-tokens 128] [--runs 5]

Both paths generate the same greedy tokens from the same rendered prompt, exactly ``--max-tokens`` of
them (the runtime is wrapped to ignore EOS, in both paths alike). Decode speed is
``(completion_tokens - 1) / (time of the last chunk - time of the first chunk)``: prompt processing is
left out. In-process, the chunks are the runtime's; through the server, the first is the arrival of
the response headers (the server sends them once the runtime's first chunk exists) and the last is
``data: [DONE]``. The server runs in a child process (``uvicorn`` on a free 127.0.0.1 port). Runs
alternate between the two paths (in-process, server, in-process, …), so a change in the machine's load
while the benchmark runs affects both alike; the figure is the ratio of the medians.
"""

from __future__ import annotations

import argparse
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

    def stream(self, prompt, params):
        return self._runtime.stream(prompt, dataclasses.replace(params, ignore_eos=True))


def decode_rate(*, completion_tokens: int, first: float, last: float) -> float:
    return (completion_tokens - 1) / (last - first)


def in_process_rate(runtime, *, prompt: str, params) -> float:
    """One in-process generation's decode rate."""
    first = last = None
    for chunk in runtime.stream(prompt, params):
        last = time.perf_counter()
        first = first or last
    return decode_rate(completion_tokens=chunk.completion_tokens, first=first, last=last)


def server_rate(client, *, url: str, max_tokens: int) -> float:
    """One streamed generation's decode rate, through the server."""
    body = {"model": "bench", "messages": MESSAGES, "temperature": 0, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    usage = None
    with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        first = time.perf_counter()
        for line in response.iter_lines():
            if line == "data: [DONE]":
                last = time.perf_counter()
            elif line.startswith("data: ") and '"usage"' in line:
                usage = json.loads(line[len("data: "):])["usage"]
    return decode_rate(completion_tokens=usage["completion_tokens"], first=first, last=last)


def alternating_rates(path: Path, *, url: str, max_tokens: int, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """(in-process rates, server rates), one run of each in turn; the first ``warmup`` pairs are not kept."""
    import httpx

    from invoker.prompt import render_prompt
    from invoker.runtimes import GenerationParams, load_runtime

    runtime = EndlessRuntime(load_runtime(path))
    prompt = render_prompt(MESSAGES)
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
    local, served = [], []
    with httpx.Client(timeout=600) as client:
        for run in range(warmup + runs):
            local_rate = in_process_rate(runtime, prompt=prompt, params=params)
            served_rate = server_rate(client, url=url, max_tokens=max_tokens)
            if run >= warmup:
                local.append(local_rate)
                served.append(served_rate)
    return local, served


def start_server(path: Path, *, port: int) -> subprocess.Popen:
    args = [sys.executable, __file__, str(path), "--serve-child", str(port)]
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


def serve_child(path: Path, *, port: int) -> None:
    """The child process: the same runtime wrapper, behind the real app, on 127.0.0.1:port."""
    import uvicorn

    from invoker.runtimes import load_runtime
    from serve_minimal.app import create_app
    from serve_minimal.settings import ServerSettings

    app = create_app(runtime=EndlessRuntime(load_runtime(path)), settings=ServerSettings(model_name="bench"))
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child:
        serve_child(args.path, port=args.serve_child)
        return 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.path, port=port)
    try:
        wait_until_up(url, process=server)
        local, served = alternating_rates(args.path, url=url, max_tokens=args.max_tokens, runs=args.runs,
                                          warmup=args.warmup)
    finally:
        server.terminate()
        server.wait(timeout=60)
    result = {
        "model": str(args.path),
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "cpus": len(os.sched_getaffinity(0)),
        "in_process_tok_s": round(statistics.median(local), 2),
        "server_tok_s": round(statistics.median(served), 2),
        "ratio": round(statistics.median(served) / statistics.median(local), 3),
        "in_process_runs": [round(r, 2) for r in local],
        "server_runs": [round(r, 2) for r in served],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model            {result['model']}  ({args.max_tokens} tokens/run, {args.runs} runs, {result['cpus']} CPUs)")
        print(f"in-process       {result['in_process_tok_s']:.1f} tok/s  {result['in_process_runs']}")
        print(f"through server   {result['server_tok_s']:.1f} tok/s  {result['server_runs']}")
        print(f"ratio            {result['ratio']:.3f}  (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
