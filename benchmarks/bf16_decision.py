"""Should the transformers runtime compute in bfloat16 on this CPU? fp16 in float32 vs in bfloat16, on the gated cases.

    .venv/bin/python benchmarks/bf16_decision.py models/tiny-invoker [--limit 200] [--fidelity 40] [--threads 1]

The transformers runtime loads fp16/GPTQ/AWQ checkpoints in float32 on a CPU. bfloat16 products run on a
CPU's matrix units (AMX-BF16; AVX512-BF16 without AMX) several times faster, but fp16 is the reference every
variant is judged against, so it may change only if its verdicts do not move. Both loads of the same
checkpoint evaluate the first ``--limit`` synthetic cases greedily (the gated cases of the default recipe);
printed side by side: how many answers are identical, call accuracy of each with the paired McNemar test,
the answer KL divergence of bfloat16 from float32 on the first ``--fidelity`` cases (the pipeline's
fidelity measure, float32 as the reference), the prompt-reading speed of each (``invoker-pack bench``'s
method), and the float32/bfloat16 matmul peaks of the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from invoker.runtimes.transformers_runtime import TransformersRuntime
    from pipelines.bench import bench, measure_matmul_peak
    from pipelines.eval import evaluate, load_suite
    from pipelines.fidelity import build_reference, score_variant
    from pipelines.metrics import RATE_FIELDS
    from pipelines.stats import paired_comparison

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="an fp16 checkpoint dir")
    parser.add_argument("--limit", type=int, default=200, help="synthetic cases evaluated (default: 200)")
    parser.add_argument("--fidelity", type=int, default=40, help="cases of the KL divergence (default: 40)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    records = load_suite("synthetic", limit=args.limit)
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        runtime = TransformersRuntime.load(args.path, dtype=dtype)
        cases: list[dict] = []
        summary = evaluate(runtime=runtime, records=records, on_case=cases.append)
        speed = bench(runtime=runtime, gen_tokens=8, runs=3, warmup=1, threads=args.threads, progress=False)
        runs[runtime.compute_dtype] = {"runtime": runtime, "summary": summary, "cases": cases, "speed": speed}
    f32, bf16 = runs["float32"], runs["bfloat16"]
    identical = sum(a["completion"] == b["completion"] for a, b in zip(f32["cases"], bf16["cases"]))
    calls = [i for i, case in enumerate(f32["cases"]) if case["score"]["call_correct"] is not None]
    paired = paired_comparison([f32["cases"][i]["score"][RATE_FIELDS["call_accuracy"]] for i in calls],
                               [bf16["cases"][i]["score"][RATE_FIELDS["call_accuracy"]] for i in calls])
    reference = build_reference(runtime=f32["runtime"], records=records[: args.fidelity])
    fidelity = score_variant(runtime=bf16["runtime"], reference=reference)["answer"]
    peaks = {dtype: measure_matmul_peak(dtype=dtype, threads=args.threads) / 1e9 for dtype in ("float32", "bfloat16")}
    print(f"{args.path}, {len(records)} synthetic cases, {args.threads} thread(s)")
    print(f"identical answers: {identical} of {len(records)}")
    print(f"call accuracy: float32 {paired.reference_rate:.3f}, bfloat16 {paired.variant_rate:.3f} on {paired.n} call cases "
          f"(float32 only {paired.reference_only}, bfloat16 only {paired.variant_only}, McNemar p={paired.p_value:.3g})")
    print(f"answer KLD of bfloat16 from float32: mean {fidelity['mean_kl']:.4f}, p99 {fidelity['p99_kl']:.4f}, "
          f"top-1 agreement {fidelity['top1_agreement']:.3f} ({fidelity['positions']} positions, {args.fidelity} cases)")
    for name, run in runs.items():
        print(f"{name}: prompt {run['speed']['prompt_tok_s']:.0f} tok/s, eval {run['summary']['wall_seconds']:.0f} s; "
              f"matmul peak {peaks[name]:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
