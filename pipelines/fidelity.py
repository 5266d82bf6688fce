"""How far a quantized variant's predictions are from fp16's, token by token, on function-calling text.

Teacher forcing: each eval case's prompt followed by its *reference* answer (the expected call or
text) is fed to a model in one pass, and the model's next-token distribution is read at every
position. fp16 does this once (``build_reference``) and keeps, per position, its top ``k`` log-probs
and the log-prob it gave the token that actually comes next; each variant is then scored against
that (``score_variant``) through its own runtime — the one that serves it:

- mean KL divergence KL(fp16 ‖ variant) and its 99th percentile (top-k + rest bucket, a lower
  bound on the full divergence: ``pipelines.stats``), as llama.cpp's ``--kl-divergence`` reports;
- top-1 agreement: the variant's most likely next token is fp16's;
- Δ log-likelihood: the change in the log-prob of the reference tokens, per token (negative = the
  variant finds the right answer less likely than fp16 does).

Answer positions (those predicting the reference answer's tokens) and prompt positions are
reported separately: the answer is what function calling depends on; the prompt shows the
quantization error on ordinary text (schemas, requests).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from invoker.prompt import render_prompt
from pipelines.stats import percentile, topk_kl_rows

TOP_K = 32


class FidelityError(ValueError):
    """The reference and the variant cannot be compared (different vocabulary or cases)."""


@dataclass
class Reference:
    """fp16's view of each case: token ids, where the answer starts, top-k log-probs and the
    log-prob of each actual next token (row ``t`` predicts ``ids[t + 1]``)."""

    case_ids: list[str]
    ids: list[np.ndarray]  # [T] int32 per case
    answer_start: list[int]  # index of the first answer token in ids
    top_ids: list[np.ndarray]  # [T - 1, k] int32
    top_logprobs: list[np.ndarray]  # [T - 1, k] float32
    next_logprob: list[np.ndarray]  # [T - 1] float32
    vocab_size: int

    def save(self, path: Path) -> Path:
        arrays = {"vocab_size": np.array(self.vocab_size), "case_ids": np.array(self.case_ids),
                  "answer_start": np.array(self.answer_start, dtype=np.int64)}
        for index in range(len(self.case_ids)):
            arrays[f"ids_{index}"] = self.ids[index]
            arrays[f"top_ids_{index}"] = self.top_ids[index]
            arrays[f"top_logprobs_{index}"] = self.top_logprobs[index]
            arrays[f"next_logprob_{index}"] = self.next_logprob[index]
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> "Reference":
        with np.load(path) as data:
            n = len(data["case_ids"])
            return cls(
                case_ids=[str(c) for c in data["case_ids"]],
                ids=[data[f"ids_{i}"] for i in range(n)],
                answer_start=[int(s) for s in data["answer_start"]],
                top_ids=[data[f"top_ids_{i}"] for i in range(n)],
                top_logprobs=[data[f"top_logprobs_{i}"] for i in range(n)],
                next_logprob=[data[f"next_logprob_{i}"] for i in range(n)],
                vocab_size=int(data["vocab_size"]),
            )


def case_ids(runtime, record: dict) -> tuple[list[int], int]:
    """(token ids of prompt + reference answer, index where the answer starts), as ``runtime`` encodes them."""
    messages = record["messages"]
    functions = record.get("functions") or None
    prompt = render_prompt(messages[:-1], functions=functions)
    full = render_prompt(messages, functions=functions, add_generation_prompt=False)
    prompt_ids, full_ids = runtime.encode(prompt), runtime.encode(full)
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    if start >= len(full_ids):
        raise FidelityError(f"case {record.get('id')!r}: the reference answer adds no tokens")
    return full_ids, max(start, 1)


def build_reference(*, runtime, records: list[dict], top_k: int = TOP_K, progress: bool = True) -> Reference:
    """Teacher-force every case through the fp16 ``runtime`` and keep what scoring a variant needs."""
    reference = Reference(case_ids=[], ids=[], answer_start=[], top_ids=[], top_logprobs=[], next_logprob=[], vocab_size=0)
    for record in tqdm(records, desc="fidelity reference", unit="case", disable=not progress, file=sys.stderr):
        ids, start = case_ids(runtime, record)
        logprobs = runtime.logprobs(ids)[:-1]
        reference.vocab_size = logprobs.shape[1]
        top = np.argpartition(-logprobs, top_k - 1, axis=1)[:, :top_k]
        reference.case_ids.append(str(record.get("id")))
        reference.ids.append(np.asarray(ids, dtype=np.int32))
        reference.answer_start.append(start)
        reference.top_ids.append(top.astype(np.int32))
        reference.top_logprobs.append(np.take_along_axis(logprobs, top, axis=1).astype(np.float32))
        reference.next_logprob.append(logprobs[np.arange(len(ids) - 1), ids[1:]].astype(np.float32))
    return reference


def score_variant(*, runtime, reference: Reference, progress: bool = True) -> dict:
    """The variant's divergence from the reference, over answer positions and over prompt positions."""
    parts: dict[str, dict[str, list]] = {"answer": {"kl": [], "agree": [], "dll": []}, "prompt": {"kl": [], "agree": [], "dll": []}}
    per_case_answer_dll = []
    for index in tqdm(range(len(reference.case_ids)), desc="fidelity", unit="case", disable=not progress, file=sys.stderr):
        ids = reference.ids[index].tolist()
        logprobs = runtime.logprobs(ids)[:-1]
        if logprobs.shape[1] != reference.vocab_size:
            raise FidelityError(f"vocabulary of {logprobs.shape[1]} tokens, the reference has {reference.vocab_size}")
        kl = topk_kl_rows(reference.top_ids[index], reference.top_logprobs[index], logprobs)
        best = reference.top_ids[index][np.arange(len(kl)), reference.top_logprobs[index].argmax(axis=1)]
        agree = logprobs.argmax(axis=1) == best
        dll = logprobs[np.arange(len(ids) - 1), ids[1:]] - reference.next_logprob[index]
        answer = np.arange(len(kl)) >= reference.answer_start[index] - 1  # row t predicts ids[t + 1]
        for name, mask in (("answer", answer), ("prompt", ~answer)):
            parts[name]["kl"].extend(kl[mask].tolist())
            parts[name]["agree"].extend(agree[mask].tolist())
            parts[name]["dll"].extend(dll[mask].tolist())
        per_case_answer_dll.append(float(dll[answer].sum()))
    summary = {"cases": len(reference.case_ids), "top_k": int(reference.top_ids[0].shape[1]) if reference.top_ids else 0}
    for name, values in parts.items():
        summary[name] = _summarize(values)
    summary["answer"]["delta_loglik_per_case"] = float(np.mean(per_case_answer_dll)) if per_case_answer_dll else None
    return summary


