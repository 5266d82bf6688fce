"""GGUF fidelity: each variant vs the fp16 source, on the in-house eval and by next-token distributions.

For a source checkpoint (default: the bundled models/tiny-invoker) this converts F16, Q8_0,
Q5_K_M, Q4_K_M and Q4_K_M without importance matrix through ``convert.gguf.convert`` (the F16 GGUF
and the importance matrix made once and reused, as the pipeline does), then measures

- the in-house eval (``load_suite("synthetic", limit=...)``, greedy) of fp16 and of every GGUF,
  each loaded with ``load_runtime`` — the loader the server uses;
- next-token fidelity against fp16 in torch float32 on the same token ids (eval conversations
  rendered whole, answer included): mean KL(fp16 ‖ variant) per position and top-1 agreement
  (how often both pick the same next token). On a weak model these move long before accuracy does.

    python benchmarks/gguf_fidelity.py                 # tiny-invoker, 300 eval cases, 60 KL conversations
    python benchmarks/gguf_fidelity.py --json --limit 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from convert import gguf as gguf_convert
from convert.calibration import CalibrationSet, CalibrationSpec, build_calibration
from invoker.data.synth import generate_conversations
from invoker.files import atomic_output_dir
from invoker.prompt import render_prompt
from invoker.runtimes import load_runtime
from invoker.runtimes.llamacpp_cpu import open_llama
from invoker.runtimes.llamacpp_runtime import find_gguf
from pipelines.eval import evaluate, load_suite

VARIANTS = ("F16", "Q8_0", "Q5_K_M", "Q4_K_M", "Q4_K_M-noimatrix")
METRICS = ("call_accuracy", "name_accuracy", "json_valid_rate", "schema_valid_rate", "relevance_accuracy",
           "output_valid_rate", "wall_seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/tiny-invoker"), help="fp16 HF checkpoint dir")
    parser.add_argument("--work", type=Path, default=Path("/tmp/invoker-gguf-fidelity"), help="where the GGUF variants go")
    parser.add_argument("--limit", type=int, default=300, help="eval cases of the synthetic suite (default: 300)")
    parser.add_argument("--kl-conversations", type=int, default=60, help="eval conversations for KL/top-1 (default: 60)")
    parser.add_argument("--calibration-samples", type=int, default=128, help="calibration samples (default: 128)")
    parser.add_argument("--calibration-length", type=int, default=512, help="tokens per calibration sample (default: 512)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch and llama.cpp (default: 1; on a busy machine more threads than "
                             "free cores make llama.cpp many times slower)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    calibration = build_calibration(
        tokenizer_dir=args.model,
        spec=CalibrationSpec(n_samples=args.calibration_samples, max_length=args.calibration_length),
    )
    variant_dirs = convert_variants(source_dir=args.model, work=args.work, calibration=calibration)
    records = load_suite("synthetic", limit=args.limit)
    evals = {"fp16": eval_metrics(path=args.model, records=records, threads=args.threads)}
    evals.update({variant: eval_metrics(path=path, records=records, threads=args.threads)
                  for variant, path in variant_dirs.items()})
    token_ids = conversation_ids(tokenizer_dir=args.model, n=args.kl_conversations)
    reference = torch_log_probs(model_dir=args.model, token_ids=token_ids)
    fidelity = {variant: compare_log_probs(reference, gguf_log_probs(path=path, token_ids=token_ids, threads=args.threads))
                for variant, path in variant_dirs.items()}
    summary = {"model": str(args.model), "calibration": calibration.to_manifest(), "eval_cases": len(records),
               "eval": evals, "next_token_vs_fp16": fidelity}
    print(json.dumps(summary, indent=2) if args.json else markdown_table(summary))
    return 0


def convert_variants(*, source_dir: Path, work: Path, calibration: CalibrationSet) -> dict[str, Path]:
    """Every variant in ``work/gguf-<variant>``; F16 converted once and quantized, the imatrix computed once."""
    dirs: dict[str, Path] = {}
    f16_gguf = imatrix_gguf = None
    for variant in VARIANTS:
        final = work / f"gguf-{variant}"
        if final.exists():
            raise ValueError(f"{final} exists; remove {work} or give another --work")
        with atomic_output_dir(final) as tmp:
            details = gguf_convert.convert(source_dir=source_dir, out_dir=tmp, variant=variant, calibration=calibration,
                                           f16_gguf=f16_gguf, imatrix_gguf=imatrix_gguf)
        dirs[variant] = final
        if variant == "F16":
            f16_gguf = final / details["gguf"]
        if details["imatrix"] and imatrix_gguf is None:
            imatrix_gguf = final / details["imatrix"]
    return dirs


def eval_metrics(*, path: Path, records: list[dict], threads: int) -> dict:
    """The eval's headline metrics for the model at ``path`` (greedy, default max_tokens)."""
    runtime = load_runtime(path)
    if hasattr(runtime, "set_threads"):  # llama.cpp; torch's threads are set for the whole process
        runtime.set_threads(threads)
    metrics = evaluate(runtime=runtime, records=records)
    return {key: metrics[key] for key in METRICS}


