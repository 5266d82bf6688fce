"""The staged pipeline behind `invoker-pack quantize`: prepare → calibrate → convert → eval → bench → gate → report.

Every stage records the hash of its inputs beside its outputs (a variant's manifest ``pipeline``
key, or ``out/<model>/.pipeline/<stage>.json``); a rerun skips a stage whose inputs hash is the
same and whose outputs are still there unchanged (size and mtime). Variant dirs are built in a temp
dir and renamed into place with their complete manifest (``atomic_output_dir``), and manifests are
rewritten atomically, so a run killed at any point leaves either nothing or a finished variant.
Layout, rules and the report: docs/PIPELINE.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from convert.calibration import CalibrationSet, CalibrationSpec
from invoker.files import atomic_output_dir, describe_files, sha256_file, sha256_text, write_json_atomic
from invoker.manifest import MANIFEST_NAME, read_manifest, sha256_weights, tool_versions, write_manifest
from pipelines.recipe import Recipe, VariantSpec

STATE_DIR = ".pipeline"  # per-run state: lock, source/calibration/gguf-base records (dot-named: never a variant)
LOG_DIR = "logs"
FP16_DIR = "fp16"
FP16_TOOLS = ("torch", "transformers", "safetensors")
CALIBRATION_USERS = ("gptq", "awq")  # formats that always calibrate; GGUF only for imatrix types


class RunLog:
    """One log file per run (``out/<model>/logs/quantize-<UTC time>.log``); lines also go to stderr."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def line(self, text: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
        self._file.write(f"{stamp} {text}\n")
        self._file.flush()
        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class Workspace:
    """What every stage needs: the recipe, where the source is, where outputs go, and how to run."""

    recipe: Recipe
    source_dir: Path
    out_dir: Path
    source: dict  # the manifest's ``source`` object
    force: bool = False
    jobs: int = 1
    progress: bool = True

    @property
    def state_dir(self) -> Path:
        return self.out_dir / STATE_DIR


# --- the whole run -----------------------------------------------------------------------------


def run_pipeline(
    *,
    recipe: Recipe,
    out_dir: Path,
    only: tuple[str, ...] | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Run every stage of ``recipe`` into ``out_dir`` (``out/<model>``); returns the report's rows."""
    from pipelines.report import write_report

    out_dir = Path(out_dir)
    variants = select_variants(recipe.variants, only=only)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir / LOG_DIR / f"quantize-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}.log")
    started = time.perf_counter()
    try:
        with exclusive_run(out_dir):
            remove_stale_temps(out_dir)
            log.line(f"quantize {recipe.name}: recipe {recipe.path}, out {out_dir}, variants "
                     f"{', '.join(v.name for v in variants)}, jobs {jobs}{', force' if force else ''}")
            step = time.perf_counter()
            source_dir = prepare_source(recipe=recipe)
            source = source_record(recipe=recipe, source_dir=source_dir, state_dir=out_dir / STATE_DIR, force=force)
            log.line(f"prepare: {source_dir} ({source['parameters'] or '?'} parameters, weights sha256 "
                     f"{source['sha256'][:12]}) in {time.perf_counter() - step:.1f} s")
            ws = Workspace(recipe=recipe, source_dir=source_dir, out_dir=out_dir, source=source,
                           force=force, jobs=jobs, progress=progress)
            calibration_file = stage_calibrate(ws, variants=variants, log=log)
            base = stage_gguf_base(ws, variants=variants, calibration_file=calibration_file, log=log)
            stage_convert(ws, variants=variants, calibration_file=calibration_file, gguf_base=base, log=log)
            dirs = [out_dir / FP16_DIR] + [out_dir / v.dir_name for v in variants]
            stage_eval(ws, dirs=dirs, log=log)
            stage_bench(ws, dirs=dirs, log=log)
            stage_gate(ws, dirs=dirs, variants=variants, log=log)
            rows = stage_report(ws, log=log, write=write_report)
            log.line(f"quantize {recipe.name}: done in {time.perf_counter() - started:.1f} s; log {log.path}")
            return rows
    except BaseException as err:
        log.line(f"quantize {recipe.name}: failed after {time.perf_counter() - started:.1f} s: {err!r}")
        raise
    finally:
        log.close()


