"""llama.cpp's CPU weight layouts: the AMX crash is avoided by a decision tested for both kinds of CPU
(the real load with each outcome: tests/test_gguf.py)."""

from __future__ import annotations

import pytest

from invoker.runtimes.llamacpp_cpu import build_features, cpu_flags, extra_buffers_safe

# What llama_print_system_info() printed for llama-cpp-python 0.3.36 built natively on each kind of host.
AMX_BUILD = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
             "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
             "OPENMP = 1 | REPACK = 1 | ")
PLAIN_BUILD = AMX_BUILD.replace("AMX_INT8 = 1 | ", "")
AMX_FLAGS = frozenset("fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8".split())
PLAIN_FLAGS = AMX_FLAGS - {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize(("flags", "system_info", "safe"), [
    (AMX_FLAGS, AMX_BUILD, False),    # the crashing host: AMX CPU, build using AMX
    (PLAIN_FLAGS, PLAIN_BUILD, True),  # no AMX anywhere: repacked layouts stay on
    (AMX_FLAGS, PLAIN_BUILD, True),    # an AMX CPU, but a build without the AMX backend
    (PLAIN_FLAGS, AMX_BUILD, True),    # a build that has AMX code on a CPU without it never takes that path
    (frozenset(), "", True),           # not Linux, unknown build: llama.cpp's defaults
])
def test_extra_buffers_are_refused_only_where_the_amx_path_would_run(flags, system_info, safe):
    assert extra_buffers_safe(flags=flags, system_info=system_info) is safe


def test_build_features_keep_only_what_is_on():
    assert build_features("CPU : AVX2 = 1 | AMX_INT8 = 0 | REPACK = 1 | ") == {"AVX2", "REPACK"}
    assert "AMX_INT8" in build_features(AMX_BUILD) and "AMX_INT8" not in build_features(PLAIN_BUILD)


def test_cpu_flags_read_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_int8 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_int8", "amx_tile"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
