"""Scale benchmark: does conversion stream? Peak RSS and wall time on 13B-shaped checkpoints of 2 and 4 layers.

Builds random checkpoints with Llama-2-13B's shapes (hidden 5120, intermediate 13824, 40 heads,
vocab 32000) and only a few decoder layers, written shard by shard (one layer per shard, one tensor
in memory at a time) so building them needs little RAM. Each conversion then runs in its own child
process; the parent reads the child's peak RSS (``ru_maxrss`` from ``wait4``, which covers the
child and the processes it waited for, e.g. llama.cpp's converter) and its wall time.

If conversion streams, peak RSS with 4 layers ≈ peak RSS with 2 layers, and the extrapolation to
40 layers stays flat. Entries are converter modules with the shared contract
(``convert(source_dir=, out_dir=, variant=, calibration=)``): add a converter with one line in ENTRIES.

    python benchmarks/scale.py                      # 2 and 4 layers, every entry below
    python benchmarks/scale.py --layers 2 4 8 --entries gguf-F16 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

THIRTEEN_B = dict(hidden_size=5120, intermediate_size=13824, num_attention_heads=40, num_key_value_heads=40,
                  vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
FULL_DEPTH = 40  # Llama-2-13B's layer count, for the extrapolation

# entry name -> (converter module, variant, needs a calibration set)
ENTRIES: dict[str, tuple[str, str, bool]] = {
    "gguf-F16": ("convert.gguf", "F16", False),
    "gguf-Q4_K_M": ("convert.gguf", "Q4_K_M", True),
    "gptq-4bit-g128": ("convert.gptq", "4bit-g128", True),
    "awq-4bit-g128": ("convert.awq", "4bit-g128", True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4], help="decoder layer counts (default: 2 4)")
    parser.add_argument("--entries", nargs="+", default=list(ENTRIES), choices=list(ENTRIES), help="conversions to measure")
    parser.add_argument("--work", type=Path, default=Path("/tmp/invoker-scale"), help="where checkpoints and outputs go")
    parser.add_argument("--calibration-samples", type=int, default=4, help="calibration samples for imatrix/GPTQ/AWQ (default: 4)")
    parser.add_argument("--calibration-length", type=int, default=256, help="tokens per calibration sample (default: 256)")
    parser.add_argument("--keep", action="store_true", help="keep the converted outputs (checkpoints are always kept for reuse)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    results = []
    for n_layers in args.layers:
        source = build_checkpoint(out_dir=args.work / f"llama13b-shape-{n_layers}l", n_layers=n_layers)
        for entry in args.entries:
            out_dir = args.work / "out" / f"{n_layers}l-{entry}"
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir(parents=True)
            measured = measure_child(entry=entry, source=source, out_dir=out_dir,
                                     calibration=(args.calibration_samples, args.calibration_length))
            results.append({"layers": n_layers, "entry": entry, **measured,
                            "output_bytes": sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())})
            print(f"{n_layers} layers  {entry:<14} peak RSS {measured['peak_rss_mib']:>8.0f} MiB  "
                  f"wall {measured['wall_seconds']:>7.1f} s", file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(out_dir, ignore_errors=True)
    summary = {"shape": THIRTEEN_B, "results": results, "extrapolated_40_layers": extrapolate(results)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)
    return 0


def build_checkpoint(*, out_dir: Path, n_layers: int, seed: int = 0) -> Path:
    """A random fp16 Llama checkpoint with 13B shapes and ``n_layers`` layers; reused when already built."""
    stamp = out_dir / ".complete"
    if stamp.is_file():
        return out_dir
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    write_tokenizer(out_dir)
    config = LlamaConfig(**THIRTEEN_B, num_hidden_layers=n_layers, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False, architectures=["LlamaForCausalLM"], dtype="float16")
    config.save_pretrained(str(out_dir))
    generator = torch.Generator().manual_seed(seed)
    h, i, v = THIRTEEN_B["hidden_size"], THIRTEEN_B["intermediate_size"], THIRTEEN_B["vocab_size"]

    def random(*shape):
        return (torch.randn(*shape, generator=generator) * 0.02).to(torch.float16)

    shards = [{"model.embed_tokens.weight": lambda: random(v, h)}]
    for layer in range(n_layers):
        prefix = f"model.layers.{layer}."
        shards.append({
            prefix + "input_layernorm.weight": lambda: torch.ones(h, dtype=torch.float16),
            prefix + "post_attention_layernorm.weight": lambda: torch.ones(h, dtype=torch.float16),
            **{prefix + f"self_attn.{p}_proj.weight": (lambda: random(h, h)) for p in "qkvo"},
            prefix + "mlp.gate_proj.weight": lambda: random(i, h),
            prefix + "mlp.up_proj.weight": lambda: random(i, h),
            prefix + "mlp.down_proj.weight": lambda: random(h, i),
        })
    shards.append({"model.norm.weight": lambda: torch.ones(h, dtype=torch.float16), "lm_head.weight": lambda: random(v, h)})
    weight_map, total = {}, 0
    for number, makers in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        tensors = {key: make() for key, make in makers.items()}
        save_file(tensors, str(out_dir / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in tensors})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    stamp.touch()
    return out_dir


def write_tokenizer(out_dir: Path) -> None:
    """A small Llama-2-style tokenizer (llama.cpp pads the vocabulary to the config's 32000 as [PAD] tokens)."""
    from invoker.data.synth import generate_conversations
    from invoker.prompt import render_prompt
    from invoker.tokenizer import train_tokenizer

    records = generate_conversations(split="train", n=400, seed=0)
    texts = [render_prompt(r["messages"], functions=r["functions"], add_generation_prompt=False) for r in records]
    train_tokenizer(texts=texts, vocab_size=1000, out_dir=out_dir)


def measure_child(*, entry: str, source: Path, out_dir: Path, calibration: tuple[int, int]) -> dict:
    """Run one conversion in a child process; its peak RSS (with its own children) and wall time."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", entry, str(source), str(out_dir),
               str(calibration[0]), str(calibration[1])]
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{entry} on {source} failed (exit {process.returncode})")
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "wall_seconds": round(wall, 1)}


def run_child(entry: str, source: str, out_dir: str, n_samples: str, max_length: str) -> None:
    """In the child: build the calibration set if the entry needs it, then convert."""
    import importlib

    from convert.calibration import CalibrationSpec, build_calibration

    module, variant, needs_calibration = ENTRIES[entry]
    calibration = None
    if needs_calibration:
        spec = CalibrationSpec(n_samples=int(n_samples), max_length=int(max_length))
        calibration = build_calibration(tokenizer_dir=source, spec=spec)
    importlib.import_module(module).convert(source_dir=Path(source), out_dir=Path(out_dir), variant=variant,
                                            calibration=calibration, progress=False)


def extrapolate(results: list[dict]) -> dict:
    """Per entry, peak RSS and wall time linearly extrapolated from the two deepest runs to 40 layers."""
    estimates = {}
    for entry in sorted({r["entry"] for r in results}):
        runs = sorted((r for r in results if r["entry"] == entry), key=lambda r: r["layers"])
        if len(runs) < 2:
            continue
        low, high = runs[-2], runs[-1]
        span = high["layers"] - low["layers"]
        per_layer_rss = (high["peak_rss_mib"] - low["peak_rss_mib"]) / span
        per_layer_wall = (high["wall_seconds"] - low["wall_seconds"]) / span
        estimates[entry] = {
            "peak_rss_mib_per_layer": round(per_layer_rss, 1),
            "peak_rss_gib": round((high["peak_rss_mib"] + per_layer_rss * (FULL_DEPTH - high["layers"])) / 1024, 2),
            "wall_seconds": round(high["wall_seconds"] + per_layer_wall * (FULL_DEPTH - high["layers"]), 0),
        }
    return estimates


def print_table(summary: dict) -> None:
    print(f"13B-shaped random checkpoints {summary['shape']}")
    print(f"{'layers':>6}  {'entry':<14} {'peak RSS MiB':>12} {'wall s':>8} {'output MiB':>11}")
    for r in summary["results"]:
        print(f"{r['layers']:>6}  {r['entry']:<14} {r['peak_rss_mib']:>12.0f} {r['wall_seconds']:>8.1f} {r['output_bytes'] / 2**20:>11.0f}")
    for entry, estimate in summary["extrapolated_40_layers"].items():
        print(f"{entry}: {estimate['peak_rss_mib_per_layer']:+.0f} MiB per layer -> about {estimate['peak_rss_gib']} GiB "
              f"peak and {estimate['wall_seconds']:.0f} s for 40 layers")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_child(*sys.argv[2:7])
        sys.exit(0)
    sys.exit(main())