def select_variants(variants: tuple[VariantSpec, ...], *, only: tuple[str, ...] | None) -> list[VariantSpec]:
    """The recipe's variants, or those of the formats in ``only`` (``--only gguf,gptq``)."""
    if not only:
        return list(variants)
    known = sorted({v.format for v in variants})
    for fmt in only:
        if fmt not in known:
            raise ValueError(f"--only: {fmt!r} is not a format of this recipe's variants ({', '.join(known)})")
    return [v for v in variants if v.format in only]


@contextlib.contextmanager
def exclusive_run(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.pipeline/lock`` for the run: two runs on one out dir would remove each other's temp dirs."""
    lock_path = out_dir / STATE_DIR / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{out_dir}: another `invoker-pack quantize` run is using this directory") from None
        yield


def remove_stale_temps(out_dir: Path) -> list[Path]:
    """Remove what a killed run left: ``atomic_output_dir``'s ``.<name>.tmp-*`` / ``.<name>.old-*`` dirs."""
    stale = [p for root in (out_dir, out_dir / STATE_DIR) if root.is_dir() for p in root.iterdir()
             if p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return stale


def inputs_hash(inputs: dict) -> str:
    return sha256_text(json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str))


def file_stats(directory: Path, *, exclude: tuple[str, ...] = (MANIFEST_NAME,)) -> dict[str, list[int]]:
    """``{relative name: [bytes, mtime_ns]}`` of the files a dir holds (``exclude`` and dot files left out)."""
    stats = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name in exclude or any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        stat = path.stat()
        stats[name] = [stat.st_size, stat.st_mtime_ns]
    return stats


def read_manifest_or_none(variant_dir: Path) -> dict | None:
    try:
        return read_manifest(variant_dir)
    except ValueError:
        return None


def is_current(manifest: dict | None, *, stage: str, inputs: str) -> bool:
    return bool(manifest) and (manifest.get("pipeline") or {}).get(stage, {}).get("inputs") == inputs


# --- prepare: the source checkpoint --------------------------------------------------------------


def prepare_source(*, recipe: Recipe) -> Path:
    """The local dir of the source: ``source.path`` as is, or the Hub snapshot at the pinned revision."""
    if recipe.source.path is not None:
        return recipe.source.path.resolve()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=recipe.source.hub, revision=recipe.source.revision))


def source_record(*, recipe: Recipe, source_dir: Path, state_dir: Path, force: bool) -> dict:
    """The manifest's ``source``: model, revision, sha256 of the weights, parameter count (cached by file stats)."""
    stats = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(source_dir.iterdir()) if p.is_file()}
    key = inputs_hash({"dir": str(source_dir), "stats": stats})
    cache = state_dir / "source.json"
    cached = _read_json_or_none(cache)
    if cached and cached.get("inputs") == key and not force:
        return cached["source"]
    source = {"model": recipe.source.label, "sha256": sha256_weights(source_dir), "parameters": count_parameters(source_dir)}
    if recipe.source.hub is not None:
        source["revision"] = source_dir.name  # the snapshot dir is named by the resolved commit
    write_json_atomic(cache, {"inputs": key, "source": source})
    return source


def count_parameters(model_dir: Path) -> int | None:
    """Parameters of a safetensors checkpoint, from the shards' headers (no tensor is read); None without safetensors."""
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        return None
    total = 0
    for shard in shards:
        with shard.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


# --- calibrate -------------------------------------------------------------------------------------


def needs_calibration(variant: VariantSpec) -> bool:
    if variant.format in CALIBRATION_USERS:
        return True
    from convert.gguf import parse_variant

    return parse_variant(variant.variant)[1]


