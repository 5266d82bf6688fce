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
SYNTHETIC_EVAL_SIZE = 300
SUITES = ("synthetic", "jsonl:PATH", *BFCL_SUITES)


class SuiteError(ValueError):
    """An unknown suite name."""


def load_suite(name: str, *, limit: int | None = None, seed: int = 0) -> list[dict]:
    """The eval records of a suite: ``synthetic`` (the generator's eval split), ``jsonl:PATH``, or
    ``bfcl:simple|multiple|irrelevance[@DATA_DIR]`` (BFCL's data, ``pipelines/bfcl.py``).

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
) -> dict:
    """Score ``runtime`` on ``records``; returns the metric summary plus timings and token totals.

    ``on_case`` receives each case's prediction and verdicts as a JSON-ready dict (for ``--details``).
    ``constrained`` decodes under the server's answer grammar (``invoker.constrain``, tool choice auto).
    """
    scores, finish_reasons = [], Counter()
    prompt_tokens = completion_tokens = 0
    started = time.perf_counter()
    for record in tqdm(records, desc="eval", unit="case", disable=not progress, file=sys.stderr):
        case, score = predict_case(runtime=runtime, record=record, params=params, constrained=constrained)
        scores.append(score)
        finish_reasons[case["finish_reason"]] += 1
        prompt_tokens += case["prompt_tokens"]
        completion_tokens += case["completion_tokens"]
        if on_case is not None:
            on_case(case)
    wall_seconds = time.perf_counter() - started
    return {
        **summarize(scores),
        "wall_seconds": round(wall_seconds, 3),
        "seconds_per_case": round(wall_seconds / len(records), 4) if records else None,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "finish_reasons": dict(sorted(finish_reasons.items())),
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
        "constrained": constrained,
    }


def predict_case(
    *, runtime: Runtime, record: dict, params: GenerationParams, constrained: bool = False
) -> tuple[dict, CaseScore]:
    """One case: prompt -> generation -> parsed completion -> verdicts (as a JSON-ready dict, and scored)."""
    functions = record.get("functions") or None
    if constrained:
        params = dataclasses.replace(params, grammar=answer_grammar(validate_functions(functions or [])).grammar)
    started = time.perf_counter()
    try:
        prompt = render_prompt(record["messages"][:-1], functions=functions)
        generation = generate(runtime, prompt, params)
    except ValueError as err:  # e.g. a prompt longer than the context: say which case
        raise ValueError(f"case {record.get('id')!r}: {err}") from None
    seconds = time.perf_counter() - started
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
