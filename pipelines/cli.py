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
    for add_command in (add_eval_command, add_fidelity_command, add_bench_command, add_serve_command,
                        add_quantize_command, add_publish_command):
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
    parser.add_argument("--constrained", action="store_true",
                        help="decode under the server's schema-constrained answer grammar (docs/SERVER.md)")
    parser.add_argument("--verify", action="store_true",
                        help="refuse to evaluate when a file differs from its manifest.json (default: warn)")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from invoker.manifest import check_artifact
    from invoker.runtimes import GenerationParams, detect_format, load_runtime
    from pipelines.eval import evaluate, load_suite

    detect_format(args.path)  # a bad path fails before anything slow happens
    records = load_suite(args.suite, limit=args.limit, seed=args.seed)
    check_artifact(args.path, refuse=args.verify,  # what is evaluated is what the manifest describes
                   warn=lambda message: print(f"invoker-pack eval: warning: {message}", file=sys.stderr))
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
            constrained=args.constrained,
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


# --- fidelity ----------------------------------------------------------------------------------


def add_fidelity_command(commands) -> None:
    from pipelines.fidelity import TOP_K

    parser = commands.add_parser(
        "fidelity",
        help="how far a variant's next-token distributions are from fp16's (KL divergence, top-1 agreement)",
        description="Teacher-force the eval cases' reference answers through the variant's runtime and "
        "compare with fp16's stored top-k log-probs: mean and 99th-percentile KL divergence, top-1 "
        "agreement, change in the reference's log-likelihood; over answer and prompt positions (docs/EVAL.md).",
    )
    parser.add_argument("path", type=Path, help="variant dir (or .gguf file) to measure")
    parser.add_argument("--reference", type=Path, required=True, metavar="FP16_DIR",
                        help="the fp16 checkpoint; its top-k log-probs are computed once and kept in the cache "
                        "($INVOKER_CACHE/fidelity, default ~/.cache/invoker-pack/fidelity)")
    parser.add_argument("--suite", default="synthetic", metavar="NAME", help="eval suite whose cases are used (default: synthetic)")
    parser.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="first N cases (default: 100)")
    parser.add_argument("--top-k", type=_positive_int, default=TOP_K, help=f"fp16 log-probs kept per position (default: {TOP_K})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    parser.set_defaults(run=run_fidelity)


def run_fidelity(args: argparse.Namespace) -> int:
    from convert.formats import BASELINE
    from invoker.pretrained import cache_dir
    from invoker.runtimes import detect_format, load_runtime
    from pipelines.eval import load_suite
    from pipelines.fidelity import format_summary, load_or_build_reference, score_variant

    detect_format(args.path)
    if detect_format(args.reference) != BASELINE.name:
        raise ValueError(f"{args.reference}: the reference must be an fp16 checkpoint")
    records = load_suite(args.suite, limit=args.limit)
    reference, _ = load_or_build_reference(fp16_dir=args.reference, records=records, top_k=args.top_k,
                                           cache_dir=cache_dir() / "fidelity")
    summary = score_variant(runtime=load_runtime(args.path, device=args.device), reference=reference)
    result = {"model": str(args.path), "reference": str(args.reference), "suite": args.suite, **summary}
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(f"{args.path} vs {args.reference}: {summary['cases']} cases of {args.suite}, fp16 top-{summary['top_k']}")
        print(format_summary(summary))
    return 0


# --- bench -------------------------------------------------------------------------------------


def add_bench_command(commands) -> None:
    from pipelines.bench import DEFAULT_GEN_TOKENS, DEFAULT_PROMPT_TOKENS, DEFAULT_RUNS, DEFAULT_WARMUP

    parser = commands.add_parser(
        "bench",
        help="measure prompt-processing and decode tokens/sec through the serving runtime",
        description="Median tokens/sec over several runs after a warm-up, with threads, CPU model and "
        "library versions; for GGUF also the ratio to the memory-bandwidth limit (docs/BENCH.md).",
    )
    parser.add_argument("path", type=Path, help="model dir, artifact variant dir or .gguf file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--threads", type=_positive_int, help="CPU threads (default: the runtime's own default)")
    parser.add_argument("--prompt-tokens", type=_positive_int, default=DEFAULT_PROMPT_TOKENS,
                        help=f"prompt length in tokens (default: {DEFAULT_PROMPT_TOKENS})")
    parser.add_argument("--gen-tokens", type=_positive_int, default=DEFAULT_GEN_TOKENS,
                        help=f"tokens generated per run (default: {DEFAULT_GEN_TOKENS})")
    parser.add_argument("--runs", type=_positive_int, default=DEFAULT_RUNS, help=f"measured runs (default: {DEFAULT_RUNS})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help=f"unmeasured runs first (default: {DEFAULT_WARMUP})")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from invoker.runtimes import detect_format, load_runtime
    from pipelines.bench import bench

    detect_format(args.path)  # a bad path fails before anything slow happens
    runtime = load_runtime(args.path, device=args.device)
    result = bench(runtime=runtime, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                   runs=args.runs, warmup=args.warmup, threads=args.threads, progress=True)
    result = {"model": str(args.path), "device": args.device, **result}
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        _print_bench_table(result)
    return 0


def _print_bench_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']} ({result['format']}, {result['runtime']}, {result['device']}, "
                        f"{result['threads']} threads, {result['hardware']['cpu']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("prompt tokens/s", f"{result['prompt_tok_s']:.1f}  ({result['prompt_tokens']} tokens)")
    table.add_row("decode tokens/s", f"{result['decode_tok_s']:.1f}  ({result['gen_tokens']} tokens)")
    table.add_row("time to first token", f"{result['time_to_first_token_s']:.3f} s")
    if "memory_bandwidth" in result:
        bandwidth = result["memory_bandwidth"]
        table.add_row("copy bandwidth", f"{bandwidth['copy_bandwidth_gb_s']:.1f} GB/s")
        table.add_row("bandwidth limit", f"{bandwidth['limit_tok_s']:.1f} tokens/s ({bandwidth['bytes_per_token']} bytes/token)")
        table.add_row("decode / limit", f"{bandwidth['ratio']:.3f}")
    if "matmul_peak" in result:
        compute = result["matmul_peak"]
        table.add_row(f"matmul peak ({compute['dtype']})", f"{compute['peak_gflop_s']:.1f} GFLOP/s")
        table.add_row("compute limit", f"{compute['limit_tok_s']:.1f} tokens/s ({compute['flop_per_token']} FLOP/token)")
        table.add_row("prompt / limit", f"{compute['ratio']:.3f}")
    table.add_row("median of", f"{result['runs']} runs after {result['warmup']} warm-up")
    Console(file=sys.stdout).print(table)


# --- serve -------------------------------------------------------------------------------------


def add_serve_command(commands) -> None:
    from serve_minimal.run import add_serve_arguments

    parser = commands.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible API (chat completions, functions and tools)",
        description="Load any variant (fp16, GPTQ, AWQ, GGUF) through the serving runtime and answer "
        "OpenAI chat-completion requests on 127.0.0.1 unless told otherwise (docs/SERVER.md).",
    )
    add_serve_arguments(parser)
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from serve_minimal.run import serve

    return serve(args)


# --- publish -----------------------------------------------------------------------------------


def add_publish_command(commands) -> None:
    parser = commands.add_parser(
        "publish",
        help="upload the verified variants to the Hub, one repo per format, with generated model cards",
        description="For each verified variant of OUT_DIR: <ns>/<model>-GPTQ, -AWQ, -GGUF repos with a model "
        "card made from the manifests; sha256 re-checked before upload; nothing changed, no commit. "
        "Token: HF_TOKEN or `hf auth login` (docs/PUBLISH.md).",
    )
    parser.add_argument("out_dir", type=Path, help="the pipeline's output dir, e.g. out/tiny-invoker")
    parser.add_argument("--namespace", required=True, metavar="ORG", help="Hub user or organization to publish under")
    parser.add_argument("--dry-run", type=Path, metavar="DIR",
                        help="write the folders that would be uploaded and release.json into DIR; no network")
    parser.add_argument("--private", action="store_true", help="create new repos private (existing repos keep theirs)")
    parser.add_argument("--revision-message", metavar="TEXT",
                        help="extra text for each commit's description (the summary names version and source)")
    parser.add_argument("--base-model", metavar="ID",
                        help="the cards' base_model (default: the source's Hub id; <ORG>/<model> for a local source)")
    parser.add_argument("--license", metavar="ID", help="the cards' license (default: the source model card's)")
    parser.set_defaults(run=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    from pipelines.publish import publish

    publish(out_dir=args.out_dir, namespace=args.namespace, dry_run=args.dry_run, private=args.private,
            description=args.revision_message, base_model=args.base_model, license_id=args.license,
            log=print, warn=lambda line: print(f"invoker-pack publish: {line}", file=sys.stderr))
    return 0


# --- quantize ----------------------------------------------------------------------------------


def add_quantize_command(commands) -> None:
    from convert.formats import FORMATS

    parser = commands.add_parser(
        "quantize",
        help="build, evaluate, measure, benchmark and gate every variant of a recipe, then write the report",
        description="Run a recipe's stages (prepare, calibrate, <format>-base, convert, eval, fidelity, bench, gate, "
        "report) into "
        "out/<model>/; finished stages whose inputs are unchanged are skipped (docs/PIPELINE.md).",
    )
    parser.add_argument("--recipe", type=Path, default=Path("pipelines/recipes/tiny-invoker.toml"), metavar="PATH",
                        help="recipe file (default: pipelines/recipes/tiny-invoker.toml)")
    parser.add_argument("--model", metavar="PATH_OR_ID", help="replace the recipe's source: a local checkpoint dir or a Hub id")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output dir for this model (default: out/<recipe name>)")
    parser.add_argument("--only", type=_formats, metavar="FORMAT[,FORMAT]",
                        help=f"build only these formats ({', '.join(FORMATS)}); fp16 always")
    parser.add_argument("--jobs", type=_positive_int, default=1, metavar="N", help="convert/evaluate N variants in parallel processes (default: 1)")
    parser.add_argument("--force", action="store_true", help="redo every stage even when its inputs are unchanged")
    parser.add_argument("--ray", metavar="auto|ADDRESS",
                        help="run the convert, eval and bench jobs as tasks on a Ray cluster: 'auto' (the one `ray start` "
                        "began on this machine, or $RAY_ADDRESS), the head's HOST:PORT, or ray://HOST:PORT (Ray Client); "
                        "not with --jobs; needs the ray extra (docs/SCALE.md)")
    parser.set_defaults(run=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from pipelines.recipe import load_recipe
    from pipelines.stages import run_pipeline

    recipe = load_recipe(args.recipe, model=args.model)  # every recipe problem fails here, before any work
    rows = run_pipeline(recipe=recipe, out_dir=args.out or Path("out") / recipe.name, only=args.only,
                        jobs=args.jobs, force=args.force, progress=True, ray=args.ray)
    _print_report_table(rows, title=f"{recipe.name}: {args.out or Path('out') / recipe.name}")
    return 0


def _print_report_table(rows: dict, *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipelines.report import table_cells

    header, cells = table_cells(rows)
    table = Table(title=title)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index < 2 else "right")
    for line in cells:
        table.add_row(*line)
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200).print(table)


def _formats(text: str) -> tuple[str, ...]:
    from convert.formats import FORMATS

    formats = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if not formats or unknown:
        raise argparse.ArgumentTypeError(f"formats are {', '.join(FORMATS)} (comma-separated), got {text!r}")
    return formats


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