def stage_calibrate(ws: Workspace, *, variants: list[VariantSpec], log: RunLog) -> Path | None:
    """Build the calibration set once (if any variant uses one) into ``.pipeline/calibration.json``."""
    started = time.perf_counter()
    if not any(needs_calibration(v) for v in variants):
        log.line("calibrate: no variant needs a calibration set")
        return None
    path = ws.state_dir / "calibration.json"
    tokenizer_files = {p.name: sha256_file(p) for p in sorted(ws.source_dir.iterdir())
                       if p.is_file() and p.name.startswith(("tokenizer", "special_tokens_map"))}
    key = inputs_hash({"spec": ws.recipe.calibration.to_dict(), "tokenizer": tokenizer_files})
    cached = _read_json_or_none(path)
    if cached and cached.get("inputs") == key and not ws.force:
        log.line(f"calibrate: up to date ({len(cached['input_ids'])} samples, sha256 {cached['sha256'][:12]})")
        return path
    from convert.calibration import build_calibration

    calibration = build_calibration(tokenizer_dir=ws.source_dir, spec=ws.recipe.calibration)
    write_json_atomic(path, {"inputs": key, "spec": calibration.spec.to_dict(), "texts": calibration.texts,
                             "input_ids": calibration.input_ids, "sha256": calibration.sha256})
    log.line(f"calibrate: {len(calibration.input_ids)} samples, {calibration.n_tokens} tokens, "
             f"sha256 {calibration.sha256[:12]} in {time.perf_counter() - started:.1f} s")
    return path


def load_calibration(path: Path | None) -> CalibrationSet | None:
    if path is None:
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return CalibrationSet(spec=CalibrationSpec(**data["spec"]), texts=data["texts"],
                          input_ids=data["input_ids"], sha256=data["sha256"])


# --- the shared GGUF base: one F16 GGUF and one importance matrix for every GGUF variant ----------


@dataclass(frozen=True)
class GgufBase:
    f16_gguf: Path | None
    imatrix_gguf: Path | None


def stage_gguf_base(ws: Workspace, *, variants: list[VariantSpec], calibration_file: Path | None, log: RunLog) -> GgufBase:
    """``.pipeline/gguf-base/``: the F16 GGUF every quantized GGUF starts from, and the imatrix they share."""
    from convert import gguf

    quantized = [v for v in variants if v.format == "gguf" and gguf.parse_variant(v.variant)[0] != "F16"]
    if not quantized:
        return GgufBase(f16_gguf=None, imatrix_gguf=None)
    started = time.perf_counter()
    use_imatrix = any(gguf.parse_variant(v.variant)[1] for v in quantized)
    calibration = load_calibration(calibration_file) if use_imatrix else None
    final = ws.state_dir / "gguf-base"
    f16_name = f"{ws.recipe.name}-F16.gguf"
    key = inputs_hash({"source": ws.source["sha256"], "name": ws.recipe.name, "tools": gguf.tool_versions(),
                       "calibration": calibration.sha256 if calibration else None})
    record = _read_json_or_none(final / "record.json")
    current = (record and record.get("inputs") == key and not ws.force
               and record.get("stats") == file_stats(final, exclude=("record.json",)))
    if not current:
        with atomic_output_dir(final) as tmp:
            converter = gguf.fetch_converter()
            gguf.convert_to_f16(source_dir=ws.source_dir, out_file=tmp / f16_name, model_name=ws.recipe.name,
                                converter_dir=converter, progress=ws.progress)
            if calibration is not None:
                imatrix = gguf.compute_imatrix(source_dir=ws.source_dir, calibration=calibration, progress=ws.progress)
                gguf.write_imatrix(imatrix, tmp / gguf.IMATRIX_NAME, dataset=gguf.calibration_label(calibration), arch="llama")
            write_json_atomic(tmp / "record.json", {"inputs": key, "stats": file_stats(tmp, exclude=("record.json",))})
        log.line(f"gguf-base: F16 GGUF{' + imatrix' if calibration else ''} in {time.perf_counter() - started:.1f} s")
    else:
        log.line("gguf-base: up to date")
    imatrix_path = final / gguf.IMATRIX_NAME
    return GgufBase(f16_gguf=final / f16_name, imatrix_gguf=imatrix_path if imatrix_path.is_file() else None)