def _summarize(values: dict[str, list]) -> dict:
    if not values["kl"]:
        return {"positions": 0, "mean_kl": None, "p99_kl": None, "top1_agreement": None, "delta_loglik_per_token": None}
    return {
        "positions": len(values["kl"]),
        "mean_kl": float(np.mean(values["kl"])),
        "p99_kl": float(percentile(values["kl"], 99)),
        "top1_agreement": float(np.mean(values["agree"])),
        "delta_loglik_per_token": float(np.mean(values["dll"])),
    }


def reference_key(*, fp16_dir: Path, records: list[dict], top_k: int) -> str:
    """What a stored reference depends on: fp16's weights, the cases (ids and content) and ``top_k``."""
    from invoker.files import sha256_text
    from invoker.manifest import sha256_weights

    cases = sha256_text(json.dumps(records, sort_keys=True, ensure_ascii=True))
    return sha256_text(f"{sha256_weights(fp16_dir)} {cases} {top_k}")


def load_or_build_reference(*, fp16_dir: Path, records: list[dict], cache_dir: Path, top_k: int = TOP_K,
                            progress: bool = True) -> tuple[Reference, Path]:
    """fp16's reference for ``records`` and the file it is kept in under ``cache_dir``, built when absent;
    the file name carries ``reference_key``, so changed weights or cases never reuse a stale one."""
    from invoker.files import atomic_file
    from invoker.runtimes import load_runtime

    path = Path(cache_dir) / f"reference-{reference_key(fp16_dir=fp16_dir, records=records, top_k=top_k)[:20]}.npz"
    if path.exists():
        return Reference.load(path), path
    reference = build_reference(runtime=load_runtime(fp16_dir), records=records, top_k=top_k, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temp:
        reference.save(temp)
    return reference, path


def format_summary(summary: dict) -> str:
    rows = []
    for name in ("answer", "prompt"):
        part = summary[name]
        if part["positions"]:
            rows.append(f"{name:7s} positions {part['positions']:6d}  mean KLD {part['mean_kl']:.5f}  "
                        f"99% KLD {part['p99_kl']:.4f}  top-1 {part['top1_agreement']:.4f}  "
                        f"Δ loglik/token {part['delta_loglik_per_token']:+.5f}")
    return "\n".join(rows)

