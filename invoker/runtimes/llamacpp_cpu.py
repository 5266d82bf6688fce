"""Which of llama.cpp's CPU weight layouts are safe on this machine, and the one place a ``Llama`` is opened.

llama.cpp's CPU backend offers "extra buffer types": at load it moves (repacks) eligible weights into
a layout for a faster kernel — ``CPU_REPACK`` (AVX2/AVX-512 interleaved Q4_0/Q4_K/IQ4_NL/Q8_0) and,
on CPUs with Intel AMX, the ``AMX`` buffer (Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K/IQ4_XS through the tile
unit). On a CPU reporting ``amx_int8``, llama-cpp-python 0.3.36's AMX path dies with SIGSEGV on the
first decode of every Q4_K_M or Q8_0 GGUF ("general protection fault … in libggml-cpu.so"; llama.cpp
issue #20824, open). llama.cpp offers one switch for these layouts, ``use_extra_bufts`` in
``llama_model_params``: off, both the AMX and the repacked layouts are skipped and the weights are
read in place; F16 weights never use them. So:

- a CPU with ``amx_int8`` running a llama.cpp build whose ``llama_print_system_info()`` reports
  ``AMX_INT8 = 1`` loads with ``use_extra_bufts = False`` (correct results; the cost is in docs/GGUF.md);
- every other machine keeps llama.cpp's default (repacked layouts on), which is safe there.

The decision is ``extra_buffers_safe``, a pure function of the CPU's flags and the build's system
info, so both outcomes are tested on any machine; ``open_llama`` applies it to every load.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
_PARAMS_LOCK = threading.Lock()


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The feature flags the kernel reports for this CPU (the first ``flags`` line of ``/proc/cpuinfo``);
    empty where there is no such file (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:(.*)$", text, flags=re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def build_features(system_info: str) -> frozenset[str]:
    """The features a llama.cpp build was compiled with and found at run time, from
    ``llama_print_system_info()`` ("CPU : SSE3 = 1 | AVX512 = 1 | AMX_INT8 = 1 | …"): the names set to 1."""
    return frozenset(name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0")


def extra_buffers_safe(*, flags: frozenset[str], system_info: str) -> bool:
    """Whether llama.cpp's extra buffer types (repacked and AMX weight layouts) may be used: not where the
    CPU has AMX-INT8 and the build uses it (the AMX path crashes there, see the module doc)."""
    return not ("amx_int8" in flags and "AMX_INT8" in build_features(system_info))


def llama_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")


def use_extra_buffers() -> bool:
    """``extra_buffers_safe`` for this machine and the installed llama-cpp-python."""
    return extra_buffers_safe(flags=cpu_flags(), system_info=llama_system_info())


@contextlib.contextmanager
def _model_params(**fields):
    """llama-cpp-python's ``Llama`` builds its ``llama_model_params`` from ``llama_model_default_params()``
    and has no argument for ``use_extra_bufts``; for the loads inside this block the defaults it reads
    carry ``fields``. One load at a time holds the lock, so concurrent loads never see each other's fields."""
    from llama_cpp import llama_cpp as bindings

    original = bindings.llama_model_default_params

    def defaults():
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    with _PARAMS_LOCK:
        bindings.llama_model_default_params = defaults
        try:
            yield
        finally:
            bindings.llama_model_default_params = original


def open_llama(model_path: str | Path, *, extra_buffers: bool | None = None, **kwargs):
    """``llama_cpp.Llama(model_path, **kwargs)`` with ``use_extra_bufts`` decided by ``use_extra_buffers()``
    (or ``extra_buffers`` when given). Every llama.cpp load of the project goes through here."""
    from llama_cpp import Llama

    if extra_buffers is None:
        extra_buffers = use_extra_buffers()
    with _model_params(use_extra_bufts=extra_buffers):
        return Llama(model_path=str(model_path), **kwargs)
