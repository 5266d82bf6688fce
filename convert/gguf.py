"""HF Llama checkpoint -> GGUF (F16, Q8_0, k-quants ...) with llama.cpp's own tools, plus an Ollama Modelfile.

The steps (docs/GGUF.md explains every choice and its evidence):

1. ``convert_to_f16`` runs llama.cpp's ``convert_hf_to_gguf.py`` (``convert.hf_to_gguf``: the script from
   the installed llama-cpp-python's sdist, so converter and runtime come from the same llama.cpp commit)
   on a staging view of the source that carries Invoker's chat template, which lands in the GGUF as
   ``tokenizer.chat_template``; ``keep_add_bos`` then corrects one header flag the script gets wrong.
   For imatrix types, ``convert.imatrix`` computes llama.cpp's importance matrix with torch (on the layer
   walk GPTQ and AWQ share) and keeps it in llama.cpp's GGUF imatrix format.
2. ``quantize_gguf`` calls llama.cpp's quantizer (``llama_model_quantize``) with that matrix.

In the pipeline, ``build_shared`` makes the F16 GGUF and the imatrix once, and ``convert`` quantizes each
variant from them (``shared_dir``). Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from convert.calibration import CalibrationSet
from convert.checkpoint import read_llama_config
from convert.formats import FORMATS, VariantSettings
from convert.hf_to_gguf import converter_provenance, fetch_converter, run_converter
from convert.imatrix import IMATRIX_NAME, Imatrix, calibration_label, compute_imatrix, read_imatrix, write_imatrix

SPEC = FORMATS["gguf"]  # its entry: convert/formats/gguf.py
VARIANTS = SPEC.variants
TOOL_PACKAGES = SPEC.tool_packages
NO_IMATRIX_SUFFIX = "-noimatrix"
MODELFILE_NAME = "Modelfile"
BASE_TYPE = "F16"  # what llama.cpp's converter writes and every other type is quantized from

# llama.cpp type name -> (llama_ftype constant in llama_cpp, row block size the type needs, uses an imatrix,
# bits per weight of its main type, block scales included: mixes such as _M keep a few tensors wider)
QUANT_TYPES: dict[str, tuple[str, int, bool, float]] = {
    "F16": ("LLAMA_FTYPE_MOSTLY_F16", 1, False, 16.0),
    "BF16": ("LLAMA_FTYPE_MOSTLY_BF16", 1, False, 16.0),
    "Q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 32, False, 8.5),
    "Q6_K": ("LLAMA_FTYPE_MOSTLY_Q6_K", 256, True, 6.5625),
    "Q5_K_M": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 256, True, 5.5),
    "Q5_K_S": ("LLAMA_FTYPE_MOSTLY_Q5_K_S", 256, True, 5.5),
    "Q5_0": ("LLAMA_FTYPE_MOSTLY_Q5_0", 32, True, 5.5),
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 256, True, 4.5),
    "Q4_K_S": ("LLAMA_FTYPE_MOSTLY_Q4_K_S", 256, True, 4.5),
    "Q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 32, True, 4.5),
    "Q3_K_L": ("LLAMA_FTYPE_MOSTLY_Q3_K_L", 256, True, 3.4375),
    "Q3_K_M": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 256, True, 3.4375),
    "Q2_K": ("LLAMA_FTYPE_MOSTLY_Q2_K", 256, True, 2.625),
    "IQ4_XS": ("LLAMA_FTYPE_MOSTLY_IQ4_XS", 256, True, 4.25),
}


# --- what the pipeline calls (convert.formats.Converter) ---------------------------------------


def variant_settings(variant: str) -> VariantSettings:
    """A llama.cpp type, optionally ``<TYPE>-noimatrix`` (an imatrix type quantized without one: a comparison)."""
    try:
        quant_type, use_imatrix = parse_variant(variant)
    except ValueError:
        others = ", ".join(t for t in QUANT_TYPES if t not in VARIANTS)
        raise ValueError(f"unknown GGUF variant {variant!r}; valid: {', '.join(VARIANTS)} (or any of {others}; "
                         f"imatrix types also as <TYPE>{NO_IMATRIX_SUFFIX})") from None
    return VariantSettings(bits_per_weight=QUANT_TYPES[quant_type][3], calibrates=use_imatrix,
                           comparison=quant_type != variant, ablation_of=quant_type if quant_type != variant else None)


def shared_base_needed(variants: list[str]) -> bool:
    """Every type but F16 is quantized from one shared F16 GGUF."""
    return any(parse_variant(variant)[0] != BASE_TYPE for variant in variants)


def build_shared(*, source_dir: Path, out_dir: Path, model_name: str, calibration: CalibrationSet | None,
                 progress: bool) -> None:
    """``<model>-F16.gguf`` and, with a calibration set, ``imatrix.gguf`` in ``out_dir``: what ``convert`` reuses
    through ``shared_dir`` (byte-identical to converting each variant from scratch, docs/GGUF.md)."""
    convert_to_f16(source_dir=source_dir, out_file=out_dir / base_name(model_name), model_name=model_name,
                   converter_dir=fetch_converter(), progress=progress)
    if calibration is not None:
        imatrix = compute_imatrix(source_dir=source_dir, calibration=calibration, progress=progress)
        write_imatrix(imatrix, out_dir / IMATRIX_NAME, dataset=calibration_label(calibration), arch="llama")


def base_name(model_name: str) -> str:
    return f"{model_name}-{BASE_TYPE}.gguf"


def convert(
    *,
    source_dir: Path,
    out_dir: Path,
    variant: str,
    calibration: CalibrationSet | None,
    progress: bool = True,
    model_name: str | None = None,
    shared_dir: Path | None = None,
    f16_gguf: Path | None = None,
    imatrix_gguf: Path | None = None,
) -> dict:
    """Write ``<model>-<TYPE>.gguf`` (+ ``imatrix.gguf`` for imatrix types, + ``Modelfile``) into ``out_dir``.

    ``variant`` is a llama.cpp type name (``QUANT_TYPES``), optionally with ``-noimatrix`` to quantize
    an imatrix type without one (for comparison). Reuse, to avoid repeating the slow steps for each
    variant: ``f16_gguf`` — an F16 GGUF this module made from the same source, quantized directly;
    ``imatrix_gguf`` — an ``imatrix.gguf`` this module computed from the same calibration set (ignored
    by types that use no imatrix); ``shared_dir`` — where ``build_shared`` wrote both. Returns the manifest details.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    quant_type, use_imatrix = parse_variant(variant)
    name = model_name or source_dir.name
    if shared_dir is not None:
        f16_gguf = f16_gguf or Path(shared_dir) / base_name(name)
        if imatrix_gguf is None and (Path(shared_dir) / IMATRIX_NAME).is_file():
            imatrix_gguf = Path(shared_dir) / IMATRIX_NAME
    config = check_source(source_dir=source_dir, quant_type=quant_type)
    if use_imatrix and (calibration is None or not calibration.input_ids):
        raise ValueError(
            f"variant {variant} quantizes with an importance matrix and needs a non-empty calibration set "
            f"(or name the variant {quant_type}{NO_IMATRIX_SUFFIX})"
        )
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir}: output directory does not exist")
    if f16_gguf is not None and quant_type != BASE_TYPE:
        check_f16_gguf(Path(f16_gguf))
    imatrix = None
    if use_imatrix and imatrix_gguf is not None:
        imatrix = read_imatrix(Path(imatrix_gguf), expect_dataset=calibration_label(calibration))
    gguf_name = f"{name}-{variant}.gguf"  # Q4_K_M and Q4_K_M-noimatrix must not share a name in one repo
    converter = fetch_converter()  # also when reusing an F16 GGUF: its provenance goes into the manifest
    started = time.perf_counter()
    timings: dict[str, float] = {}
    work = out_dir / ".work"
    work.mkdir(exist_ok=True)
    try:
        if quant_type == BASE_TYPE:
            convert_to_f16(source_dir=source_dir, out_file=out_dir / gguf_name, model_name=name, converter_dir=converter, progress=progress)
            timings["convert_seconds"] = round(time.perf_counter() - started, 3)
        else:
            if f16_gguf is None:
                f16_gguf = work / base_name(name)
                convert_to_f16(source_dir=source_dir, out_file=f16_gguf, model_name=name, converter_dir=converter, progress=progress)
                timings["convert_seconds"] = round(time.perf_counter() - started, 3)
            if imatrix is not None:
                shutil.copyfile(imatrix_gguf, out_dir / IMATRIX_NAME)
            elif use_imatrix:
                step = time.perf_counter()
                imatrix = compute_imatrix(source_dir=source_dir, calibration=calibration, progress=progress)
                write_imatrix(imatrix, out_dir / IMATRIX_NAME, dataset=calibration_label(calibration), arch="llama")
                timings["imatrix_seconds"] = round(time.perf_counter() - step, 3)
            step = time.perf_counter()
            quantize_gguf(
                source_gguf=Path(f16_gguf),
                out_file=out_dir / gguf_name,
                quant_type=quant_type,
                imatrix=imatrix,
                imatrix_file=IMATRIX_NAME if imatrix else None,
                imatrix_dataset=calibration_label(calibration) if imatrix else None,
            )
            timings["quantize_seconds"] = round(time.perf_counter() - step, 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    from convert.ollama import write_modelfile

    write_modelfile(out_dir / MODELFILE_NAME, gguf_name=gguf_name, context_length=int(config.get("max_position_embeddings", 4096)))
    timings["total_seconds"] = round(time.perf_counter() - started, 3)
    return {
        "quantization": {
            "type": quant_type,
            "imatrix": use_imatrix,
            "method": "llama.cpp llama_model_quantize" if quant_type != BASE_TYPE else "llama.cpp convert_hf_to_gguf.py",
        },
        "gguf": gguf_name,
        "imatrix": IMATRIX_NAME if use_imatrix else None,
        "modelfile": MODELFILE_NAME,
        "converter": converter_provenance(converter),
        "tools": tool_versions(),
        "timings": timings,
    }


def parse_variant(variant: str) -> tuple[str, bool]:
    """``"Q4_K_M"`` -> ("Q4_K_M", True); ``"Q4_K_M-noimatrix"`` -> ("Q4_K_M", False); ``"Q8_0"`` -> ("Q8_0", False)."""
    if not isinstance(variant, str):
        raise ValueError(f"variant must be a string, got {variant!r}")
    quant_type = variant.removesuffix(NO_IMATRIX_SUFFIX)
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"unknown GGUF quantization type {variant!r}; valid: {', '.join(QUANT_TYPES)} "
                         f"(imatrix types also as <TYPE>{NO_IMATRIX_SUFFIX})")
    uses_imatrix = QUANT_TYPES[quant_type][2]
    if quant_type != variant and not uses_imatrix:
        raise ValueError(f"variant {variant!r}: {quant_type} never uses an importance matrix; name it {quant_type}")
    return quant_type, uses_imatrix and quant_type == variant


