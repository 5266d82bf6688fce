"""Worker processes for the pipeline's jobs, so that a native crash costs one variant, not the run.

A job runs in a spawned worker process that serves jobs one after another (torch and the runtimes are
imported once per worker). A Python exception inside a job comes back and is raised here, as if the job had
run in this process. When the worker dies without an answer — SIGSEGV or SIGILL in a native runtime (llama.cpp,
a quantization kernel), the kernel's OOM killer, an exit — ``run_isolated`` reports that job with the cause and
goes on with the other jobs in a fresh worker. ``jobs_n`` workers run at once, each fed by a thread here; a
worker dies with this process (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed


class WorkerDied(RuntimeError):
    """A job's worker process ended without answering; the message is the cause ("SIGSEGV (signal 11)")."""


def exit_cause(exitcode: int | None) -> str:
    """What ended a process, from its exit code (negative: the signal that killed it)."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"{signal.Signals(-exitcode).name} (signal {-exitcode})"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class Worker:
    """One spawned process that runs ``work(item)`` for one job after another."""

    def __init__(self, *, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child, threads), name="invoker-pack-worker")
        self._process.start()
        child.close()

    def run(self, work: Callable, item):
        """``work(item)`` in the worker; ``WorkerDied`` when the worker dies before it answers."""
        self._conn.send((work, item))
        try:
            ok, value = self._conn.recv()
        except (EOFError, ConnectionError):
            self._process.join()
            raise WorkerDied(exit_cause(self._process.exitcode)) from None
        if ok:
            return value
        raise value

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def serve(conn, threads: int) -> None:
    """The worker's loop: a job in, its result (or its exception) out, until told to stop."""
    init_worker(threads)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        work, item = message
        try:
            answer = (True, work(item))
        except Exception as error:  # noqa: BLE001 - every failure of a job goes back to the driver, which raises it
            answer = (False, error if _picklable(error) else RuntimeError(f"{type(error).__name__}: {error}"))
        conn.send(answer)


def init_worker(threads: int) -> None:
    """A worker dies with the run (Linux ``PR_SET_PDEATHSIG``), computes with ``threads`` torch threads, and logs
    the libraries' chatter where the run does (``pipelines.library_output``)."""
    import ctypes

    import torch

    from pipelines.library_output import from_environment

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    torch.set_num_threads(threads)
    from_environment()  # the libraries' warnings and bars into the run's log file, as in the driver
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing RLock (a POSIX semaphore); a worker killed with its run leaves it to
    # the resource tracker, which warns "leaked semaphore objects" on the terminal. A worker's bars need no
    # lock shared across processes.
    tqdm.set_lock(threading.RLock())


def _picklable(value) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - anything pickle refuses
        return False
    return True


def run_isolated(work: Callable, items: list, *, jobs_n: int) -> Iterator[tuple[object, str | None, str | None]]:
    """``(item, work(item), None)`` for each job that finished and ``(item, None, cause)`` for each whose worker
    died, as they come, from ``jobs_n`` workers (each with its share of the CPUs for torch)."""
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs_n))
    local, workers, lock = threading.local(), [], threading.Lock()

    def run_one(item):
        worker = getattr(local, "worker", None)
        if worker is None:
            worker = local.worker = Worker(threads=threads)
            with lock:
                workers.append(worker)
        try:
            return item, worker.run(work, item), None
        except WorkerDied as died:
            local.worker = None  # the next job of this thread gets a fresh worker
            return item, None, str(died)

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs_n)) as pool:
            for future in as_completed([pool.submit(run_one, item) for item in items]):
                yield future.result()
    finally:
        for worker in workers:
            worker.close()
