"""The eval runner, suites and the ``invoker-pack eval`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from invoker.runtimes import Chunk, GenerationParams
from pipelines.cli import main
from pipelines.eval import SuiteError, evaluate, load_suite
from pipelines.metrics import RATE_KEYS

REPO = Path(__file__).resolve().parents[1]
GET_TIME = {
    "name": "get_time",
    "description": "Get the current time",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


def _record(i, kind, target):
    return {
        "id": f"case-{i}",
        "split": "eval",
        "kind": kind,
        "functions": [GET_TIME],
        "messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", **target}],
    }


RECORDS = [
    _record(0, "call", {"content": None, "function_call": {"name": "get_time", "arguments": '{"location": "Paris"}'}}),
    _record(1, "call", {"content": None, "function_call": {"name": "get_time", "arguments": '{"location": "Oslo"}'}}),
    _record(2, "no_call", {"content": "I can only tell the time."}),
]


class ScriptedRuntime:
    """A Runtime that answers with canned texts, in order, streamed in 3-character chunks."""

    format, runtime, model_path, context_length = "fp16", "scripted", Path("scripted"), 4096

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts = []

    def count_tokens(self, text):
        return len(text.split()) + 1

    def stream(self, prompt, params):
        self.prompts.append(prompt)
        answer = self.answers.pop(0)
        for start in range(0, len(answer), 3):
            yield Chunk(text=answer[start : start + 3])
        yield Chunk(text="", finish_reason="stop", prompt_tokens=self.count_tokens(prompt), completion_tokens=len(answer) // 3)


def test_evaluate_scores_what_the_runtime_says():
    runtime = ScriptedRuntime([
        ' ```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Paris\\"}"}}```',
        ' ```{"content": null, "function_call": {"name": "get_time", "arguments": "{\\"location\\": \\"Rome\\"}"}}```',
        "no json at all",
    ])
    cases = []
    summary = evaluate(runtime=runtime, records=RECORDS, progress=False, on_case=cases.append)
    assert summary["n"] == 3
    assert summary["name_accuracy"] == pytest.approx(2 / 3)
    assert summary["call_accuracy"] == pytest.approx(1 / 2)
    assert summary["json_valid_rate"] == summary["schema_valid_rate"] == 1.0
    assert summary["relevance_accuracy"] == 0.0
    assert summary["output_valid_rate"] == pytest.approx(2 / 3)
    assert summary["finish_reasons"] == {"stop": 3}
    assert summary["wall_seconds"] >= 0 and summary["seconds_per_case"] >= 0
    assert [c["id"] for c in cases] == ["case-0", "case-1", "case-2"]
    assert cases[2]["parsed"]["error"] == "no_json_block"
    json.dumps(cases)  # the details are JSON-ready
    assert runtime.prompts[0].startswith("Available Functions:\n```json\n{\"name\": \"get_time\"")
    assert runtime.prompts[0].endswith("USER: question 0\nASSISTANT:")


def test_evaluate_on_the_random_model(tiny_random_model):
    from invoker.runtimes import load_runtime

    summary = evaluate(
        runtime=load_runtime(tiny_random_model), records=RECORDS, params=GenerationParams(max_tokens=8), progress=False
    )
    assert summary["n"] == 3 and summary["completion_tokens"] <= 24
    for key in RATE_KEYS:
        assert summary[key] is None or 0.0 <= summary[key] <= 1.0


def test_unknown_suite_lists_the_choices():
    with pytest.raises(SuiteError, match="unknown suite 'bfcl'.*synthetic.*jsonl:PATH"):
        load_suite("bfcl")


def test_synthetic_suite_is_the_eval_split():
    records = load_suite("synthetic", limit=5)
    assert len(records) == 5
    assert {r["split"] for r in records} == {"eval"}
    assert load_suite("synthetic", limit=8)[:5] == records  # prefix-stable: --limit N is the first N


def test_jsonl_suite_reads_records(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    records = load_suite(f"jsonl:{path}", limit=2)
    assert [r["id"] for r in records] == ["case-0", "case-1"]


# --- CLI ---------------------------------------------------------------------------------------


@pytest.mark.e2e  # a subprocess: imports torch, loads the model, 5 prompts of ~900 tokens (~8 s on 2 idle cores)
def test_eval_json_is_one_object_with_every_key(tiny_random_model, tmp_path):
    details = tmp_path / "details.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "eval", str(tiny_random_model), "--limit", "5", "--json",
         "--max-tokens", "16", "--details", str(details)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)  # exactly one JSON document, nothing else on stdout
    for key in ("model", "suite", "n", *RATE_KEYS, "wall_seconds"):
        assert key in out, key
    assert (out["model"], out["suite"], out["n"]) == (str(tiny_random_model), "synthetic", 5)
    for key in RATE_KEYS:
        assert out[key] is None or 0.0 <= out[key] <= 1.0, key
    lines = details.read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["completion_tokens"] <= 16 for line in lines)


def test_eval_table_by_default(tiny_random_model, capsys):
    assert main(["eval", str(tiny_random_model), "--limit", "2", "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "name_accuracy" in out and "call_accuracy" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (lambda tmp, model: ["eval", str(tmp / "missing")], "no such file"),
        (lambda tmp, model: ["eval", str(tmp)], "not a model directory"),
        (lambda tmp, model: ["eval", str(model), "--suite", "bfcl"], "unknown suite 'bfcl'"),
        (lambda tmp, model: ["eval", str(model), "--suite", f"jsonl:{tmp / 'nope.jsonl'}"], "nope.jsonl"),
        (lambda tmp, model: ["eval", str(model), "--suite", f"jsonl:{_bad_jsonl(tmp)}"], "bad.jsonl:2"),
    ],
)
def test_eval_errors_exit_2_with_one_line(tmp_path, tiny_random_model, capsys, argv, message):
    assert main(argv(tmp_path, tiny_random_model)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invoker-pack eval: error:") and message in lines[0]


def _bad_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    return path


def test_bad_arguments_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "somewhere", "--limit", "0"])
    assert exit_info.value.code == 2