def check_source(*, source_dir: Path, quant_type: str) -> dict:
    """The source's config.json, after checking everything conversion needs is there (cheap, before heavy work)."""
    config_path, config = read_llama_config(source_dir)
    if not ((source_dir / "tokenizer.model").is_file() or (source_dir / "tokenizer.json").is_file()):
        raise ValueError(f"{source_dir}: no tokenizer (tokenizer.model or tokenizer.json)")
    if not (any(source_dir.glob("*.safetensors")) or any(source_dir.glob("pytorch_model*.bin"))):
        raise ValueError(f"{source_dir}: no weights (*.safetensors or pytorch_model*.bin)")
    block = QUANT_TYPES[quant_type][1]
    for key in ("hidden_size", "intermediate_size"):
        value = config.get(key)
        if not isinstance(value, int) or value % block:
            raise ValueError(f"{config_path}: {key} = {value} is not a multiple of {block}, which {quant_type} needs "
                             "(llama.cpp would silently fall back to another type for those tensors)")
    return config


def check_f16_gguf(path: Path) -> None:
    """Refuse a given F16 GGUF that is missing, not a whole GGUF model, or not F16 (its file named)."""
    import llama_cpp

    from invoker.runtimes.llamacpp_runtime import inspect_gguf

    if not path.is_file():
        raise ValueError(f"{path}: no such F16 GGUF file")
    info = inspect_gguf(path)
    if info.file_type != llama_cpp.LLAMA_FTYPE_MOSTLY_F16:
        raise ValueError(f"{path}: not an F16 GGUF (general.file_type = {info.file_type}); give the F16 variant's .gguf")


