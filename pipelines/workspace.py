"""What every stage of the pipeline works in and how a per-directory stage runs.

``Workspace``: the recipe and the variants of this run (typed: ``pipelines.recipe.VariantSpec``, fp16 first),
where the source is and where outputs go. ``run_per_dir``: the one skeleton of the stages that do something
per variant dir (convert, eval, fidelity, bench, gate) — a ``pipelines.steps.Step`` per dir, the due ones run as
jobs, each recorded as it lands, one summary line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from convert.formats import BASELINE, FormatSpec
from invoker.formats import get as artifact_format
from invoker.manifest import MANIFEST_NAME, load_manifest, write_manifest
from pipelines.cluster import RayCluster
from pipelines.eta import RunClock
from pipelines.recipe import Recipe, VariantSpec, baseline_variant
from pipelines.steps import STATE_DIR, RunLog, Step, run_jobs, step


@dataclass(frozen=True)
class Workspace:
    """What every stage needs: the recipe and the variants of this run, where the source is, where outputs go."""

    recipe: Recipe
    variants: tuple[VariantSpec, ...]  # the recipe's, or those of the formats --only names
    source_dir: Path
    out_dir: Path
    source: dict  # the manifest's ``source`` object
    force: bool = False
    jobs: int = 1
    progress: bool = True
    cluster: RayCluster | None = None  # --ray: the convert, eval and bench jobs run as tasks there
    clock: RunClock | None = None  # the whole run's time left (pipelines.eta)

    @property
    def at_once(self) -> int | None:
        """How many convert/eval jobs run at once: ``--jobs``; on a Ray cluster, as many as its resources allow."""
        return None if self.cluster else self.jobs

    @property
    def job_progress(self) -> bool:
        """Whether a job shows its own progress bars: only when it runs alone in this process."""
        return self.progress and self.jobs == 1 and self.cluster is None

    def convert_device(self, spec: FormatSpec) -> str | None:
        """The ``device`` of ``spec``'s converter: None for one without the choice (GGUF); else the recipe's
        ``convert.device``, which a Ray cluster settles by its GPUs (``RayCluster.convert_device``)."""
        if not spec.converts_on_cuda:
            return None
        device = self.recipe.convert.device
        return self.cluster.convert_device(device) if self.cluster else device

    @property
    def state_dir(self) -> Path:
        return self.out_dir / STATE_DIR

    @property
    def baseline_dir(self) -> Path:
        return self.out_dir / BASELINE.name

    @property
    def targets(self) -> tuple[VariantSpec, ...]:
        """Every variant the measuring stages go through, typed: fp16 (``baseline_variant``) first."""
        return (baseline_variant(), *self.variants)

    @property
    def dirs(self) -> list[Path]:
        """The dirs of ``targets``: fp16 first, then the variants."""
        return [self.out_dir / v.dir_name for v in self.targets]

    def variant_at(self, variant_dir: Path) -> VariantSpec:
        """The typed variant whose dir is ``variant_dir``."""
        return next(v for v in self.targets if self.out_dir / v.dir_name == variant_dir)

    @property
    def calibration_sets(self) -> list[str | None]:
        """The calibration sets this run's variants use: None for ``[calibration]``, else a ``[calibrations]`` name."""
        return list(dict.fromkeys(v.calibration_set for v in self.variants if v.calibrates))

    def calibration_file(self, calibration_set: str | None) -> Path:
        return self.state_dir / ("calibration.json" if calibration_set is None else f"calibration@{calibration_set}.json")

    def variant_calibration(self, variant: VariantSpec) -> Path | None:
        """The calibration file ``variant`` converts with (None if it uses none)."""
        return self.calibration_file(variant.calibration_set) if variant.calibrates else None

    def shared_dir(self, spec: FormatSpec, calibration_set: str | None = None) -> Path | None:
        """Where ``spec``'s shared base for ``calibration_set`` is, when variants of this run use one. A variant
        that calibrates on a named set has a base of its own; the others share the default one."""
        names = [v.variant for v in self.variants if v.format == spec.name
                 and (v.calibration_set if v.calibrates else None) == calibration_set]
        if not names or not spec.shared_base or not spec.module().shared_base_needed(names):
            return None
        return self.state_dir / (f"{spec.name}-base" + (f"@{calibration_set}" if calibration_set else ""))

    def step(self, stage: str, *, target: str | None = None, inputs: dict, outputs) -> Step:
        return step(self.out_dir, stage, target=target, inputs=inputs, outputs=outputs)

    def due(self, step_: Step) -> bool:
        return not step_.done(force=self.force)


