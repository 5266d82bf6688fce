"""The staged pipeline behind `invoker-pack quantize`: prepare → calibrate → shared bases → convert → eval →
fidelity → bench → gate → report.

Every stage is a function ``stage_<name>(ws, log)`` listed in ``STAGES``; each of its units of work is a
``pipelines.steps.Step`` (inputs hash + outputs fingerprint, one record under ``.pipeline/records``), skipped
when both are unchanged — the one skip rule. What depends on the format comes from its registry entry
(``convert.formats``): whether a variant calibrates, its shared base, its converter and tool versions, its
bits per weight for the gate. Variant dirs are built in a temp dir and renamed into place with their
complete manifest (``atomic_output_dir``), and manifests are rewritten atomically, so a run killed at any
point leaves either nothing or a finished variant. Adding a stage: a function here and a line in
``STAGES`` (docs/PIPELINE.md, "Stages").
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from convert.calibration import CalibrationSet, CalibrationSpec
from convert.formats import BASELINE, FORMATS
from invoker.files import atomic_output_dir, describe_files, link_or_copy, sha256_file, write_json_atomic
from invoker.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_weights, tool_versions, write_manifest
from pipelines.cluster import RayCluster, ray_cluster
from pipelines.eta import RunClock, expected_work
from pipelines.library_output import library_output_to
from pipelines.recipe import BenchSettings, GateSettings, Recipe, VariantSpec
from pipelines.steps import (
    STATE_DIR,
    RunLog,
    exclusive_run,
    file_stats,
    listed_files,
    manifest_fields,
    remove_stale_temps,
    step,
)
from pipelines.workspace import Workspace, run_per_dir

LOG_DIR = "logs"


# --- the whole run -----------------------------------------------------------------------------


def run_pipeline(*, recipe: Recipe, out_dir: Path, only: tuple[str, ...] | None = None, jobs: int = 1,
                 force: bool = False, progress: bool = True, ray: str | None = None) -> dict:
    """Run every stage of ``recipe`` into ``out_dir`` (``out/<model>``); returns the report's rows. ``ray``: the
    address of a Ray cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) that runs the per-variant jobs."""
    out_dir = Path(out_dir)
    variants = select_variants(recipe.variants, only=only)
    if ray is not None and jobs > 1:
        raise ValueError("--ray and --jobs N > 1 together: on a Ray cluster its resources decide how many jobs run "
                         "at once; drop --jobs")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir / LOG_DIR / f"quantize-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}.log")
    started = time.perf_counter()
    try:
        with exclusive_run(out_dir), library_output_to(log.path), ray_cluster(ray) as cluster:
            remove_stale_temps(out_dir)
            log.line(f"quantize {recipe.name}: recipe {recipe.path}, out {out_dir}, variants "
                     f"{', '.join(v.name for v in variants)}, jobs {jobs}{', force' if force else ''}")
            if cluster:
                log.line(cluster.describe())
            ws = prepare(recipe=recipe, variants=tuple(variants), out_dir=out_dir, force=force, jobs=jobs,
                         progress=progress, log=log, cluster=cluster)
            ws = replace(ws, clock=RunClock(expected_work(ws)))
            for stage in STAGES:
                stage(ws, log)
                ws.clock.stage_done(stage.__name__.removeprefix("stage_").replace("_", " "))
                if stage is not STAGES[-1]:
                    log.line(ws.clock.describe())
            log.line(f"quantize {recipe.name}: done in {time.perf_counter() - started:.1f} s; log {log.path}")
            return json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
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


# --- prepare: the source checkpoint --------------------------------------------------------------


def prepare(*, recipe: Recipe, variants: tuple[VariantSpec, ...], out_dir: Path, force: bool, jobs: int,
            progress: bool, log: RunLog, cluster: RayCluster | None = None) -> Workspace:
    """The source's local dir and its manifest record (sha256 of the weights, cached in ``.pipeline/source.json``
    by the files' sizes and mtimes, so a rerun does not rehash 26 GB)."""
    started = time.perf_counter()
    if recipe.source.path is not None:
        source_dir = recipe.source.path.resolve()
    else:  # needs the Hub (not exercised here)
        from huggingface_hub import snapshot_download

        source_dir = Path(snapshot_download(repo_id=recipe.source.hub, revision=recipe.source.revision))
    cache = out_dir / STATE_DIR / "source.json"
    stats = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(source_dir.iterdir()) if p.is_file()}
    prepared = step(out_dir, "prepare", inputs={"dir": str(source_dir), "stats": stats, "model": recipe.source.label},
                    outputs=lambda: file_stats(cache))
    if prepared.done(force=force):
        source = json.loads(cache.read_text(encoding="utf-8"))
    else:
        source = {"model": recipe.source.label, "sha256": sha256_weights(source_dir),
                  "parameters": count_parameters(source_dir)}
        if recipe.source.hub is not None:
            source["revision"] = source_dir.name  # the snapshot dir is named by the resolved commit
        write_json_atomic(cache, source)
        prepared.record_done()
    log.line(f"prepare: {source_dir} ({source['parameters'] or '?'} parameters, weights sha256 "
             f"{source['sha256'][:12]}) in {time.perf_counter() - started:.1f} s")
    return Workspace(recipe=recipe, variants=variants, source_dir=source_dir, out_dir=out_dir, source=source,
                     force=force, jobs=jobs, progress=progress, cluster=cluster)


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