# --- 1. HF -> F16 GGUF with llama.cpp's converter ----------------------------------------------


def convert_to_f16(*, source_dir: Path, out_file: Path, model_name: str, converter_dir: Path, progress: bool = True) -> Path:
    """Run llama.cpp's converter on ``source_dir`` (with Invoker's chat template) and write an F16 GGUF to ``out_file``."""
    partial = out_file.with_name(f".{out_file.name}.partial")
    staging_root = out_file.with_name(f".{out_file.name}.staging")
    staging = staging_root / source_dir.name  # the converter derives metadata (e.g. general.finetune) from the dir name
    try:
        staging_root.mkdir()
        stage_source(source_dir=source_dir, staging=staging)
        command = [sys.executable, str(converter_dir / "convert_hf_to_gguf.py"), str(staging),
                   "--outfile", str(partial), "--outtype", "f16", "--model-name", model_name]
        run_converter(command=command, source_dir=source_dir, progress=progress)
        keep_add_bos(gguf_file=partial, source_dir=source_dir)
        os.replace(partial, out_file)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(staging_root, ignore_errors=True)
    return out_file


def keep_add_bos(*, gguf_file: Path, source_dir: Path) -> None:
    """Make the GGUF's ``tokenizer.ggml.add_bos_token`` say what the source's tokenizer_config.json says.

    llama.cpp's converter writes ``false`` for every 49152-token vocabulary (a rule meant for IBM
    Granite), which would make every llama.cpp-based tool prompt a BOS-trained model such as the
    bundled one without its BOS. The flag is one byte in the header: it is set in place, as gguf-py's
    ``gguf_set_metadata`` does.
    """
    import gguf

    wanted = json.loads((source_dir / "tokenizer_config.json").read_text()).get("add_bos_token")
    if not isinstance(wanted, bool):
        return
    reader = gguf.GGUFReader(str(gguf_file), "r+")
    field = reader.fields.get("tokenizer.ggml.add_bos_token")
    if field is not None and bool(field.parts[-1][0]) != wanted:
        field.parts[-1][0] = wanted
        reader.data.flush()


