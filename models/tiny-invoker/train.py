"""Train the bundled tiny-invoker model from scratch on CPU, reproducibly.

    .venv/bin/python models/tiny-invoker/train.py --out models/tiny-invoker

Steps: generate the seeded training split (invoker.data.synth) → render each conversation in
Invoker's prompt format (invoker.prompt) → train a Llama-2-style sentencepiece tokenizer on it →
train a small LlamaForCausalLM with the loss on the assistant's answer only (as the original
Invoker was trained) → save fp16 safetensors, tokenizer, chat template, training log and model card.
The learning curve (held-out eval every ``--eval-every`` steps) goes into ``training_log.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from invoker.chat_template import write_chat_template
from invoker.data.synth import generate_conversations
from invoker.prompt import render_prompt
from invoker.tokenizer import train_tokenizer

IGNORE = -100


def split_prompt_and_answer(record: dict) -> tuple[str, str]:
    """The prompt the model sees and the answer it must write, as Invoker renders them."""
    prompt = render_prompt(record["messages"][:-1], functions=record["functions"])
    full = render_prompt(record["messages"], functions=record["functions"], add_generation_prompt=False)
    if not full.startswith(prompt):
        raise ValueError(f"{record['id']}: the rendered history does not extend the prompt")
    return prompt, full[len(prompt):]


def tokenize_examples(*, records: list[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels (prompt masked) for each record; the answer ends with EOS."""
    examples = []
    for record in records:
        prompt, answer = split_prompt_and_answer(record)
        encoded = tokenizer(prompt + answer, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        labels = [tok if start >= len(prompt) and end > start else IGNORE for tok, (start, end) in zip(ids, offsets)]
        examples.append((ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]))
    return examples