def stage_calibrate(ws: Workspace, log: RunLog) -> None:
    """Build each calibration set the variants use, once, into ``.pipeline/calibration[@<set>].json``."""
    if not ws.calibration_sets:
        log.line("calibrate: no variant needs a calibration set")
        return
    tokenizer_files = {p.name: sha256_file(p) for p in sorted(ws.source_dir.iterdir())
                       if p.is_file() and p.name.startswith(("tokenizer", "special_tokens_map"))}
    for calibration_set in ws.calibration_sets:
        started = time.perf_counter()
        path, spec = ws.calibration_file(calibration_set), ws.recipe.calibration_spec(calibration_set)
        label = "calibrate" + (f" {calibration_set}" if calibration_set else "")
        calibrate = ws.step("calibrate", target=calibration_set, inputs={"spec": spec.to_dict(), "tokenizer": tokenizer_files},
                            outputs=lambda path=path: file_stats(path))
        if not ws.due(calibrate):
            calibration = load_calibration(path)
            log.line(f"{label}: up to date ({len(calibration.input_ids)} samples, sha256 {calibration.sha256[:12]})")
            continue
        from convert.calibration import build_calibration

        calibration = build_calibration(tokenizer_dir=ws.source_dir, spec=spec)
        write_json_atomic(path, {"spec": calibration.spec.to_dict(), "texts": calibration.texts,
                                 "input_ids": calibration.input_ids, "sha256": calibration.sha256})
        calibrate.record_done()
        log.line(f"{label}: {len(calibration.input_ids)} samples, {calibration.n_tokens} tokens, "
                 f"sha256 {calibration.sha256[:12]} in {time.perf_counter() - started:.1f} s")


def load_calibration(path: Path | None) -> CalibrationSet | None:
    if path is None:
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return CalibrationSet(spec=CalibrationSpec(**data["spec"]), texts=data["texts"],
                          input_ids=data["input_ids"], sha256=data["sha256"])


def calibration_sha(path: Path | None) -> str | None:
    return load_calibration(path).sha256 if path else None


# --- shared bases: what a format builds once for all its variants (GGUF: one F16 GGUF + one imatrix) --


def stage_shared_bases(ws: Workspace, log: RunLog) -> None:
    """``.pipeline/<format>-base[@<set>]/`` for each format (and calibration set) whose variants of this run
    reuse one (``build_shared``)."""
    bases = [(spec, calibration_set) for spec in FORMATS.values() for calibration_set in dict.fromkeys([None, *ws.calibration_sets])]
    for spec, calibration_set in bases:
        final = ws.shared_dir(spec, calibration_set)
        if final is None:
            continue
        started = time.perf_counter()
        calibrates = any(v.calibrates and v.calibration_set == calibration_set for v in ws.variants if v.format == spec.name)
        calibration_file = ws.calibration_file(calibration_set) if calibrates else None
        base = ws.step(final.name, inputs={"source": ws.source["sha256"], "name": ws.recipe.name,
                                           "tools": tool_versions(spec.tool_packages),
                                           "calibration": calibration_sha(calibration_file)},
                       outputs=lambda final=final: file_stats(final))
        if not ws.due(base):
            log.line(f"{final.name}: up to date")
            continue
        with atomic_output_dir(final) as tmp:
            spec.module().build_shared(source_dir=ws.source_dir, out_dir=tmp, model_name=ws.recipe.name,
                                       calibration=load_calibration(calibration_file), progress=ws.progress)
        base.record_done()
        log.line(f"{final.name}: built{' with the calibration set' if calibrates else ''} "
                 f"in {time.perf_counter() - started:.1f} s")


