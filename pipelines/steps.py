"""How the pipeline's stages run: the one skip rule, the run's lock and log, and where jobs run (``pipelines.workers``).

**The skip rule.** Every unit of work — a shared stage (calibrate, a format's shared base, the report)
or one dir of a per-variant stage (convert, eval, bench, gate) — is a ``Step``: the hash of its inputs,
and a function that fingerprints its outputs as they are now. When the work is done the step writes
its record, ``out/<model>/.pipeline/records/<stage>[/<dir>].json`` = ``{"inputs", "outputs"}``. A rerun
skips the step when the record's inputs hash equals the current one **and** its outputs fingerprint is
unchanged (``--force``: never skipped). Outputs are fingerprinted by ``file_stats`` (files and dirs:
size and mtime of each file) or ``manifest_fields`` (the sha256 of the manifest fields a stage wrote).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from invoker.files import sha256_text, write_json_atomic
from invoker.manifest import read_manifest
from pipelines.workers import run_isolated

STATE_DIR = ".pipeline"  # the run's state: lock, records, shared outputs (dot-named: never a variant)
RECORDS_DIR = "records"


def inputs_hash(inputs: dict) -> str:
    return sha256_text(json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str))


@dataclass(frozen=True)
class Step:
    """One unit of work and where its record lives; ``done`` is the pipeline's one skip rule."""

    record: Path
    inputs: str  # inputs_hash of everything the work depends on
    outputs: Callable[[], dict | None]  # the outputs' fingerprint now; None when an output is missing

    def done(self, *, force: bool = False) -> bool:
        if force:
            return False
        record = read_json_or_none(self.record)
        return bool(record) and record.get("inputs") == self.inputs and record.get("outputs") == self.outputs()

    def record_done(self) -> None:
        write_json_atomic(self.record, {"inputs": self.inputs, "outputs": self.outputs()})


def step(out_dir: Path, stage: str, *, target: str | None = None, inputs: dict, outputs: Callable[[], dict | None]) -> Step:
    """The step of ``stage`` (for the dir ``target`` in per-variant stages), its record under ``.pipeline/records``."""
    records = out_dir / STATE_DIR / RECORDS_DIR
    record = records / stage / f"{target}.json" if target else records / f"{stage}.json"
    return Step(record=record, inputs=inputs_hash(inputs), outputs=outputs)


def file_stats(*paths: Path, root: Path | None = None) -> dict | None:
    """``{name: [bytes, mtime_ns]}`` of the files ``paths`` name (a dir: every file below it, dot files left out),
    names relative to ``root`` (default: each path's parent); None if one of them is missing."""
    stats = {}
    for path in paths:
        if not path.exists():
            return None
        base = root or path.parent
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            name = file.relative_to(base).as_posix()
            if any(part.startswith(".") for part in file.relative_to(path if path.is_dir() else base).parts):
                continue
            stat = file.stat()
            stats[name] = [stat.st_size, stat.st_mtime_ns]
    return stats


def manifest_fields(variant_dir: Path, keys: tuple[str, ...]) -> dict | None:
    """The sha256 of each manifest field in ``keys`` (what a stage wrote there); None without a valid manifest."""
    manifest = read_manifest_or_none(variant_dir)
    if manifest is None:
        return None
    return {key: inputs_hash({key: manifest.get(key)}) for key in keys}


def listed_files(variant_dir: Path) -> dict | None:
    """Size and mtime of every file the dir's manifest lists (what a conversion wrote); None if one is missing."""
    manifest = read_manifest_or_none(variant_dir)
    if manifest is None:
        return None
    return file_stats(*(variant_dir / name for name in manifest["files"]), root=variant_dir)


def read_manifest_or_none(variant_dir: Path) -> dict | None:
    try:
        return read_manifest(variant_dir)
    except ValueError:
        return None


def read_json_or_none(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- the run: one at a time per out dir, logged ------------------------------------------------------


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


# --- worker processes, or tasks on a Ray cluster --------------------------------------------------------


def run_jobs(work: Callable, items: list, *, jobs_n: int | None, desc: str, progress: bool, log: RunLog,
             finished: Callable[[object], None] = lambda item: None, cluster=None, isolate: bool = False,
             failed: Callable[[object, str], None] | None = None, label: Callable[[object], str] = str,
             note: Callable[[], str] | None = None) -> int:
    """``work(item)`` for each item: in this process (jobs 1), in ``jobs_n`` worker processes
    (``pipelines.workers``; always there when ``isolate``), or as tasks on a Ray ``cluster``
    (``pipelines.cluster.RayCluster``; ``jobs_n`` at a time, None: as many as its resources allow).

    Each result (a one-line summary) is logged and ``finished(item)`` called (in this process: it records the
    step) as soon as its item is done, its outputs in place. A job whose worker process died (a native crash,
    an OOM kill) is logged as failed with the cause, naming ``label(item)``, and handed to ``failed``; the
    other jobs go on, and its step stays unrecorded, so a rerun retries it. ``note()``, when given, is appended to
    each job's line once the job is accounted for (the run's time left). Returns how many finished.
    """
    bar = tqdm(total=len(items), desc=desc, unit="variant", disable=not progress or not items, file=sys.stderr)
    ran = 0
    try:
        if cluster is not None:
            done = ((item, line, None) for line, item in cluster.run(work, items, at_once=jobs_n))
        elif isolate or (jobs_n > 1 and len(items) > 1):
            done = run_isolated(work, items, jobs_n=max(1, jobs_n or 1))
        else:
            done = ((item, work(item), None) for item in items)
        for item, line, cause in done:
            if cause is None:
                finished(item)
                log.line(f"  {line}{note() if note else ''}")
                ran += 1
            else:
                if failed is not None:
                    failed(item, cause)
                log.line(f"  {label(item)}: FAILED, its worker process died with {cause}; the other variants go on, "
                         f"a rerun retries this one{note() if note else ''}")
            bar.update()
        return ran
    finally:
        bar.close()
