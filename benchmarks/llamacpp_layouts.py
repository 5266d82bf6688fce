"""What llama.cpp's repacked weight layouts are worth here: prompt and decode tok/s of GGUFs loaded with
``use_extra_bufts`` on (llama.cpp's default: CPU_REPACK, and AMX where the CPU has it) and off (what
``invoker.runtimes.llamacpp_cpu`` chooses on AMX hosts, whose AMX path crashes), side by side in one run.

    .venv/bin/python benchmarks/llamacpp_layouts.py out/tiny-invoker/gguf-F16 out/tiny-invoker/gguf-Q8_0 \\
        out/tiny-invoker/gguf-Q4_K_M --threads 1 --rounds 3

Each round loads every GGUF once per layout, in alternating order, and runs ``pipelines.bench.bench``
on it; the table gives the median over rounds and the ratio off/on. On a CPU with ``amx_int8`` the
"on" loads are skipped where they would crash (``--force`` runs them anyway). Figures: docs/GGUF.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from invoker.runtimes.llamacpp_cpu import cpu_flags, llama_system_info, use_extra_buffers  # noqa: E402
from invoker.runtimes.llamacpp_runtime import LlamaCppRuntime  # noqa: E402
from pipelines.bench import bench, cpu_model  # noqa: E402

LAYOUTS = {"repacked": True, "plain": False}


def measure(*, paths: list[Path], threads: int, rounds: int, prompt_tokens: int, gen_tokens: int, force: bool) -> dict:
    layouts = dict(LAYOUTS) if use_extra_buffers() or force else {"plain": False}
    figures: dict[str, dict[str, list[dict]]] = {path.name: {name: [] for name in layouts} for path in paths}
    for round_index in range(rounds):
        order = list(layouts.items()) if round_index % 2 == 0 else list(reversed(layouts.items()))
        for path in paths:
            for name, extra in order:
                runtime = LlamaCppRuntime.load(path, threads=threads, extra_buffers=extra)
                result = bench(runtime=runtime, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, runs=3, warmup=1, progress=False)
                figures[path.name][name].append({"prompt": result["prompt_tok_s"], "decode": result["decode_tok_s"]})
                print(f"round {round_index + 1}: {path.name} {name}: prompt {result['prompt_tok_s']:.0f} tok/s, "
                      f"decode {result['decode_tok_s']:.1f} tok/s", file=sys.stderr)
                del runtime
    return {
        name: {layout: {key: statistics.median(run[key] for run in runs) for key in ("prompt", "decode")}
               for layout, runs in by_layout.items()}
        for name, by_layout in figures.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="GGUF variant dirs or .gguf files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=320)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--force", action="store_true", help="also load with the extra buffers on an AMX host (may crash)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    table = measure(paths=args.paths, threads=args.threads, rounds=args.rounds, prompt_tokens=args.prompt_tokens,
                    gen_tokens=args.gen_tokens, force=args.force)
    amx = sorted(flag for flag in cpu_flags() if flag.startswith("amx"))
    if args.json:
        print(json.dumps({"cpu": cpu_model(), "amx_flags": amx, "system_info": llama_system_info(), "threads": args.threads,
                          "figures": table}, indent=1))
        return 0
    print(f"{cpu_model()}; AMX flags: {' '.join(amx) or 'none'}; {args.threads} thread(s); "
          f"{args.prompt_tokens}-token prompts, {args.gen_tokens} tokens decoded; median of {args.rounds} rounds")
    print("| GGUF | layout | prompt tok/s | decode tok/s |")
    print("| --- | --- | --- | --- |")
    for name, by_layout in table.items():
        for layout, row in by_layout.items():
            print(f"| {name} | {layout} | {row['prompt']:.0f} | {row['decode']:.1f} |")
        if len(by_layout) == 2:
            on, off = by_layout["repacked"], by_layout["plain"]
            print(f"| {name} | plain / repacked | {off['prompt'] / on['prompt']:.2f} | {off['decode'] / on['decode']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