# --- convert ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertJob:
    """Everything one variant's conversion needs, picklable for a worker process or a Ray task
    (``pipelines.cluster.RemoteJob``: what it reads of the driver's disk, the dir it builds)."""

    READS: ClassVar[tuple[str, ...]] = ("source_dir", "calibration_file", "shared_dir")
    WRITES: ClassVar[str] = "final_dir"
    WHOLE_NODE: ClassVar[bool] = False

    variant: VariantSpec
    source_dir: Path
    final_dir: Path
    model_name: str
    source: dict
    calibration_file: Path | None
    shared_dir: Path | None
    progress: bool
    device: str | None = None  # the converter's device (``Workspace.convert_device``); None: it has no choice

    @property
    def wants_cuda(self) -> bool:
        return self.device == "cuda"


def stage_convert(ws: Workspace, log: RunLog) -> None:
    """fp16 (the source, linked) and every variant dir; finished ones whose inputs are unchanged are skipped."""
    fp16_built = build_fp16(ws)

    def inputs(final: Path) -> dict:
        variant = ws.variant_at(final)
        return {"source": ws.source["sha256"], "name": ws.recipe.name, "format": variant.format, "variant": variant.variant,
                "calibration": calibration_sha(ws.variant_calibration(variant)),
                "tools": tool_versions(variant.spec.tool_packages)}

    def job(final: Path) -> ConvertJob:
        variant = ws.variant_at(final)
        return ConvertJob(variant=variant, source_dir=ws.source_dir, final_dir=final, model_name=ws.recipe.name,
                          source=ws.source, progress=ws.job_progress, calibration_file=ws.variant_calibration(variant),
                          shared_dir=ws.shared_dir(variant.spec, variant.calibration_set if variant.calibrates else None),
                          device=ws.convert_device(variant.spec))

    run_per_dir(ws, log, "convert", dirs=ws.dirs[1:], inputs=inputs, outputs=listed_files,
                jobs=lambda finals: [job(final) for final in finals], work=convert_variant, at_once=ws.at_once,
                verb="built", also=(int(fp16_built), 1))


def build_fp16(ws: Workspace) -> bool:
    """``out/<model>/fp16``: the source's files hard-linked (copied across filesystems) + its manifest."""
    final = ws.baseline_dir
    convert = ws.step("convert", target=final.name, outputs=lambda: listed_files(final),
                      inputs={"source": ws.source["sha256"], "files": sorted(p.name for p in source_files(ws.source_dir))})
    if not ws.due(convert):
        return False
    with atomic_output_dir(final) as tmp:
        for path in source_files(ws.source_dir):
            link_or_copy(path.resolve(), tmp / path.name)
        write_manifest(tmp, new_manifest(fmt=BASELINE.name, variant=BASELINE.name, source=ws.source, calibration={},
                                         tools=tool_versions(BASELINE.tool_packages), files_dir=tmp, details={}))
    convert.record_done()
    return True


def source_files(source_dir: Path) -> list[Path]:
    return [p for p in sorted(source_dir.iterdir()) if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST_NAME]


def new_manifest(*, fmt: str, variant: str, source: dict, calibration: dict, tools: dict, files_dir: Path,
                 details: dict) -> Manifest:
    """A freshly built dir's manifest: not evaluated, not gated (so never verified) until those stages run."""
    return Manifest.from_dict({
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
    })


