"""`invoker-pack quantize --ray` on a Ray head of this machine (loopback, 2 CPUs): the same manifests as a local run,
a rerun that skips everything, and a task that fails or whose worker dies leaving nothing half-written in out/.

One node only: the node cache, the object store and the scratch dirs are exercised, a second machine and GPUs are
not (docs/SCALE.md). Ray binds loopback only with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (else it advertises the
machine's own address); the pytest process sets it before anything imports Ray.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from invoker.files import atomic_output_dir, sha256_file
from test_pipeline import last_log, recipe, snapshot  # recipe: the fixture, GGUF F16 + Q8_0 of the tiny model
from test_pipeline_formats import VARYING, drop_keys

REPO = Path(__file__).resolve().parent.parent
DIRS = ("fp16", "gguf-F16", "gguf-Q8_0")
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                                  reason="Ray is not installed: pip install -e '.[ray]'")]


def free_port() -> int:
    """A free port from the kernel's ephemeral range (above the 10002-19999 Ray keeps for its workers)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """``ray start --head --block`` on 127.0.0.1 with 2 CPUs, in its own process group (stopped by killing that
    group: never `ray stop`, which stops every Ray of the machine); yields (address, node cache dir)."""
    os.environ.update(LOOPBACK)
    cache = tmp_path_factory.mktemp("node-cache")
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    log = tmp_path_factory.mktemp("head") / "head.log"
    port = free_port()
    env = {**os.environ, **LOOPBACK, "INVOKER_RAY_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}  # tasks import this module
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--port", str(port), "--ray-client-server-port", str(free_port()), "--num-cpus", "2", "--num-gpus", "0",
               "--disable-usage-stats", "--include-dashboard=false", "--temp-dir", str(temp_dir)]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", cache
    finally:  # SIGKILL: a graceful stop takes ~45 s, and the head keeps nothing (its temp dir is removed below)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        time.sleep(2)
        with pytest.raises(ProcessLookupError):  # every process of the head's group has gone
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def quantize(recipe: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **LOOPBACK, "OMP_NUM_THREADS": "1"}  # one thread: the same float sums in both runs
    command = [sys.executable, "-m", "pipelines.cli", "quantize", "--recipe", str(recipe), "--out", str(out), *extra]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def comparable(out: Path) -> dict:
    """Manifests and report.json without what differs between two runs of the same input: timings, bench figures."""
    def without_figures(entry: dict) -> dict:
        return drop_keys({**entry, "bench": {device: sorted(result) for device, result in entry["bench"].items()}}, VARYING)

    report = json.loads((out / "report.json").read_text())
    return {"manifests": {name: without_figures(json.loads((out / name / "manifest.json").read_text())) for name in DIRS},
            "report": {name: without_figures(entry) for name, entry in report.items()}}


@pytest.fixture(scope="module")
def runs(head, recipe, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("runs")
    quantize(recipe, root / "local")
    quantize(recipe, root / "ray", "--ray", head[0])
    return {"local": root / "local", "ray": root / "ray"}


def test_a_ray_run_writes_what_a_local_run_writes(runs, head, tiny_random_model):
    assert comparable(runs["ray"]) == comparable(runs["local"])
    log = last_log(runs["ray"])
    assert f"ray {head[0]}: 1 node, 2 CPUs, 0 GPUs" in log
    assert "convert: 3 dirs, 3 built" in log and "eval: 3 dirs, 3 evaluated" in log and "bench: 3 dirs, 3 measured" in log
    assert not [p.name for p in runs["ray"].iterdir() if ".tmp-" in p.name]
    cache = head[1]
    weights = sha256_file(tiny_random_model / "model.safetensors")
    assert (cache / "files" / weights).is_file()  # the source reached the node's cache, under its sha256 …
    assert oct((cache / "files" / weights).stat().st_mode & 0o777) == oct(0o444)  # … read-only: tasks link it
    assert list((cache / "tasks").iterdir()) == []  # every task's scratch dir removed


def test_a_rerun_on_the_cluster_skips_everything(runs, head, recipe):
    before = snapshot(runs["ray"])
    quantize(recipe, runs["ray"], "--ray", head[0])
    assert snapshot(runs["ray"]) == before
    log = last_log(runs["ray"])
    for line in ("convert: 3 dirs, 0 built, 3 up to date", "eval: 3 dirs, 0 evaluated", "bench: 3 dirs, 0 measured",
                 "report: up to date"):
        assert line in log


def test_ray_with_jobs_or_without_a_head_is_refused_at_once(recipe, tmp_path):
    from pipelines.cli import main

    assert main(["quantize", "--recipe", str(recipe), "--out", str(tmp_path / "a"), "--ray", "auto", "--jobs", "2"]) == 2
    assert not (tmp_path / "a").exists()
    started = time.perf_counter()
    assert main(["quantize", "--recipe", str(recipe), "--out", str(tmp_path / "b"), "--ray", f"127.0.0.1:{free_port()}"]) == 2
    assert time.perf_counter() - started < 30
    assert "nothing answers there" in last_log(tmp_path / "b")


def test_without_ray_installed_the_error_names_the_extra(monkeypatch):
    from pipelines.cluster import RayCluster

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r"invoker-pack\[ray\]"):
        RayCluster.connect("auto")


# --- one task, failing or dying, through RayCluster.run --------------------------------------------------------


@dataclass(frozen=True)
class CopyJob:
    """A job of the shape the stages' jobs have: it reads ``source`` and builds ``final``."""

    READS: ClassVar[tuple[str, ...]] = ("source",)
    WRITES: ClassVar[str] = "final"
    WHOLE_NODE: ClassVar[bool] = False
    wants_cuda: ClassVar[bool] = False

    source: Path
    final: Path
    attempts: Path  # a file of this machine where each attempt leaves a line (the test's record, not a task's input)


