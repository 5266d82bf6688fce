"""``invoker-pack``: a thin command line over the pipeline functions, one subcommand per verb.

Each verb is two small functions: ``add_<verb>_command(subparsers)`` declares its arguments and
``run_<verb>(args) -> int`` calls the library. Expected failures (bad path, not a model, bad suite or
data file, no CUDA) print one line on stderr and exit 2; nothing but results goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="invoker-pack",
        description="Quantize, verify, publish and serve Invoker function-calling models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (add_eval_command,):
        add_command(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"invoker-pack {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


# --- eval --------------------------------------------------------------------------------------


def add_eval_command(commands) -> None:
    from pipelines.eval import DEFAULT_MAX_TOKENS, SUITES

    parser = commands.add_parser(
        "eval",
        help="score a model's function calling (accuracy, JSON/schema validity, relevance)",
        description="Generate greedily through the serving runtime on an eval suite and score the "
        "function calls (metric definitions: docs/EVAL.md).",
    )
    parser.add_argument("path", type=Path, help="model dir (fp16, GPTQ, AWQ …) or artifact variant dir")
    parser.add_argument("--suite", default="synthetic", metavar="NAME", help=f"eval suite: {' | '.join(SUITES)} (default: synthetic)")
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N cases")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the synthetic suite (default: 0)")
    parser.add_argument("--max-tokens", type=_positive_int, default=DEFAULT_MAX_TOKENS, metavar="N",
                        help=f"token budget per answer (default: {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    parser.add_argument("--details", type=Path, metavar="FILE", help="write each case's prediction and verdicts as JSONL")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from invoker.runtimes import GenerationParams, detect_format, load_runtime
    from pipelines.eval import evaluate, load_suite

    detect_format(args.path)  # a bad path fails before anything slow happens
    records = load_suite(args.suite, limit=args.limit, seed=args.seed)
    runtime = load_runtime(args.path, device=args.device)
    params = GenerationParams(temperature=0.0, max_tokens=args.max_tokens)
    details = args.details.open("w", encoding="utf-8") if args.details else None
    try:
        summary = evaluate(
            runtime=runtime,
            records=records,
            params=params,
            progress=True,
            on_case=(lambda case: details.write(json.dumps(case, ensure_ascii=False) + "\n")) if details else None,
        )
    finally:
        if details:
            details.close()
    result = {
        "model": str(args.path),
        "format": runtime.format,
        "runtime": runtime.runtime,
        "device": args.device,
        "suite": args.suite,
        **summary,
    }
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        _print_eval_table(result)
    return 0


def _print_eval_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} ({result['format']}, {result['runtime']}) on {result['suite']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("over", justify="right")
    rows = [
        ("name_accuracy", "n"),
        ("call_accuracy", "n_expected_calls"),
        ("json_valid_rate", "n_attempted_calls"),
        ("schema_valid_rate", "n_attempted_calls"),
        ("relevance_accuracy", "n_no_call"),
        ("output_valid_rate", "n"),
    ]
    for key, over in rows:
        value = result[key]
        table.add_row(key, "—" if value is None else f"{value:.3f}", f"{result[over]} cases")
    table.add_row("wall_seconds", f"{result['wall_seconds']:.1f}", f"{result['seconds_per_case'] or 0:.3f} s/case")
    Console(file=sys.stdout).print(table)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