def run_per_dir(ws: Workspace, log: RunLog, stage: str, *, dirs: list[Path], inputs: Callable[[Path], dict],
                outputs: Callable[[Path], dict | None], jobs: Callable[[list[Path]], list], work: Callable[[object], str],
                verb: str, noun: str = "dirs", at_once: int | None = 1, remote: bool = True, isolate: bool = False,
                also: tuple[int, int] = (0, 0), head: Callable[[], str] | None = None) -> int:
    """The one per-directory skeleton of convert, eval, fidelity, bench and gate: a ``Step`` per dir (the skip
    rule), the due dirs made into ``jobs`` and run ``at_once`` at a time (``run_jobs``: this process, worker
    processes or, when ``remote``, Ray tasks), each step recorded as its job lands, then one summary line:
    ``<stage>: <n> <noun>, <ran> <verb>, <rest> up to date, in <t> s``. ``also``: (done, dirs) handled outside the
    skeleton (convert's fp16); ``head`` replaces ``<n> <noun>``. ``isolate``: every job in a worker process, so a
    native crash fails that dir alone (recorded in its manifest's ``failures``, retried by the next run).
    Returns how many jobs finished."""
    started = time.perf_counter()
    steps = {}
    for target in dirs:
        unit = ws.step(stage, target=target.name, inputs=inputs(target), outputs=lambda target=target: outputs(target))
        if ws.due(unit):
            steps[target] = unit
    if ws.clock:
        ws.clock.skipped(stage, [target.name for target in dirs if target not in steps])
    todo = jobs(list(steps)) if steps else []
    records = {id(job): (target, unit) for job, (target, unit) in zip(todo, steps.items())}

    def label(job) -> str:
        return f"{records[id(job)][0].name} ({runtime_of(ws, records[id(job)][0])} runtime)"

    def finished(job) -> None:
        target, unit = records[id(job)]
        if ws.clock:
            ws.clock.done(stage, target.name)
        if isolate:  # only isolated stages record failures; a success clears its own
            note_failure(target, stage=stage, cause=None)
        unit.record_done()

    def failed(job, cause: str) -> None:
        target = records[id(job)][0]
        if ws.clock:
            ws.clock.done(stage, target.name)
        note_failure(target, stage=stage, cause=f"the {runtime_of(ws, target)} runtime's process died with {cause}")

    finished_n = run_jobs(work, todo, jobs_n=at_once, desc=stage, progress=ws.progress, log=log,
                          cluster=ws.cluster if remote else None, finished=finished, isolate=isolate, failed=failed,
                          label=label, note=(lambda: f" ({ws.clock.describe()})") if ws.clock else None)
    ran, total = finished_n + also[0], len(dirs) + also[1]
    log.line(f"{stage}: {head() if head else f'{total} {noun}'}, {ran} {verb}, {total - ran} up to date, "
             f"in {time.perf_counter() - started:.1f} s")
    return finished_n


def runtime_of(ws: Workspace, variant_dir: Path) -> str:
    """The runtime that loads the variant in ``variant_dir`` (``invoker.formats``)."""
    return artifact_format(ws.variant_at(variant_dir).format).runtime


def note_failure(variant_dir: Path, *, stage: str, cause: str | None) -> None:
    """Record in the variant's manifest that ``stage``'s process died on it (``cause``), or clear that record
    (None): the gate refuses a variant with a recorded failure and the report shows it."""
    manifest = load_manifest(variant_dir) if (variant_dir / MANIFEST_NAME).exists() else None
    if manifest is None or manifest.failures.get(stage) == cause:
        return
    failures = {key: value for key, value in manifest.failures.items() if key != stage}
    write_manifest(variant_dir, replace(manifest, failures={**failures, **({stage: cause} if cause else {})}))