# --- convert ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertJob:
    """Everything one variant's conversion needs, picklable for a worker process."""

    variant: VariantSpec
    source_dir: Path
    final_dir: Path
    model_name: str
    source: dict
    calibration_file: Path | None
    f16_gguf: Path | None
    imatrix_gguf: Path | None
    inputs: str
    progress: bool


def convert_inputs(ws: Workspace, *, variant: VariantSpec, calibration_sha: str | None) -> str:
    return inputs_hash({"source": ws.source["sha256"], "name": ws.recipe.name, "format": variant.format,
                        "variant": variant.variant, "calibration": calibration_sha if needs_calibration(variant) else None,
                        "tools": format_tools(variant.format)})


def format_tools(fmt: str) -> dict:
    if fmt == "gguf":
        from convert.gguf import tool_versions as gguf_tools

        return gguf_tools()
    if fmt == "fp16":
        return tool_versions(FP16_TOOLS)
    module = __import__(f"convert.{fmt}", fromlist=["TOOL_PACKAGES"])
    return tool_versions(module.TOOL_PACKAGES)


def stage_convert(ws: Workspace, *, variants: list[VariantSpec], calibration_file: Path | None,
                  gguf_base: GgufBase, log: RunLog) -> None:
    """fp16 (the source, linked) and every variant dir; finished ones whose inputs are unchanged are skipped."""
    started = time.perf_counter()
    calibration_sha = json.loads(calibration_file.read_text())["sha256"] if calibration_file else None
    fp16_built = build_fp16(ws)
    jobs = []
    for variant in variants:
        final = ws.out_dir / variant.dir_name
        inputs = convert_inputs(ws, variant=variant, calibration_sha=calibration_sha)
        manifest = read_manifest_or_none(final)
        if not ws.force and is_current(manifest, stage="convert", inputs=inputs) \
                and manifest["pipeline"]["convert"].get("stats") == file_stats(final):
            continue
        jobs.append(ConvertJob(variant=variant, source_dir=ws.source_dir, final_dir=final, model_name=ws.recipe.name,
                               source=ws.source, calibration_file=calibration_file if needs_calibration(variant) else None,
                               f16_gguf=gguf_base.f16_gguf, imatrix_gguf=gguf_base.imatrix_gguf, inputs=inputs,
                               progress=ws.progress and ws.jobs == 1))
    run_jobs(convert_variant, jobs, jobs_n=ws.jobs, desc="convert", progress=ws.progress, log=log)
    log.line(f"convert: {len(variants) + 1} dirs, {len(jobs) + fp16_built} built, "
             f"{len(variants) - len(jobs) + (not fp16_built)} up to date, in {time.perf_counter() - started:.1f} s")


def build_fp16(ws: Workspace) -> bool:
    """``out/<model>/fp16``: the source's files hard-linked (copied across filesystems) + its manifest."""
    final = ws.out_dir / FP16_DIR
    inputs = inputs_hash({"source": ws.source["sha256"], "files": sorted(p.name for p in source_files(ws.source_dir))})
    manifest = read_manifest_or_none(final)
    if not ws.force and is_current(manifest, stage="convert", inputs=inputs) \
            and manifest["pipeline"]["convert"].get("stats") == file_stats(final):
        return False
    with atomic_output_dir(final) as tmp:
        for path in source_files(ws.source_dir):
            link_or_copy(path.resolve(), tmp / path.name)
        write_manifest(tmp, new_manifest(fmt="fp16", variant="fp16", source=ws.source, calibration={},
                                         tools=tool_versions(FP16_TOOLS), files_dir=tmp, details={}, inputs=inputs))
    return True


