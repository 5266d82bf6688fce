"""Our server against llama-cpp-python's own server, side by side on the same GGUF: the ratios a user would ask for.

    .venv/bin/python benchmarks/serve_vs_llama_cpp_server.py out/tiny-invoker/gguf-Q4_K_M [--runs 4] [--max-tokens 128]

Starts ``invoker-pack serve`` (constrained decoding on, its default, unless ``--no-constrained``) and
``python -m llama_cpp.server`` on the same GGUF, each on a free 127.0.0.1 port with the same number of
threads (this process's CPU affinity), and alternates requests between them so a change in the
machine's load affects both alike. Each server gets one HTTP client whose connections stay open, as
the openai client's do. It prints, as ratios ours / theirs:

- **decode tok/s at concurrency 1**, non-streamed, from the ``usage`` field:
  (tokens(N) − tokens(1)) / (t(N) − t(1)) — prompt processing and HTTP cancel out;
- **first chunk** of a stream (the role chunk) and **first content chunk**, in ms, medians, and how the gap
  between them compares with decoding the part of Invoker's answer wrapper (```` ```{"content": " ````) that
  the model writes itself (constrained, the server prefills the opening ```` ```{"content": ````) at our decode rate;
- **aggregate tok/s at ``--concurrency`` streams** (all completion tokens / wall time of non-streamed
  requests sent at once, prompt and HTTP included), with errors, against the same measure at one stream:
  what concurrency adds on each server.

Both servers render the request with the GGUF's own chat template (Invoker's) and decode greedily, so
they generate the same text; the figures are medians of ``--runs`` alternating runs. Run it on a quiet
machine: two cores shared with anything else slow llama.cpp's threads 5-10x.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invoker.constrain import ANSWER_START, LEADING_SPACE, answer_grammar  # noqa: E402
from invoker.examples import GET_TIME  # noqa: E402
from invoker.runtimes.llamacpp_runtime import find_gguf  # noqa: E402

TEXT_REQUEST = [{"role": "user", "content": "Tell me everything you know about the weather in Singapore, Paris and Tokyo."}]
CALL_REQUEST = [{"role": "user", "content": "Can you check what is the time in Singapore?"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, name: str, command: list[str], *, base: str, health_path: str, log_dir: Path) -> None:
        self.name = name
        self.base = base
        self.log = log_dir / f"{name}.log"
        # One client per server, its connections kept open, as the openai client does: a new connection per
        # request would add its set-up (~20 ms here) to every first-chunk figure.
        self.client = httpx.Client(timeout=600)
        health = base + health_path
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=str(ROOT))
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start in 300 s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def body(self, messages: list[dict], *, max_tokens: int, stream: bool, tools: bool = False) -> dict:
        body = {"model": "m", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
        if tools:
            body["tools"] = [{"type": "function", "function": GET_TIME}]
        return body

    def complete(self, messages: list[dict], *, max_tokens: int) -> tuple[float, int]:
        """(seconds, completion tokens) of one non-streamed request."""
        started = time.perf_counter()
        response = self.client.post(f"{self.base}/v1/chat/completions", json=self.body(messages, max_tokens=max_tokens, stream=False))
        seconds = time.perf_counter() - started
        response.raise_for_status()
        return seconds, response.json()["usage"]["completion_tokens"]

    def stream(self, messages: list[dict], *, max_tokens: int) -> dict:
        """First chunk, first content chunk (ms), content chunks and seconds of one streamed request."""
        started = time.perf_counter()
        first = first_content = None
        chunks = 0
        with self.client.stream("POST", f"{self.base}/v1/chat/completions",
                                json=self.body(messages, max_tokens=max_tokens, stream=True)) as response:
            response.raise_for_status()
            timing = server_timing(response.headers.get("server-timing"))
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = (time.perf_counter() - started) * 1000
                first = first if first is not None else now
                delta = (json.loads(line[6:]).get("choices") or [{}])[0].get("delta") or {}
                if delta.get("content"):
                    chunks += 1
                    first_content = first_content if first_content is not None else now
        return {"first_ms": first, "first_content_ms": first_content, "content_chunks": chunks,
                "seconds": time.perf_counter() - started, "timing": timing}


def server_timing(header: str | None) -> dict[str, float]:
    """``Server-Timing: plan;dur=1.2, queue;dur=0.0`` -> {"plan": 1.2, "queue": 0.0} (ms); {} without the header."""
    parts = (part.strip().split(";dur=") for part in (header or "").split(",") if ";dur=" in part)
    return {name: float(value) for name, value in parts}


WRAPPER = LEADING_SPACE + ANSWER_START + '"'  # what a text answer holds before its first content character


def wrapper_tokens(gguf: Path, *, constrained: bool) -> int:
    """How many tokens the model itself writes of ``WRAPPER``: constrained, the server prefills its opening
    (``answer_grammar``) and the model writes the rest. Tokenized alone: the model's split may differ by one."""
    from llama_cpp import Llama

    written = WRAPPER[len(answer_grammar([]).prefill):] if constrained else WRAPPER
    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return len(vocab.tokenize(written.encode(), add_bos=False, special=False))


def decode_rate(server: Server, *, max_tokens: int) -> float:
    t1, n1 = server.complete(TEXT_REQUEST, max_tokens=1)
    tn, nn = server.complete(TEXT_REQUEST, max_tokens=max_tokens)
    return (nn - n1) / (tn - t1) if tn > t1 and nn > n1 else float("nan")


