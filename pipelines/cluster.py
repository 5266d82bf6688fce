"""`invoker-pack quantize --ray`: the per-variant jobs (convert, eval, bench) as tasks on a Ray cluster (docs/SCALE.md).

A task may run on a machine whose disk the driver cannot see, so nothing goes through a shared filesystem.
A job (``RemoteJob``) names the paths of the driver's disk it reads and the dir it writes. The driver puts
each file it reads into Ray's object store once per run, by content (``RayCluster.ship``), so a checkpoint
crosses the network at most once per node. The task copies each file it lacks into the node's cache
(``$INVOKER_RAY_CACHE``, default ``<cache>/ray``: ``files/<sha256>``, fetched once per node under a lock and
checked against its hash), hard-links them under their own names into a scratch dir, and runs the same
work function a local run does on those paths. The dir it wrote comes back as a tar — a built dir whole, an
updated dir (eval, bench) with only the files the work wrote (its manifest) — and the driver unpacks it
beside the final dir and renames it into place (``land``), as a local run does: nothing half-written ever
appears in out/. A task whose worker or node dies is run again (``MAX_RETRIES``); one that raises is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import math
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from invoker.files import atomic_file, atomic_output_dir, link_or_copy, sha256_file

RAY_INSTALL = "pip install 'invoker-pack[ray]' (`make setup` installs it: ray is among its EXTRAS)"
MAX_RETRIES = 3  # runs of a task after the first when its worker process or its node dies
CACHE_ENV = "INVOKER_RAY_CACHE"


class RemoteJob(Protocol):
    """What ``RayCluster.run`` needs of a job (``pipelines.stages.ConvertJob``, ``EvalJob``, ``BenchJob``)."""

    READS: ClassVar[tuple[str, ...]]  # its Path fields the work reads (None: not used): sent to the task's node
    WRITES: ClassVar[str]  # its Path field of the dir the work writes: built whole, or updated if it is also read
    WHOLE_NODE: ClassVar[bool]  # a measurement: the task reserves every CPU of a node
    wants_cuda: bool  # the task reserves a GPU (when the cluster has one)


@dataclass(frozen=True)
class Shipment:
    """A file or dir of the driver's disk as objects in Ray's object store, one object per distinct content."""

    name: str  # the path's own name, kept on the worker (llama.cpp's converter reads the source dir's name)
    is_dir: bool
    files: tuple[tuple[str, str, object], ...]  # (path relative to the dir, "" for a file; sha256; ObjectRef)


@contextlib.contextmanager
def ray_cluster(address: str | None) -> Iterator[RayCluster | None]:
    """The connection to the Ray cluster at ``address`` for a run (None: no cluster, the jobs run here)."""
    if address is None:
        yield None
        return
    cluster = RayCluster.connect(address)
    try:
        yield cluster
    finally:
        cluster.ray.shutdown()


class RayCluster:
    """The driver's side: its connection, the files it has put into the object store, the jobs it runs."""

    def __init__(self, ray, address: str) -> None:
        self.ray = ray
        self.address = address
        self._hashes: dict[tuple[int, int, int, int], str] = {}  # (device, inode, size, mtime): each file hashed once
        self._objects: dict[str, object] = {}  # sha256 -> ObjectRef: each content put once a run
        self._task = ray.remote(run_task)

    @classmethod
    def connect(cls, address: str) -> RayCluster:
        """``ray.init(address=...)``: ``auto`` (the cluster ``ray start`` began on this machine, or ``RAY_ADDRESS``),
        ``HOST:PORT`` of a head node, or ``ray://HOST:PORT`` (Ray Client)."""
        try:
            import ray
        except ImportError:
            raise RuntimeError(f"--ray needs Ray, which is not installed: {RAY_INSTALL}") from None
        check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as err:
            raise RuntimeError(f"--ray {address}: no Ray cluster to connect to ({err}); start one with "
                               "`ray start --head` (docs/SCALE.md)") from None
        return cls(ray, address)

    def describe(self) -> str:
        nodes = [node for node in self.ray.nodes() if node["Alive"]]
        total = self.ray.cluster_resources()
        return (f"ray {self.address}: {len(nodes)} node{'s' * (len(nodes) != 1)}, {total.get('CPU', 0):g} CPUs, "
                f"{total.get('GPU', 0):g} GPUs")

    def gpus(self) -> float:
        return self.ray.cluster_resources().get("GPU", 0)

    def convert_device(self, device: str) -> str:
        """The recipe's ``convert.device`` here: ``auto`` is CUDA when the cluster has a GPU (a task that reserves
        none must not use one: Ray leaves a node's GPUs visible to it), ``cuda`` needs one. Not exercised here."""
        if device == "cuda" and not self.gpus():
            raise RuntimeError(f"convert.device is 'cuda' but the Ray cluster at {self.address} has no GPU (`ray status` "
                               "lists its resources; a node offers its GPUs with `ray start --num-gpus N`)")
        return "cuda" if device != "cpu" and self.gpus() else "cpu"

    def resources(self, job: RemoteJob) -> dict:
        """A task's reservation: one CPU, or a whole node's (the largest's) for a measurement; a GPU when the
        job wants CUDA and the cluster has one (without, bench records CUDA as absent, as a local run does).
        GPU reservations are not exercised here (tests/test_ray.py checks them against a described cluster)."""
        gpus = 1 if job.wants_cuda and self.gpus() else 0
        cpus = 1
        if job.WHOLE_NODE:
            nodes = [node["Resources"] for node in self.ray.nodes()
                     if node["Alive"] and node["Resources"].get("GPU", 0) >= gpus]
            cpus = max((node.get("CPU", 1) for node in nodes), default=1)
        return {"num_cpus": cpus, "num_gpus": gpus}

    def ship(self, path: Path) -> Shipment:
        """``path`` (a file, or a dir's files but dot-named ones) as objects in the store."""
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts)) if path.is_dir() else [path]
        entries = []
        for file in files:
            stat = file.stat()
            key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if key not in self._hashes:
                self._hashes[key] = sha256_file(file)
            sha = self._hashes[key]
            if sha not in self._objects:
                import numpy

                self._objects[sha] = self.ray.put(numpy.fromfile(file, dtype=numpy.uint8))
            entries.append((file.relative_to(path).as_posix() if path.is_dir() else "", sha, self._objects[sha]))
        return Shipment(name=path.name, is_dir=path.is_dir(), files=tuple(entries))

    def submit(self, work: Callable, job: RemoteJob):
        shipments = {name: self.ship(Path(getattr(job, name))) for name in job.READS if getattr(job, name) is not None}
        return self._task.options(**self.resources(job), max_retries=MAX_RETRIES).remote(work, job, shipments)

    def run(self, work: Callable, jobs: list, *, at_once: int | None) -> Iterator[tuple[str, object]]:
        """``work(job)`` for each job as a task, ``at_once`` at a time (None: all submitted, the cluster's resources
        decide); yields (its summary line, the job) as each one's outputs land in place."""
        queue, pending = list(jobs), {}
        try:
            while queue or pending:
                while queue and (at_once is None or len(pending) < at_once):
                    job = queue.pop(0)
                    pending[self.submit(work, job)] = job
                [ready], _ = self.ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready)
                try:
                    line, tar = self.ray.get(ready)
                except self.ray.exceptions.RayError as err:
                    raise RuntimeError(f"{work.__name__} of {Path(getattr(job, job.WRITES)).name} failed on the Ray "
                                       f"cluster: {err}") from err
                land(tar, final=Path(getattr(job, job.WRITES)), update=job.WRITES in job.READS)
                yield line, job
        finally:
            for ref in pending:
                self.ray.cancel(ref)