def source_files(source_dir: Path) -> list[Path]:
    return [p for p in sorted(source_dir.iterdir()) if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_NAME]


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def new_manifest(*, fmt: str, variant: str, source: dict, calibration: dict, tools: dict, files_dir: Path,
                 details: dict, inputs: str) -> dict:
    """A freshly built dir's manifest: not evaluated, not gated (so never verified) until those stages run."""
    return {
        "format": fmt,
        "variant": variant,
        "source": source,
        "calibration": calibration,
        "tools": tools,
        "files": describe_files(files_dir),
        "eval": {},
        "bench": {},
        "verified": False,
        "gate": {"reason": "not verified: not gated yet"},
        "conversion": details,
        "pipeline": {"convert": {"inputs": inputs, "stats": file_stats(files_dir)}},
    }


def convert_variant(job: ConvertJob) -> str:
    """Convert one variant into a temp dir and rename it into place with its manifest (runs in a worker)."""
    import importlib

    started = time.perf_counter()
    calibration = load_calibration(job.calibration_file)
    module = importlib.import_module(f"convert.{job.variant.format}")
    extra = {}
    if job.variant.format == "gguf":
        extra = {"model_name": job.model_name, "f16_gguf": job.f16_gguf, "imatrix_gguf": job.imatrix_gguf}
    with atomic_output_dir(job.final_dir) as tmp:
        details = module.convert(source_dir=job.source_dir, out_dir=tmp, variant=job.variant.variant,
                                 calibration=calibration, progress=job.progress, **extra)
        tools = details.pop("tools", {})
        write_manifest(tmp, new_manifest(fmt=job.variant.format, variant=job.variant.variant, source=job.source,
                                         calibration=calibration.to_manifest() if calibration else {}, tools=tools,
                                         files_dir=tmp, details=details, inputs=job.inputs))
    return f"{job.variant.dir_name}: converted in {time.perf_counter() - started:.1f} s"


def run_jobs(work: Callable, items: list, *, jobs_n: int, desc: str, progress: bool, log: RunLog) -> int:
    """``work(item)`` for each item, in this process (jobs 1) or in ``jobs_n`` worker processes.

    Each result (a one-line summary) is logged as soon as its item finishes; returns how many ran.
    """
    bar = tqdm(total=len(items), desc=desc, unit="variant", disable=not progress or not items, file=sys.stderr)
    try:
        if jobs_n <= 1 or len(items) <= 1:
            for item in items:
                log.line(f"  {work(item)}")
                bar.update()
            return len(items)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs_n, mp_context=context, initializer=init_worker, initargs=(jobs_n,)) as pool:
            for future in as_completed([pool.submit(work, item) for item in items]):
                log.line(f"  {future.result()}")
                bar.update()
        return len(items)
    finally:
        bar.close()


def init_worker(jobs_n: int) -> None:
    """A worker dies with the run (Linux ``PR_SET_PDEATHSIG``) and shares the CPUs with the other workers."""
    import ctypes
    import signal

    import torch

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs_n))


# --- eval ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalJob:
    variant_dir: Path
    suites: tuple[str, ...]
    limit: int | None
    max_tokens: int
    seed: int
    inputs: str
    progress: bool


