"""Function-calling eval: render each case's prompt, generate through the runtime, parse, score.

The runtime is the same one the server uses (``invoker.runtimes.load_runtime``), so an eval score is
a score of what is served. Metric definitions: docs/EVAL.md and ``pipelines/metrics.py``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from invoker.data.loaders import load_conversations
from invoker.data.synth import generate_conversations
from invoker.constrain import answer_grammar
from invoker.functions import validate_functions
from invoker.parse import parse_completion
from invoker.prompt import render_prompt
from invoker.runtimes import GenerationParams, Runtime, generate
from pipelines.bfcl import SUITES as BFCL_SUITES, load_bfcl_suite, parse_suite_name
from pipelines.metrics import CaseScore, score_case, summarize

DEFAULT_MAX_TOKENS = 256
EVAL_BATCH_SIZE = 8
SYNTHETIC_EVAL_SIZE = 300
SUITES = ("synthetic", "jsonl:PATH", *BFCL_SUITES)


class SuiteError(ValueError):
    """An unknown suite name."""


def load_suite(name: str, *, limit: int | None = None, seed: int = 0) -> list[dict]:
    """The eval records of a suite: ``synthetic`` (the generator's eval split), ``jsonl:PATH``, or
    ``bfcl:CATEGORY[@DATA_DIR]`` (BFCL's data, ``pipelines/bfcl.py``: simple, multiple, irrelevance and
    their live_ counterparts).

    ``limit`` keeps the first ``limit`` cases; ``synthetic`` has 300 unless ``limit`` says otherwise
    (the generator is prefix-stable: n=5 gives the first 5 of n=300).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if name == "synthetic":
        return generate_conversations(split="eval", n=limit or SYNTHETIC_EVAL_SIZE, seed=seed)
    if name.startswith("jsonl:") and name != "jsonl:":
        return load_conversations(Path(name[len("jsonl:") :]), limit=limit)
    if name.startswith("bfcl:"):
        category, data_dir = parse_suite_name(name)
        return load_bfcl_suite(category, data_dir=data_dir, limit=limit)
    raise SuiteError(f"unknown suite {name!r}; choose one of: {', '.join(SUITES)}")


def evaluate(
    *,
    runtime: Runtime,
    records: list[dict],
    params: GenerationParams = GenerationParams(temperature=0.0, max_tokens=DEFAULT_MAX_TOKENS),
    progress: bool = True,
    on_case: Callable[[dict], None] | None = None,
    constrained: bool = False,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict:
    """Score ``runtime`` on ``records``; returns the metric summary plus timings and token totals.

    ``on_case`` receives each case's prediction and verdicts as a JSON-ready dict (for ``--details``),
    in the records' order. ``constrained`` decodes under the server's answer grammar
    (``invoker.constrain``, tool choice auto). A runtime with ``generate_batch`` (transformers,
    llama.cpp) decodes ``batch_size`` cases of similar prompt length together; the others go one by one.
    """
    cases: list[tuple[dict, CaseScore] | None] = [None] * len(records)
    started = time.perf_counter()
    with tqdm(total=len(records), desc="eval", unit="case", disable=not progress, file=sys.stderr) as bar:
        for group in _batches(runtime=runtime, records=records, batch_size=batch_size, batched=not constrained):
            for index, result in zip(group, predict_cases(runtime=runtime, records=[records[i] for i in group],
                                                          params=params, constrained=constrained)):
                cases[index] = result
            bar.update(len(group))
    wall_seconds = time.perf_counter() - started
    finish_reasons = Counter(case["finish_reason"] for case, _ in cases)
    if on_case is not None:
        for case, _ in cases:
            on_case(case)
    return {
        **summarize([score for _, score in cases]),
        "wall_seconds": round(wall_seconds, 3),
        "seconds_per_case": round(wall_seconds / len(records), 4) if records else None,
        "prompt_tokens": sum(case["prompt_tokens"] for case, _ in cases),
        "completion_tokens": sum(case["completion_tokens"] for case, _ in cases),
        "finish_reasons": dict(sorted(finish_reasons.items())),
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
        "constrained": constrained,
    }


def _batches(*, runtime: Runtime, records: list[dict], batch_size: int, batched: bool) -> list[list[int]]:
    """Groups of record indices: by similar prompt length when the runtime batches, else one each."""
    if not (batched and batch_size > 1 and hasattr(runtime, "generate_batch")):
        return [[index] for index in range(len(records))]
    order = sorted(range(len(records)), key=lambda i: len(_prompt(records[i])))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _prompt(record: dict) -> str:
    try:
        return render_prompt(record["messages"][:-1], functions=record.get("functions") or None)
    except ValueError as err:
        raise ValueError(f"case {record.get('id')!r}: {err}") from None


def predict_cases(*, runtime: Runtime, records: list[dict], params: GenerationParams, constrained: bool = False) -> list[tuple[dict, CaseScore]]:
    """``predict_case`` for several records; a runtime with ``generate_batch`` decodes them together."""
    if len(records) == 1 or constrained or not hasattr(runtime, "generate_batch"):
        return [predict_case(runtime=runtime, record=record, params=params, constrained=constrained) for record in records]
    started = time.perf_counter()
    generations = runtime.generate_batch([_prompt(record) for record in records], params)
    seconds = (time.perf_counter() - started) / len(records)
    return [_scored(record, generation, seconds) for record, generation in zip(records, generations)]


def predict_case(
    *, runtime: Runtime, record: dict, params: GenerationParams, constrained: bool = False
) -> tuple[dict, CaseScore]:
    """One case: prompt -> generation -> parsed completion -> verdicts (as a JSON-ready dict, and scored)."""
    functions = record.get("functions") or None
    prompt, prefill = _prompt(record), ""
    if constrained:  # as the server does: the answer's opening prefilled, the grammar for the rest
        answer = answer_grammar(validate_functions(functions or []))
        params, prefill = dataclasses.replace(params, grammar=answer.grammar), answer.prefill
    started = time.perf_counter()
    try:
        generation = generate(runtime, prompt + prefill, params)
    except ValueError as err:  # e.g. a prompt longer than the context: say which case
        raise ValueError(f"case {record.get('id')!r}: {err}") from None
    generation = dataclasses.replace(generation, text=prefill + generation.text)
    return _scored(record, generation, time.perf_counter() - started)


def _scored(record: dict, generation, seconds: float) -> tuple[dict, CaseScore]:
    """The case dict (prediction and verdicts) and its score."""
    functions = record.get("functions") or None
    parsed = parse_completion(generation.text, functions=functions)
    score = score_case(record, parsed)
    case = {
        "id": record.get("id"),
        "kind": record.get("kind"),
        "expected": record["messages"][-1],
        "completion": generation.text,
        "finish_reason": generation.finish_reason,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "seconds": round(seconds, 4),
        "parsed": {
            "kind": parsed.kind,
            "name": parsed.name,
            "arguments": parsed.arguments,
            "content": parsed.content,
            "error": parsed.error,
            "detail": parsed.detail,
        },
        "score": score.to_dict(),
    }
    return case, score