def check_reachable(address: str) -> None:
    """Fail at once when nothing listens at a ``HOST:PORT`` or ``ray://HOST:PORT`` address (``ray.init`` retries for
    minutes); ``auto`` is Ray's to resolve."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--ray {address!r}: give 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise RuntimeError(f"--ray {address}: nothing answers there ({err}); is the Ray head running "
                           "(`ray start --head`, docs/SCALE.md)?") from None


def land(tar: bytes, *, final: Path, update: bool) -> None:
    """Put a task's returned dir in place: a built one renamed in whole over ``final`` (``atomic_output_dir``);
    an updated one's files (eval's and bench's manifest) each renamed over its own. Either way unpacked first
    into a dot-named temp dir beside ``final``, which a killed run's successor removes."""
    if not update:
        with atomic_output_dir(final) as tmp:
            unpack(tar, into=tmp)
        return
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{final.name}.tmp-") as tmp:
        unpack(tar, into=Path(tmp))
        for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            target = final / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def unpack(tar: bytes, *, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into, filter="data")


# --- on the worker ---------------------------------------------------------------------------------------


def run_task(work: Callable, job: RemoteJob, shipments: dict[str, Shipment]) -> tuple[str, bytes]:
    """One job on a Ray worker: what it reads from the node's cache, what it writes into a scratch dir, sent back
    as a tar (the dir it built, or the files it wrote into the dir it updated) with its summary line."""
    import ray
    import torch

    torch.set_num_threads(max(1, math.floor(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    cache = node_cache()
    remove_dead_scratch(cache / "tasks")
    scratch = Path(tempfile.mkdtemp(prefix=f"task-{os.getpid()}-", dir=cache / "tasks"))
    try:
        paths = {name: materialise(shipment, cache=cache, into=scratch / "in" / name) for name, shipment in shipments.items()}
        update = job.WRITES in paths
        if not update:
            paths[job.WRITES] = scratch / "out" / Path(getattr(job, job.WRITES)).name
        line = work(dataclasses.replace(job, **paths))
        return line, pack(paths[job.WRITES], written_only=update)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remove_dead_scratch(tasks: Path) -> None:
    """Remove the scratch dirs (``task-<pid>-…``) that tasks of workers no longer alive left (a killed worker)."""
    tasks.mkdir(parents=True, exist_ok=True)
    for scratch in tasks.glob("task-*-*"):
        pid = int(scratch.name.split("-")[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(scratch, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def node_cache() -> Path:
    """This node's cache of shipped files and tasks' scratch dirs: ``$INVOKER_RAY_CACHE``, else ``<cache>/ray``."""
    from invoker.pretrained import cache_dir

    return Path(os.environ.get(CACHE_ENV) or cache_dir() / "ray")


def materialise(shipment: Shipment, *, cache: Path, into: Path) -> Path:
    """``into/<name>``: the shipped file, or dir of files, hard-linked from the node's cache."""
    target = into / shipment.name
    if shipment.is_dir:
        target.mkdir(parents=True)
    for relative, sha, ref in shipment.files:
        path = target / relative if relative else target
        path.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(cached_file(sha, ref, cache=cache), path)
    return target


def cached_file(sha: str, ref, *, cache: Path) -> Path:
    """``<cache>/files/<sha256>``, fetched from the object store by the first task on this node that needs it
    (the others wait for it under a lock), checked against its hash, read-only: every task's scratch dir
    links it, and the work replaces files (atomically), never writes into them."""
    import ray

    path = cache / "files" / sha
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f".{sha}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            with atomic_file(path) as tmp:
                ray.get(ref).tofile(tmp)
                if sha256_file(tmp) != sha:
                    raise RuntimeError(f"the object store's copy of {sha} has other content")
                tmp.chmod(0o444)
    return path


def pack(directory: Path, *, written_only: bool) -> bytes:
    """The files of ``directory`` as an uncompressed tar (weights do not compress); ``written_only``: only those
    the work wrote, not those linked from the cache (a file it replaced is a new one: one link)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", dereference=True) as archive:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            if not written_only or path.stat().st_nlink == 1:
                archive.add(path, arcname=path.relative_to(directory).as_posix())
    return buffer.getvalue()