def stage_eval(ws: Workspace, *, dirs: list[Path], log: RunLog) -> None:
    """Evaluate every dir through its runtime on the recipe's suites; results go into its manifest's ``eval``."""
    started = time.perf_counter()
    settings = ws.recipe.eval
    jobs = []
    for variant_dir in dirs:
        manifest = read_manifest(variant_dir)
        inputs = inputs_hash({"files": manifest["files"], "suites": settings.suites, "limit": settings.limit,
                              "max_tokens": settings.max_tokens, "seed": settings.seed})
        if ws.force or not is_current(manifest, stage="eval", inputs=inputs):
            jobs.append(EvalJob(variant_dir=variant_dir, suites=settings.suites, limit=settings.limit,
                                max_tokens=settings.max_tokens, seed=settings.seed, inputs=inputs,
                                progress=ws.progress and ws.jobs == 1))
    run_jobs(eval_variant, jobs, jobs_n=ws.jobs, desc="eval", progress=ws.progress, log=log)
    log.line(f"eval: {len(dirs)} dirs, {len(jobs)} evaluated, {len(dirs) - len(jobs)} up to date, "
             f"in {time.perf_counter() - started:.1f} s")


def eval_variant(job: EvalJob) -> str:
    """Load one dir through ``load_runtime`` and evaluate it on each suite; rewrite its manifest."""
    from invoker.runtimes import GenerationParams, load_runtime
    from pipelines.eval import evaluate, load_suite

    runtime = load_runtime(job.variant_dir)
    params = GenerationParams(temperature=0.0, max_tokens=job.max_tokens)
    results = {}
    for suite in job.suites:
        records = load_suite(suite, limit=job.limit, seed=job.seed)
        summary = evaluate(runtime=runtime, records=records, params=params, progress=job.progress)
        results[suite] = {"format": runtime.format, "runtime": runtime.runtime, "device": "cpu", "suite": suite, **summary}
    manifest = read_manifest(job.variant_dir)
    manifest["eval"] = results
    manifest["verified"] = False  # a new eval needs a new verdict
    manifest["gate"] = {"reason": "not verified: eval changed, not gated yet"}
    manifest.setdefault("pipeline", {})["eval"] = {"inputs": job.inputs}
    write_manifest(job.variant_dir, manifest)
    first = results[job.suites[0]]
    return (f"{job.variant_dir.name}: {first['suite']} call {_fmt(first['call_accuracy'])} "
            f"name {_fmt(first['name_accuracy'])} json {_fmt(first['json_valid_rate'])} "
            f"({first['n']} cases, {first['wall_seconds']:.1f} s)")


# --- bench -----------------------------------------------------------------------------------------


def stage_bench(ws: Workspace, *, dirs: list[Path], log: RunLog) -> None:
    """Tokens/sec of every dir on each device, one at a time (never in parallel: they would share the CPUs)."""
    started = time.perf_counter()
    settings = ws.recipe.bench
    measured = 0
    bar = tqdm(dirs, desc="bench", unit="variant", disable=not ws.progress, file=sys.stderr)
    for variant_dir in bar:
        manifest = read_manifest(variant_dir)
        inputs = inputs_hash({"files": manifest["files"], "settings": settings.__dict__})
        if not ws.force and is_current(manifest, stage="bench", inputs=inputs):
            continue
        results = {device: bench_device(variant_dir=variant_dir, device=device, ws=ws) for device in settings.devices}
        manifest = read_manifest(variant_dir)
        manifest["bench"] = results
        manifest.setdefault("pipeline", {})["bench"] = {"inputs": inputs}
        write_manifest(variant_dir, manifest)
        measured += 1
        for device, result in results.items():
            if "error" in result:
                log.line(f"  {variant_dir.name} on {device}: not measured ({result['error']})")
            else:
                log.line(f"  {variant_dir.name} on {device}: prompt {result['prompt_tok_s']:.0f} tok/s, "
                         f"decode {_fmt(result['decode_tok_s'], digits=0)} tok/s ({result['threads']} threads)")
    log.line(f"bench: {len(dirs)} dirs, {measured} measured, {len(dirs) - measured} up to date, "
             f"in {time.perf_counter() - started:.1f} s")