def aggregate(server: Server, *, concurrency: int, max_tokens: int) -> tuple[float, int]:
    """(completion tokens per second over all streams, errors) with ``concurrency`` streams at once."""
    def one(_):
        body = server.body(TEXT_REQUEST, max_tokens=max_tokens, stream=False)
        response = server.client.post(f"{server.base}/v1/chat/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    errors = tokens = 0
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(one, i) for i in range(concurrency)]:
            try:
                tokens += future.result()
            except Exception:  # noqa: BLE001 - an error is a figure here
                errors += 1
    return tokens / (time.perf_counter() - started), errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="GGUF variant dir or .gguf file")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-constrained", action="store_true", help="our server without constrained decoding")
    parser.add_argument("--theirs-flash-attn", action="store_true",
                        help="start llama_cpp.server with --flash_attn true (its default is off; llama.cpp's own default, "
                             "which our engine keeps, is auto: on for CPU)")
    args = parser.parse_args(argv)
    gguf = find_gguf(args.path)
    threads = len(os.sched_getaffinity(0))
    logs = Path(tempfile.mkdtemp(prefix="serve-vs-"))
    ours_port, theirs_port = free_port(), free_port()
    ours_cmd = [sys.executable, "-m", "pipelines.cli", "serve", str(args.path), "--port", str(ours_port), "--max-concurrency",
                str(args.concurrency)] + (["--no-constrained"] if args.no_constrained else [])
    theirs_cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(theirs_port),
                  "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048"]
    theirs_cmd += ["--flash_attn", "true"] if args.theirs_flash_attn else []
    servers = [Server("ours", ours_cmd, base=f"http://127.0.0.1:{ours_port}", health_path="/health", log_dir=logs),
               Server("llama_cpp.server", theirs_cmd, base=f"http://127.0.0.1:{theirs_port}", health_path="/v1/models",
                      log_dir=logs)]
    try:
        figures = {server.name: {"decode": [], "first": [], "first_content": [], "one": [], "aggregate": [], "errors": 0,
                                 "timing": []}
                   for server in servers}
        for run in range(args.runs + 1):  # the first round warms both up and is not counted
            for server in servers if run % 2 == 0 else servers[::-1]:
                rate = decode_rate(server, max_tokens=args.max_tokens)
                streamed = server.stream(TEXT_REQUEST, max_tokens=args.max_tokens)
                one, _ = aggregate(server, concurrency=1, max_tokens=args.max_tokens)
                many, errors = aggregate(server, concurrency=args.concurrency, max_tokens=args.max_tokens)
                if run == 0:
                    continue
                figure = figures[server.name]
                figure["decode"].append(rate)
                figure["first"].append(streamed["first_ms"])
                figure["first_content"].append(streamed["first_content_ms"])
                figure["timing"].append(streamed["timing"])
                figure["one"].append(one)
                figure["aggregate"].append(many)
                figure["errors"] += errors
    finally:
        for server in servers:
            server.stop()
    timing = {name: statistics.median(t[name] for t in figures["ours"]["timing"]) for name in figures["ours"]["timing"][0]}
    median = {name: {key: statistics.median(v) if isinstance(v, list) and v and key != "timing" else v
                     for key, v in figure.items()} for name, figure in figures.items()}
    ours, theirs = median["ours"], median["llama_cpp.server"]
    print(f"{gguf.name}, {threads} threads each, {args.runs} alternating runs, max_tokens {args.max_tokens}, "
          f"ours {'unconstrained' if args.no_constrained else 'constrained'}, "
          f"llama_cpp.server flash attention {'on' if args.theirs_flash_attn else 'off (its default)'}")
    print(f"{'':28s}{'ours':>12s}{'llama_cpp.server':>18s}{'ratio':>9s}")
    for key, label, unit in (("decode", "decode tok/s (1 stream)", ""), ("first", "first chunk ms", ""),
                             ("first_content", "first content chunk ms", ""),
                             ("one", "request tok/s (1 stream)", ""),
                             ("aggregate", f"aggregate tok/s ({args.concurrency} streams)", "")):
        a, b = ours[key], theirs[key]
        print(f"{label:28s}{a:12.1f}{b:18.1f}{a / b if b else float('nan'):9.3f}")
    print(f"{'errors at concurrency':28s}{ours['errors']:12d}{theirs['errors']:18d}")
    wrapper = wrapper_tokens(gguf, constrained=not args.no_constrained)
    print(f"ours: first content chunk - first chunk {ours['first_content'] - ours['first']:.1f} ms; the model writes "
          f"{wrapper} tokens of Invoker's wrapper {WRAPPER!r} = {1000 * wrapper / ours['decode']:.1f} ms at ours' decode rate"
          + ("" if args.no_constrained else " (the rest is prefilled)"))
    inside = sum(timing.values())
    print(f"ours: of the first chunk's {ours['first']:.1f} ms, the server's Server-Timing header (medians) gives "
          + ", ".join(f"{name} {value:.1f}" for name, value in timing.items())
          + f" ms; the other {ours['first'] - inside:.1f} ms are HTTP, the event loop and the client")
    print(f"{args.concurrency} streams / 1 stream, same way: ours {ours['aggregate'] / ours['one']:.2f}, "
          f"llama_cpp.server {theirs['aggregate'] / theirs['one']:.2f}")
    print(f"server logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