def fail_half_way(job: CopyJob) -> str:
    with job.attempts.open("a") as attempts:
        attempts.write("attempt\n")
    with atomic_output_dir(job.final) as tmp:
        (tmp / "weights.bin").write_bytes(b"\0" * 4096)
        raise ValueError("the converter failed half-way")


def die_once_then_copy(job: CopyJob) -> str:
    """The first attempt's worker process dies mid-write (as a killed or out-of-memory worker does); the next copies."""
    with job.attempts.open("a") as attempts:
        attempts.write("attempt\n")
    with atomic_output_dir(job.final) as tmp:
        shutil.copy(job.source / "weights.bin", tmp / "weights.bin")
        if job.attempts.read_text().count("attempt") == 1:
            os._exit(1)
    return f"{job.final.name}: copied"


@pytest.fixture()
def cluster(head):
    from pipelines.cluster import ray_cluster

    with ray_cluster(head[0]) as connected:
        yield connected


@pytest.fixture()
def job(tmp_path) -> CopyJob:
    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.bin").write_bytes(os.urandom(100_000))
    return CopyJob(source=source, final=tmp_path / "out" / "variant", attempts=tmp_path / "attempts.txt")


def test_a_task_that_raises_leaves_no_dir_and_is_not_retried(cluster, job, head):
    with pytest.raises(RuntimeError, match="the converter failed half-way"):
        list(cluster.run(fail_half_way, [job], at_once=None))
    assert job.attempts.read_text().count("attempt") == 1  # an exception is the work's answer: not retried
    assert not job.final.parent.exists()  # nothing landed: the half-written file stayed in the task's scratch dir …
    assert list((head[1] / "tasks").iterdir()) == []  # … which the task removed


def test_a_task_whose_worker_dies_is_run_again_and_lands_once(cluster, job, head):
    [(line, landed)] = list(cluster.run(die_once_then_copy, [job], at_once=None))
    assert line == "variant: copied" and landed == job
    assert job.attempts.read_text().count("attempt") == 2
    assert (job.final / "weights.bin").read_bytes() == (job.source / "weights.bin").read_bytes()
    assert [p.name for p in job.final.parent.iterdir()] == ["variant"]  # no temp dir beside it
    assert list((head[1] / "tasks").iterdir()) == []  # the dead worker's scratch dir was removed by the retry


# --- what a task reserves: against a stand-in for a cluster with GPUs (none exists here) ------------------------


class StandInRay:
    """``cluster_resources``/``nodes`` of a described cluster, ``remote`` as a no-op: what ``RayCluster`` asks Ray."""

    def __init__(self, nodes: list[dict]):
        self._nodes = [{"Alive": True, "Resources": node} for node in nodes]

    def nodes(self):
        return self._nodes

    def cluster_resources(self):
        return {key: sum(node["Resources"].get(key, 0) for node in self._nodes) for key in ("CPU", "GPU")}

    def remote(self, function):
        return function


def test_gpu_conversions_reserve_a_gpu_and_a_bench_a_whole_node_where_the_cluster_has_them():
    from pipelines.cluster import RayCluster
    from pipelines.recipe import BenchSettings
    from pipelines.stages import BenchJob, ConvertJob, EvalJob

    def convert_job(device):
        return ConvertJob(variant=None, source_dir=Path("s"), final_dir=Path("f"), model_name="m", source={},
                          calibration_file=None, shared_dir=None, progress=False, device=device)

    gpu_cluster = RayCluster(StandInRay([{"CPU": 8}, {"CPU": 64, "GPU": 4}, {"CPU": 16, "GPU": 2}]), "head:6379")
    assert gpu_cluster.convert_device("auto") == "cuda" and gpu_cluster.convert_device("cpu") == "cpu"
    assert gpu_cluster.resources(convert_job("cuda")) == {"num_cpus": 1, "num_gpus": 1}
    assert gpu_cluster.resources(convert_job(None)) == {"num_cpus": 1, "num_gpus": 0}  # GGUF
    assert gpu_cluster.resources(EvalJob(variant_dir=Path("v"), suites={}, max_tokens=8, progress=False)) == \
        {"num_cpus": 1, "num_gpus": 0}
    assert gpu_cluster.resources(BenchJob(variant_dir=Path("v"), settings=BenchSettings())) == {"num_cpus": 64, "num_gpus": 0}
    assert gpu_cluster.resources(BenchJob(variant_dir=Path("v"), settings=BenchSettings(devices=("cpu", "cuda")))) == \
        {"num_cpus": 64, "num_gpus": 1}

    cpu_cluster = RayCluster(StandInRay([{"CPU": 2}]), "head:6379")
    assert cpu_cluster.convert_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="convert.device is 'cuda' but the Ray cluster at head:6379 has no GPU"):
        cpu_cluster.convert_device("cuda")
    assert cpu_cluster.resources(BenchJob(variant_dir=Path("v"), settings=BenchSettings(devices=("cpu", "cuda")))) == \
        {"num_cpus": 2, "num_gpus": 0}  # CUDA then recorded as absent by the bench, as locally
