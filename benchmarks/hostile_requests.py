"""What hostile schemas cost a running server: its memory, /health's latency, and an unrelated request's wait.

    .venv/bin/python benchmarks/hostile_requests.py out/tiny-invoker/gguf-Q4_K_M [--requests 50] [--together 6]

Starts ``python -m serve_minimal PATH`` (the defaults a user gets: max concurrency 1, max queue 16) on a free
loopback port, then sends the request shapes a hostile client used against it (issue 24): a pattern whose
repeats expand to billions of items, one nested 500 deep, ``^(a|a)*$`` checked against 15 enum values like
``"aaaa…!"`` (exponential backtracking), a ``$ref`` cycle. ``--requests`` of them go out ``--together`` at
once; while each group is in flight, /health is polled every 50 ms and one unrelated request is sent (a
short question, and one whose prompt is over the context, which should fail at once). Printed, side by
side: the server's RSS when warmed up and its peak (``/proc/PID/status``), /health's slowest answer, and
the unrelated requests' latency alone vs under the hostile load. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from serve_throughput import free_port, wait_until_up


def one_property(schema: dict, **extra) -> dict:
    return {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}],
            "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"a": schema}}}], **extra}


HOSTILE = {
    "repeat expansion": one_property({"type": "string", "enum": ["a"], "pattern": "(?:a{65535}){65535}"}),
    "repeat expansion (small)": one_property({"type": "string", "enum": ["a"], "pattern": "(?:a{5000}){300}"}),
    "nested pattern": one_property({"type": "string", "pattern": "(" * 500 + "a" + ")" * 500}),
    "backtracking enum": one_property({"type": "string", "pattern": "^(a|a)*$",
                                       "enum": ["a" * (26 + i) + "!" for i in range(15)]}),
    "$ref cycle": {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}], "functions": [
        {"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}},
                                     "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}}]},
}
UNRELATED = {
    "short question": {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "What is 2 + 2?"}]},
    "over the context": {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "word " * 20000}]},
}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def timed_post(client, url: str, body: dict) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.post(url + "/v1/chat/completions", json=body)
    return time.perf_counter() - started, response.status_code


async def unrelated_alone(client, url: str, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in UNRELATED}
    for _ in range(runs):
        for name, body in UNRELATED.items():
            seconds, _ = await timed_post(client, url, body)
            times[name].append(seconds)
    return times


async def hostile_load(client, url: str, *, pid: int, requests: int, together: int) -> dict:
    import httpx

    names = list(HOSTILE)
    statuses: Counter = Counter()
    health: list[float] = []
    unrelated: dict[str, list[float]] = {name: [] for name in UNRELATED}
    peak = rss_mib(pid)
    stop = asyncio.Event()

    async def poll_health():
        async with httpx.AsyncClient(timeout=30) as probe:
            while not stop.is_set():
                started = time.perf_counter()
                await probe.get(url + "/health")
                health.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)

    async def unrelated_during():
        await asyncio.sleep(0.2)  # the hostile group has started its schema work
        for name, body in UNRELATED.items():
            seconds, _ = await timed_post(client, url, body)
            unrelated[name].append(seconds)

    poller = asyncio.create_task(poll_health())
    sent = 0
    while sent < requests:
        group = [HOSTILE[names[(sent + i) % len(names)]] for i in range(min(together, requests - sent))]
        results = await asyncio.gather(*(timed_post(client, url, body) for body in group), unrelated_during())
        statuses.update(status for _, status in results[:-1])
        sent += len(group)
        peak = max(peak, rss_mib(pid))
    stop.set()
    await poller
    return {"statuses": dict(statuses), "health_max_ms": 1000 * max(health), "health_polls": len(health),
            "unrelated": unrelated, "rss_peak_mib": peak}


async def measure(url: str, *, pid: int, requests: int, together: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
        for body in [*UNRELATED.values(), *HOSTILE.values()] * 2:  # warm up: first loads, caches, arenas
            await client.post(url + "/v1/chat/completions", json=body)
        warm = rss_mib(pid)
        alone = await unrelated_alone(client, url, runs=5)
        loaded = await hostile_load(client, url, pid=pid, requests=requests, together=together)
    return {"rss_warm_mib": warm, "alone": alone, **loaded}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="model dir or variant dir to serve")
    parser.add_argument("--requests", type=int, default=50, help="hostile requests in all (default: 50)")
    parser.add_argument("--together", type=int, default=6, help="hostile requests in flight at once (default: 6)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "serve_minimal", str(args.path), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process=process)
        result = asyncio.run(measure(url, pid=process.pid, requests=args.requests, together=args.together))
    finally:
        process.terminate()
        process.wait(timeout=30)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"hostile requests: {sum(result['statuses'].values())}, statuses {result['statuses']}")
    print(f"server RSS: warmed up {result['rss_warm_mib']:.0f} MiB, peak under load {result['rss_peak_mib']:.0f} MiB "
          f"(+{result['rss_peak_mib'] - result['rss_warm_mib']:.0f} MiB)")
    print(f"/health: slowest of {result['health_polls']} answers under load {result['health_max_ms']:.1f} ms")
    for name in UNRELATED:
        alone, loaded = result["alone"][name], result["unrelated"][name]
        print(f"unrelated '{name}': alone median {1000 * statistics.median(alone):.0f} ms; with {args.together} hostile "
              f"in flight median {1000 * statistics.median(loaded):.0f} ms, slowest {1000 * max(loaded):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