def convert_variant(job: ConvertJob) -> str:
    """Convert one variant into a temp dir and rename it into place with its manifest (in a worker or a Ray task)."""
    started = time.perf_counter()
    calibration = load_calibration(job.calibration_file)
    with atomic_output_dir(job.final_dir) as tmp:
        details = job.variant.spec.module().convert(
            source_dir=job.source_dir, out_dir=tmp, variant=job.variant.variant, calibration=calibration,
            progress=job.progress, model_name=job.model_name, shared_dir=job.shared_dir,
            **({} if job.device is None else {"device": job.device}))
        tools = details.pop("tools", {})
        write_manifest(tmp, new_manifest(fmt=job.variant.format, variant=job.variant.variant, source=job.source,
                                         calibration={**calibration.to_manifest(), "set": job.variant.calibration_set}
                                         if calibration else {}, tools=tools,
                                         files_dir=tmp, details=details))
    return f"{job.variant.dir_name}: converted in {time.perf_counter() - started:.1f} s"


# --- eval ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalJob:
    """One dir's eval; on a Ray task the dir is sent there and its rewritten manifest comes back."""

    READS: ClassVar[tuple[str, ...]] = ("variant_dir",)
    WRITES: ClassVar[str] = "variant_dir"
    WHOLE_NODE: ClassVar[bool] = False
    wants_cuda: ClassVar[bool] = False

    variant_dir: Path
    suites: dict[str, list[dict]]  # suite name -> its cases, loaded once by the driver
    max_tokens: int
    progress: bool


def stage_eval(ws: Workspace, log: RunLog) -> None:
    """Evaluate every dir through its runtime on the recipe's suites; results go into its manifest's ``eval``."""
    settings = ws.recipe.eval
    limits = {suite: settings.limit_for(suite) for suite in settings.suites}

    def jobs(variant_dirs: list[Path]) -> list[EvalJob]:  # each suite loaded once, here: a Ray task needs no suite file
        from pipelines.eval import load_suite

        suites = {suite: load_suite(suite, limit=limits[suite], seed=settings.seed) for suite in settings.suites}
        return [EvalJob(variant_dir=variant_dir, suites=suites, max_tokens=settings.max_tokens, progress=ws.job_progress)
                for variant_dir in variant_dirs]

    run_per_dir(ws, log, "eval", dirs=ws.dirs, outputs=lambda variant_dir: manifest_fields(variant_dir, ("eval",)),
                inputs=lambda variant_dir: {"files": load_manifest(variant_dir).to_dict()["files"],
                                            "suites": settings.suites, "limits": limits,
                                            "max_tokens": settings.max_tokens, "seed": settings.seed},
                jobs=jobs, work=eval_variant, at_once=ws.at_once, verb="evaluated", isolate=True)


def eval_variant(job: EvalJob) -> str:
    """Load one dir through ``load_runtime`` and evaluate it on each suite; rewrite its manifest."""
    from invoker.runtimes import GenerationParams, load_runtime
    from pipelines.eval import evaluate

    runtime = load_runtime(job.variant_dir)
    params = GenerationParams(temperature=0.0, max_tokens=job.max_tokens)
    results = {}
    for suite, records in job.suites.items():
        summary = evaluate(runtime=runtime, records=records, params=params, progress=job.progress)
        results[suite] = {"format": runtime.format, "runtime": runtime.runtime, "compute_dtype": runtime.compute_dtype,
                          "device": "cpu", "suite": suite, **summary}
    write_manifest(job.variant_dir, replace(load_manifest(job.variant_dir), eval=results, verified=False,  # a new
                                            gate={"reason": "not verified: eval changed, not gated yet"}))  # verdict is due
    first = next(iter(results.values()))
    return (f"{job.variant_dir.name}: {first['suite']} call {_fmt(first['call_accuracy'])} "
            f"name {_fmt(first['name_accuracy'])} json {_fmt(first['json_valid_rate'])} "
            f"({first['n']} cases, {first['wall_seconds']:.1f} s)")


# --- fidelity --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FidelityJob:
    """One variant's fidelity, in a worker process of this machine (the reference goes with it)."""

    variant_dir: Path
    reference: object  # pipelines.fidelity's reference: fp16's top-k log-probs
    about: dict  # the manifest's ``fidelity.reference``: suite, cases, top_k, the reference file's sha256