def conversation_ids(*, tokenizer_dir: Path, n: int) -> list[list[int]]:
    """Token ids (BOS first) of ``n`` eval conversations rendered whole, answer included."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    records = generate_conversations(split="eval", n=n, seed=0)
    texts = [render_prompt(r["messages"], functions=r["functions"], add_generation_prompt=False) for r in records]
    return [tokenizer(text)["input_ids"] for text in texts]


def torch_log_probs(*, model_dir: Path, token_ids: list[list[int]]) -> list[np.ndarray]:
    """Next-token log-probabilities at every position, from the fp16 checkpoint computed in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        return [torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1).numpy() for ids in token_ids]


def gguf_log_probs(*, path: Path, token_ids: list[list[int]], threads: int) -> list[np.ndarray]:
    """The same from llama.cpp, on the same ids."""
    llama = open_llama(find_gguf(path), n_ctx=max(map(len, token_ids)),
                       n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False)
    result = []
    for ids in token_ids:
        llama.reset()
        llama.eval(ids)
        logits = np.asarray(llama.scores[: len(ids)], dtype=np.float64)
        shifted = logits - logits.max(-1, keepdims=True)
        result.append(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))
    return result


def compare_log_probs(reference: list[np.ndarray], other: list[np.ndarray]) -> dict:
    """Mean and 99th-percentile KL(reference ‖ other) per position, and top-1 agreement."""
    kl = np.concatenate([(np.exp(p) * (p - q)).sum(-1) for p, q in zip(reference, other)])
    top1 = np.concatenate([p.argmax(-1) == q.argmax(-1) for p, q in zip(reference, other)])
    return {"mean_kl": float(kl.mean()), "p99_kl": float(np.quantile(kl, 0.99)),
            "top1_agreement": float(top1.mean()), "positions": int(kl.size)}


def markdown_table(summary: dict) -> str:
    base = summary["eval"]["fp16"]["call_accuracy"]
    lines = [
        f"{summary['eval_cases']} eval cases; next-token measures over "
        f"{next(iter(summary['next_token_vs_fp16'].values()))['positions']} positions",
        "",
        "| variant | call_accuracy | × fp16 | name_accuracy | json_valid | schema_valid | relevance | mean KL vs fp16 | top-1 agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, metrics in summary["eval"].items():
        ratio = f"{metrics['call_accuracy'] / base:.2f}" if base else "—"
        fidelity = summary["next_token_vs_fp16"].get(variant)
        kl = f"{fidelity['mean_kl']:.2e}" if fidelity else "—"
        top1 = f"{fidelity['top1_agreement']:.4f}" if fidelity else "—"
        lines.append(f"| {variant} | {metrics['call_accuracy']:.3f} | {ratio} | {metrics['name_accuracy']:.3f} | "
                     f"{metrics['json_valid_rate']:.3f} | {metrics['schema_valid_rate']:.3f} | "
                     f"{metrics['relevance_accuracy']:.3f} | {kl} | {top1} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