def stage_source(*, source_dir: Path, staging: Path) -> None:
    """A view of ``source_dir`` for the converter: weights symlinked, small files copied, Invoker's chat template written."""
    from invoker.chat_template import write_chat_template

    staging.mkdir()
    for path in sorted(source_dir.iterdir()):
        if not path.is_file() or path.name in ("chat_template.jinja", "chat_template.json"):
            continue
        if path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            (staging / path.name).symlink_to(path.resolve())
        else:
            shutil.copyfile(path, staging / path.name)
    write_chat_template(staging)


# --- 2. quantization with llama.cpp ----------------------------------------------------------------


def quantize_gguf(
    *,
    source_gguf: Path,
    out_file: Path,
    quant_type: str,
    imatrix: Imatrix | None = None,
    imatrix_file: str | None = None,
    imatrix_dataset: str | None = None,
    threads: int | None = None,
) -> Path:
    """Quantize an F16 GGUF to ``quant_type`` with ``llama_model_quantize`` (as ``llama-quantize --imatrix`` does,
    including its ``quantize.imatrix.*`` metadata), writing ``out_file`` via a temporary name."""
    import llama_cpp

    if quant_type not in QUANT_TYPES:
        raise ValueError(f"unknown GGUF quantization type {quant_type!r}; valid: {', '.join(QUANT_TYPES)}")
    if not Path(source_gguf).is_file():
        raise ValueError(f"{source_gguf}: no such GGUF file")
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant_type][0])
    params.nthread = threads or len(os.sched_getaffinity(0))
    keep_alive = []  # ctypes buffers params points into; must outlive the call
    if imatrix is not None:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix.sums) + 1))()
        for i, name in enumerate(sorted(imatrix.sums)):
            values = imatrix.importance(name)
            keep_alive.append(values)
            entries[i].name = name.encode()
            entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = values.size
        params.imatrix = entries  # the zeroed last entry (name NULL) ends the list
        overrides = _kv_overrides(llama_cpp, {
            "quantize.imatrix.file": imatrix_file or IMATRIX_NAME,
            "quantize.imatrix.dataset": (imatrix_dataset or "")[:127],
            "quantize.imatrix.entries_count": len(imatrix.sums),
            "quantize.imatrix.chunks_count": imatrix.chunk_count,
        })
        params.kv_overrides = overrides
        keep_alive += [entries, overrides]
    partial = out_file.with_name(f".{out_file.name}.partial")
    try:
        with llama_cpp_log_level(logging.ERROR):  # its per-tensor lines would bury the pipeline's progress
            code = llama_cpp.llama_model_quantize(str(source_gguf).encode(), str(partial).encode(), ctypes.byref(params))
        if code != 0:
            raise RuntimeError(f"llama.cpp failed to quantize {source_gguf} to {quant_type} (llama_model_quantize returned {code}; "
                               "its log above says why)")
        os.replace(partial, out_file)
    finally:
        partial.unlink(missing_ok=True)
    return out_file


@contextlib.contextmanager
def llama_cpp_log_level(level: int):
    """llama.cpp's log goes to stderr at ``level`` and above, for the block (errors say why a quantization failed)."""
    logger = logging.getLogger("llama-cpp-python")  # llama-cpp-python's log callback reads this logger's level
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _kv_overrides(llama_cpp, values: dict[str, str | int]):
    """A zero-terminated ``llama_model_kv_override`` array for string and integer metadata."""
    array = (llama_cpp.llama_model_kv_override * (len(values) + 1))()
    for i, (key, value) in enumerate(values.items()):
        array[i].key = key.encode()
        if isinstance(value, int):
            array[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            array[i].value.val_i64 = value
        else:
            array[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            array[i].value.val_str = value.encode()[:127]
    return array


def tool_versions() -> dict[str, str | None]:
    from invoker.manifest import tool_versions as versions

    return versions(TOOL_PACKAGES)


# --- command line: the one-time setup step --------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m convert.gguf --fetch-converter``: download llama.cpp's converter now (``make setup`` runs it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m convert.gguf", description=main.__doc__)
    parser.add_argument("--fetch-converter", action="store_true", required=True,
                        help="fetch convert_hf_to_gguf.py from the installed llama-cpp-python's sdist (once per environment)")
    parser.parse_args(argv)
    try:
        print(fetch_converter())
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