def stage_fidelity(ws: Workspace, log: RunLog) -> None:
    """Every variant's distance from fp16, token by token (``pipelines.fidelity``), on the first ``fidelity.limit``
    cases of the gated suite; fp16's top-k log-probs are computed once into ``.pipeline/fidelity/``."""
    from pipelines.eval import load_suite
    from pipelines.fidelity import load_or_build_reference

    settings = ws.recipe.fidelity
    records = load_suite(ws.recipe.gate_suite, limit=settings.limit, seed=ws.recipe.eval.seed)
    variant_dirs = ws.dirs[1:]
    if not variant_dirs:
        return
    reference, reference_file = load_or_build_reference(fp16_dir=ws.baseline_dir, records=records, top_k=settings.top_k,
                                                        cache_dir=ws.state_dir / "fidelity", progress=ws.progress)
    about = {"suite": ws.recipe.gate_suite, "cases": len(records), "top_k": settings.top_k,
             "sha256": sha256_file(reference_file)}
    run_per_dir(ws, log, "fidelity", dirs=variant_dirs, noun="variants", verb="measured", remote=False, isolate=True,
                outputs=lambda variant_dir: manifest_fields(variant_dir, ("fidelity",)),
                inputs=lambda variant_dir: {"files": load_manifest(variant_dir).to_dict()["files"], "reference": about},
                jobs=lambda dirs: [FidelityJob(variant_dir=d, reference=reference, about=about) for d in dirs],
                work=measure_fidelity)


def measure_fidelity(job: FidelityJob) -> str:
    """Score one variant against the reference; write its manifest's ``fidelity``."""
    summary = fidelity_of(job.variant_dir, reference=job.reference)
    write_manifest(job.variant_dir, replace(load_manifest(job.variant_dir), fidelity={"reference": job.about, **summary}))
    answer = summary["answer"]
    return (f"{job.variant_dir.name}: answer mean KLD {answer['mean_kl']:.5f}, 99% {answer['p99_kl']:.4f}, "
            f"top-1 {answer['top1_agreement']:.4f} ({summary['wall_seconds']:.1f} s)")


def fidelity_of(variant_dir: Path, *, reference) -> dict:
    from invoker.runtimes import load_runtime
    from pipelines.fidelity import score_variant

    started = time.perf_counter()
    summary = score_variant(runtime=load_runtime(variant_dir), reference=reference, progress=False)
    return {**summary, "wall_seconds": round(time.perf_counter() - started, 3)}


# --- bench -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchJob:
    """One dir's bench; on a Ray task it reserves a whole node (a measurement shares no CPU) and its GPU when a
    device is ``cuda``."""

    READS: ClassVar[tuple[str, ...]] = ("variant_dir",)
    WRITES: ClassVar[str] = "variant_dir"
    WHOLE_NODE: ClassVar[bool] = True

    variant_dir: Path
    settings: BenchSettings

    @property
    def wants_cuda(self) -> bool:
        return "cuda" in self.settings.devices


def stage_bench(ws: Workspace, log: RunLog) -> None:
    """Tokens/sec of every dir on each device, one at a time (never in parallel: they would share the CPUs)."""
    settings = ws.recipe.bench
    run_per_dir(ws, log, "bench", dirs=ws.dirs, outputs=lambda variant_dir: manifest_fields(variant_dir, ("bench",)),
                inputs=lambda variant_dir: {"files": load_manifest(variant_dir).to_dict()["files"],
                                            "settings": settings.__dict__},
                jobs=lambda dirs: [BenchJob(variant_dir=d, settings=settings) for d in dirs], work=bench_variant,
                verb="measured", isolate=True)


def bench_variant(job: BenchJob) -> str:
    """Bench one dir on each device of its settings; rewrite its manifest's ``bench``."""
    results = {device: bench_device(variant_dir=job.variant_dir, device=device, settings=job.settings)
               for device in job.settings.devices}
    write_manifest(job.variant_dir, replace(load_manifest(job.variant_dir), bench=results))
    return f"{job.variant_dir.name} " + "; ".join(
        f"on {device}: not measured ({result['error']})" if "error" in result else
        f"on {device}: prompt {result['prompt_tok_s']:.0f} tok/s, decode {_fmt(result['decode_tok_s'], digits=0)} tok/s "
        f"({result['threads']} threads)" for device, result in results.items())