def length_bucketed_batches(*, examples: list, batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples (less padding, same data each epoch)."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(*, examples: list, indices: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def training_loss(
    *, model: LlamaForCausalLM, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, prompt_weight: float
) -> tuple[torch.Tensor, float]:
    """(Training loss, answer loss): next-token loss on the answer, plus ``prompt_weight`` × the loss on the prompt tokens.

    The prompt term is ordinary language modelling on the rendered conversation; it teaches the
    copying a call needs (request words ↔ function names, values ↔ earlier turns) from far more
    tokens than the answers alone hold.
    """
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model.lm_head(hidden[:, :-1]).float()
    targets = ids[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    answer = labels[:, 1:] != IGNORE
    prompt = (mask[:, 1:] == 1) & ~answer
    answer_loss = per_token[answer].mean()
    return answer_loss + prompt_weight * per_token[prompt].mean(), answer_loss.item()


def copy_batch(*, batch_size: int, span: int, vocab_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token spans written twice (``<s> X X``), labelled on the repeat.

    A model trained from scratch on function calls alone first memorises the training values and
    ignores the prompt; the repeat task grows the induction heads that copying a function's name and
    the user's values into the call needs (it is the mechanism, not the data, that transfers).
    """
    spans = torch.randint(3, vocab_size, (batch_size, span), generator=generator)
    ids = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), spans, spans], dim=1)
    labels = ids.clone()
    labels[:, : span + 1] = IGNORE
    return ids, labels


def copy_loss(*, model: LlamaForCausalLM, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.model(input_ids=ids).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = model.lm_head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep])


def learning_rate(*, step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(*, model: LlamaForCausalLM, tokenizer_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_bytes((tokenizer_dir / name).read_bytes())
    write_chat_template(out)


def quick_eval(*, model_dir: Path, limit: int, seed: int) -> dict:
    from invoker.runtimes import load_runtime
    from pipelines.eval import evaluate, load_suite

    runtime = load_runtime(model_dir)
    return evaluate(runtime=runtime, records=load_suite("synthetic", limit=limit, seed=seed), progress=False)


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    out = Path(args.out)
    work = out / ".build"
    started = time.time()

    records = generate_conversations(split="train", n=args.n_train, seed=args.seed)
    texts = ["".join(split_prompt_and_answer(r)) for r in records]
    train_tokenizer(texts=texts[: args.tokenizer_texts], vocab_size=args.vocab_size, out_dir=work / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(work / "tokenizer"))
    examples = tokenize_examples(records=records, tokenizer=tokenizer)
    lengths = sorted(len(e[0]) for e in examples)
    print(f"{len(examples)} examples, tokens median {lengths[len(lengths) // 2]}, max {lengths[-1]}", file=sys.stderr)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        torch_dtype="float16",
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)

    copy_generator = torch.Generator().manual_seed(args.seed)
    log = {"args": vars(args), "curve": [], "evals": []}
    batches: list[list[int]] = []
    running = None
    bar = tqdm(range(args.steps), desc="train", unit="step")
    for step in bar:
        if not batches:
            batches = length_bucketed_batches(examples=examples, batch_size=args.batch_size, rng=rng)
        ids, labels, mask = collate(examples=examples, indices=batches.pop(), pad_id=tokenizer.eos_token_id)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step=step, total=args.steps, peak=args.lr, warmup=args.warmup)
        loss, answer_loss = training_loss(model=model, ids=ids, labels=labels, mask=mask, prompt_weight=args.prompt_weight)
        if args.copy_weight:
            copy_ids, copy_labels = copy_batch(
                batch_size=args.batch_size, span=args.copy_span, vocab_size=config.vocab_size, generator=copy_generator
            )
            loss = loss + args.copy_weight * copy_loss(model=model, ids=copy_ids, labels=copy_labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running = answer_loss if running is None else 0.98 * running + 0.02 * answer_loss
        bar.set_postfix(answer_loss=f"{running:.4f}")
        if step % 50 == 0:
            log["curve"].append({"step": step, "answer_loss": round(running, 5), "seconds": round(time.time() - started, 1)})
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            model.eval()
            save_checkpoint(model=model, tokenizer_dir=work / "tokenizer", out=work / "checkpoint")
            metrics = quick_eval(model_dir=work / "checkpoint", limit=args.eval_limit, seed=args.seed)
            model.train()
            log["evals"].append({"step": step + 1, **{k: metrics[k] for k in ("call_accuracy", "json_valid_rate", "relevance_accuracy", "name_accuracy")}})
            tqdm.write(f"step {step + 1}: {log['evals'][-1]}")

    model.eval()
    save_checkpoint(model=model, tokenizer_dir=work / "tokenizer", out=out)
    log["train_seconds"] = round(time.time() - started, 1)
    log["parameters"] = sum(p.numel() for p in model.parameters())
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"saved {out} after {log['train_seconds']} s", file=sys.stderr)


def write_model_card(*, out: Path, eval_limit: int | None) -> None:
    """Evaluate the saved model on the synthetic eval suite and write its README.md from the measured figures."""
    from invoker.runtimes import load_runtime
    from pipelines.eval import evaluate, load_suite

    log = json.loads((out / "training_log.json").read_text())
    metrics = evaluate(runtime=load_runtime(out), records=load_suite("synthetic", limit=eval_limit), progress=True)
    (out / "eval.json").write_text(json.dumps(metrics, indent=1) + "\n")
    config = json.loads((out / "config.json").read_text())
    args = log["args"]
    curve = "\n".join(
        f"| {e['step']} | {e['call_accuracy']:.3f} | {e['name_accuracy']:.3f} | "
        f"{'–' if e['json_valid_rate'] is None else format(e['json_valid_rate'], '.3f')} | {e['relevance_accuracy']:.3f} |"
        for e in log["evals"]
    )
    rate = lambda key: "–" if metrics[key] is None else f"{metrics[key]:.3f}"  # noqa: E731
    card = CARD_TEMPLATE.format(
        parameters=f"{log['parameters'] / 1e6:.2f}M",
        hidden=config["hidden_size"],
        intermediate=config["intermediate_size"],
        layers=config["num_hidden_layers"],
        heads=config["num_attention_heads"],
        vocab=config["vocab_size"],
        n_train=args["n_train"],
        steps=args["steps"],
        batch_size=args["batch_size"],
        lr=args["lr"],
        prompt_weight=args["prompt_weight"],
        copy_weight=args["copy_weight"],
        copy_span=args["copy_span"],
        seed=args["seed"],
        minutes=log["train_seconds"] / 60,
        eval_every=args["eval_every"],
        eval_limit=args["eval_limit"],
        curve=curve,
        n=metrics["n"],
        call_accuracy=rate("call_accuracy"),
        name_accuracy=rate("name_accuracy"),
        json_valid_rate=rate("json_valid_rate"),
        schema_valid_rate=rate("schema_valid_rate"),
        relevance_accuracy=rate("relevance_accuracy"),
        output_valid_rate=rate("output_valid_rate"),
        eval_seconds=metrics["wall_seconds"],
    )
    (out / "README.md").write_text(card)


CARD_TEMPLATE = """---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags: [function-calling, llama, invoker, tiny]
---
# tiny-invoker

A {parameters}-parameter Llama-2-architecture model trained from scratch on CPU to speak
[Invoker](https://github.com/jeffrey-fong/Invoker)'s function-calling format. It is the default,
offline model of invoker-pack: small enough to ship in the repository and to quantize, evaluate and
serve in CI. It knows nothing but the synthetic function-calling conversations it was trained on;
its scores below say how well it calls functions it has never seen.

## Architecture
`LlamaForCausalLM`: hidden {hidden}, intermediate {intermediate} (both multiples of 256, as GGUF
k-quants and GPTQ/AWQ group 128 need), {layers} layers, {heads} heads of 64, vocabulary {vocab}
(sentencepiece BPE with byte fallback, Llama-2's trainer settings, trained on the training split),
fp16 safetensors, Invoker's chat template in `tokenizer_config.json` and `chat_template.jinja`.

## How it was made
`make tiny-invoker` (= `python models/tiny-invoker/train.py`), seeded (seed {seed}):
{n_train} conversations of the generator's `train` split (`invoker/data/synth.py`) rendered in
Invoker's prompt format; loss on the assistant's answer plus {prompt_weight} × the language-model
loss on the prompt, plus {copy_weight} × a repeat-a-random-{copy_span}-token-span task (it grows the
induction heads copying needs); {steps} steps of AdamW (batch {batch_size}, peak learning rate {lr}, warm-up then
cosine decay), bf16 autocast on CPU. Training took {minutes:.1f} minutes on 2 CPU cores.
Bit-identical reruns need the same CPU kind and library versions.

Learning curve (first {eval_limit} cases of the eval split, greedy, every {eval_every} steps):

| step | call accuracy | name accuracy | JSON valid | relevance |
| --- | --- | --- | --- | --- |
{curve}

## Scores
`invoker-pack eval models/tiny-invoker` — the synthetic eval split ({n} held-out conversations
whose functions and argument values never occur in training), greedy decoding:

| metric | value |
| --- | --- |
| call accuracy (right function and arguments) | {call_accuracy} |
| name accuracy (right function, or rightly no call) | {name_accuracy} |
| JSON-valid arguments | {json_valid_rate} |
| schema-valid arguments | {schema_valid_rate} |
| relevance (no call when nothing fits) | {relevance_accuracy} |
| parseable outputs | {output_valid_rate} |

Eval wall time: {eval_seconds:.0f} s on 2 CPU cores. Metric definitions: docs/EVAL.md.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).parent))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=40000)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--tokenizer-texts", type=int, default=20000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--prompt-weight", type=float, default=0.25)
    p.add_argument("--copy-weight", type=float, default=0.5, help="weight of the repeat-a-random-span task")
    p.add_argument("--copy-span", type=int, default=48)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=700)
    p.add_argument("--eval-limit", type=int, default=60)
    p.add_argument("--card-only", action="store_true", help="only evaluate the saved model and rewrite README.md")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if not arguments.card_only:
        train(arguments)
    write_model_card(out=Path(arguments.out), eval_limit=None)