def bench_device(*, variant_dir: Path, device: str, ws: Workspace) -> dict:
    """One device's bench result; a device that is absent (CUDA here) is recorded with the reason, not faked."""
    from invoker.runtimes import load_runtime
    from pipelines.bench import bench

    settings = ws.recipe.bench
    try:
        runtime = load_runtime(variant_dir, device=device)
    except (RuntimeError, ValueError) as err:
        if device == "cpu":
            raise
        return {"error": str(err)}
    return bench(runtime=runtime, prompt_tokens=settings.prompt_tokens, gen_tokens=settings.gen_tokens,
                 runs=settings.runs, warmup=settings.warmup, threads=settings.threads, progress=False)


# --- gate ------------------------------------------------------------------------------------------


def stage_gate(ws: Workspace, *, dirs: list[Path], variants: list[VariantSpec], log: RunLog) -> None:
    """The verdict of every dir against fp16 (``pipelines.gate``), written into its manifest with the reason."""
    from pipelines.gate import gate_variant

    started = time.perf_counter()
    bits = {ws.out_dir / v.dir_name: v.bits for v in variants} | {ws.out_dir / FP16_DIR: 16}
    baseline = read_manifest(ws.out_dir / FP16_DIR)
    suite = ws.recipe.gate_suite
    verified = changed = 0
    for variant_dir in dirs:
        manifest = read_manifest(variant_dir)
        inputs = inputs_hash({"eval": manifest["eval"].get(suite), "baseline": baseline["eval"].get(suite),
                              "settings": ws.recipe.gate.to_dict(), "suite": suite, "bits": bits[variant_dir]})
        if ws.force or not is_current(manifest, stage="gate", inputs=inputs):
            verdict = gate_variant(manifest=manifest, baseline=baseline, settings=ws.recipe.gate,
                                   suite=suite, bits=bits[variant_dir])
            manifest["verified"] = verdict.pop("verified")
            manifest["gate"] = verdict
            manifest.setdefault("pipeline", {})["gate"] = {"inputs": inputs}
            write_manifest(variant_dir, manifest)
            changed += 1
            log.line(f"  {variant_dir.name}: {manifest['gate']['reason']}")
            if variant_dir.name == FP16_DIR:
                baseline = manifest
        verified += manifest["verified"]
    log.line(f"gate: {verified} of {len(dirs)} verified, {changed} gated, {len(dirs) - changed} up to date, "
             f"in {time.perf_counter() - started:.1f} s")


# --- report ----------------------------------------------------------------------------------------


def stage_report(ws: Workspace, *, log: RunLog, write: Callable) -> dict:
    """report.md, report.json and the plot from the manifests; skipped when no manifest and no output changed."""
    from pipelines.report import REPORT_FILES, variant_dirs

    started = time.perf_counter()
    manifests = {d.name: sha256_file(d / MANIFEST_NAME) for d in variant_dirs(ws.out_dir)}
    key = inputs_hash({"manifests": manifests, "suite": ws.recipe.gate_suite})
    record_path = ws.state_dir / "report.json"
    record = _read_json_or_none(record_path)
    outputs = {name: [p.stat().st_size, p.stat().st_mtime_ns] for name in REPORT_FILES
               if (p := ws.out_dir / name).is_file()}
    if not ws.force and record and record.get("inputs") == key and record.get("outputs") == outputs:
        log.line("report: up to date")
        return json.loads((ws.out_dir / "report.json").read_text(encoding="utf-8"))
    rows = write(out_dir=ws.out_dir, suite=ws.recipe.gate_suite)
    outputs = {name: [p.stat().st_size, p.stat().st_mtime_ns] for name in REPORT_FILES if (p := ws.out_dir / name).is_file()}
    write_json_atomic(record_path, {"inputs": key, "outputs": outputs})
    log.line(f"report: {ws.out_dir / 'report.md'}, report.json, accuracy_vs_size.png "
             f"({len(rows)} variants) in {time.perf_counter() - started:.1f} s")
    return rows


def _read_json_or_none(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(value: float | None, *, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