def bench_device(*, variant_dir: Path, device: str, settings: BenchSettings) -> dict:
    """One device's bench result; a device that is absent (CUDA here) is recorded with the reason, not faked."""
    from invoker.runtimes import load_runtime
    from pipelines.bench import bench

    try:
        runtime = load_runtime(variant_dir, device=device)
    except (RuntimeError, ValueError) as err:
        if device == "cpu":
            raise
        return {"error": str(err)}
    return bench(runtime=runtime, prompt_tokens=settings.prompt_tokens, gen_tokens=settings.gen_tokens,
                 runs=settings.runs, warmup=settings.warmup, threads=settings.threads, progress=False)


# --- gate ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateJob:
    """One dir's verdict, in this process."""

    variant_dir: Path
    variant: VariantSpec  # its bits per weight pick the thresholds; ``release`` from the recipe
    baseline_dir: Path
    settings: GateSettings
    suite: str


def stage_gate(ws: Workspace, log: RunLog) -> None:
    """The verdict of every dir against fp16 (``pipelines.gate``) and whether it is for release (the recipe's
    ``compare_only``), written into its manifest with the reason. fp16 first: it is the baseline of the rest."""
    settings, suite = ws.recipe.gate, ws.recipe.gate_suite

    def inputs(variant_dir: Path) -> dict:
        manifest, baseline, variant = load_manifest(variant_dir), load_manifest(ws.baseline_dir), ws.variant_at(variant_dir)
        return {"eval": manifest.eval.get(suite), "baseline": baseline.eval.get(suite), "suite": suite,
                "failures": manifest.failures,
                "fidelity": manifest.fidelity.get("answer"), "settings": settings.to_dict(),
                "bits_per_weight": variant.bits_per_weight, "release": variant.release}

    def verified() -> str:
        return f"{sum(load_manifest(d).verified for d in ws.dirs)} of {len(ws.dirs)} verified"

    run_per_dir(ws, log, "gate", dirs=ws.dirs, inputs=inputs, verb="gated", remote=False, head=verified,
                outputs=lambda variant_dir: manifest_fields(variant_dir, ("verified", "gate", "release")),
                jobs=lambda dirs: [GateJob(variant_dir=d, variant=ws.variant_at(d), baseline_dir=ws.baseline_dir,
                                           settings=settings, suite=suite) for d in dirs], work=gate_dir)


def gate_dir(job: GateJob) -> str:
    """Gate one dir against fp16's manifest; write the verdict and ``release`` into its manifest."""
    from pipelines.gate import gate_variant

    manifest = load_manifest(job.variant_dir)
    verdict = gate_variant(manifest=manifest, baseline=load_manifest(job.baseline_dir), settings=job.settings,
                           suite=job.suite, bits_per_weight=job.variant.bits_per_weight)
    manifest = replace(manifest, verified=verdict.pop("verified"), gate=verdict, release=job.variant.release)
    write_manifest(job.variant_dir, manifest)
    return f"{job.variant_dir.name}: {manifest.gate_reason}"


# --- report ----------------------------------------------------------------------------------------


def stage_report(ws: Workspace, log: RunLog) -> None:
    """report.md, report.json and the plot from the manifests; skipped when no manifest and no output changed."""
    from pipelines.report import REPORT_FILES, variant_dirs, write_report

    started = time.perf_counter()
    report = ws.step("report", inputs={"manifests": {d.name: sha256_file(d / MANIFEST_NAME) for d in variant_dirs(ws.out_dir)}},
                     outputs=lambda: file_stats(*(ws.out_dir / name for name in REPORT_FILES)))
    if not ws.due(report):
        log.line("report: up to date")
        return
    rows = write_report(out_dir=ws.out_dir, variants=ws.targets)
    report.record_done()
    log.line(f"report: {ws.out_dir / 'report.md'}, report.json, accuracy_vs_size.png "
             f"({len(rows)} variants) in {time.perf_counter() - started:.1f} s")


STAGES = (stage_calibrate, stage_shared_bases, stage_convert, stage_eval, stage_fidelity, stage_bench, stage_gate,
          stage_report)


def _fmt(value: float | None, *, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
