"""HF Llama checkpoint -> GGUF (F16, Q8_0, k-quants ...) with llama.cpp's own tools, plus an Ollama Modelfile.

The steps, each one function (docs/GGUF.md explains every choice and its evidence):

1. ``convert_to_f16`` runs llama.cpp's ``convert_hf_to_gguf.py`` — the maintained HF -> GGUF mapping
   (tensor names, the Q/K RoPE permutation, sentencepiece vocabulary, special tokens) — from the
   sdist of the *installed* llama-cpp-python release (``fetch_converter``), so converter and runtime
   come from the same llama.cpp commit. It streams tensors lazily: peak memory does not grow with
   the number of layers. A staging dir gives it Invoker's chat template, which lands in the GGUF as
   ``tokenizer.chat_template`` (llama.cpp and llama-cpp-python then render Invoker's format by themselves).
2. ``compute_imatrix`` computes llama.cpp's importance matrix (per linear layer, the mean of x² per
   input column over the calibration tokens) with torch, one decoder layer in memory at a time;
   ``write_imatrix`` saves it in llama.cpp's GGUF imatrix format (``llama-quantize --imatrix`` reads it).
3. ``quantize_gguf`` calls llama.cpp's quantizer (``llama_model_quantize``) with that matrix.

Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from convert.calibration import CalibrationSet
from invoker.files import sha256_file

VARIANTS: tuple[str, ...] = ("F16", "Q8_0", "Q5_K_M", "Q4_K_M")
NO_IMATRIX_SUFFIX = "-noimatrix"
IMATRIX_NAME = "imatrix.gguf"
MODELFILE_NAME = "Modelfile"

# llama.cpp type name -> (llama_ftype constant in llama_cpp, row block size the type needs, uses an imatrix)
QUANT_TYPES: dict[str, tuple[str, int, bool]] = {
    "F16": ("LLAMA_FTYPE_MOSTLY_F16", 1, False),
    "BF16": ("LLAMA_FTYPE_MOSTLY_BF16", 1, False),
    "Q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 32, False),
    "Q6_K": ("LLAMA_FTYPE_MOSTLY_Q6_K", 256, True),
    "Q5_K_M": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 256, True),
    "Q5_K_S": ("LLAMA_FTYPE_MOSTLY_Q5_K_S", 256, True),
    "Q5_0": ("LLAMA_FTYPE_MOSTLY_Q5_0", 32, True),
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 256, True),
    "Q4_K_S": ("LLAMA_FTYPE_MOSTLY_Q4_K_S", 256, True),
    "Q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 32, True),
    "Q3_K_L": ("LLAMA_FTYPE_MOSTLY_Q3_K_L", 256, True),
    "Q3_K_M": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 256, True),
    "Q2_K": ("LLAMA_FTYPE_MOSTLY_Q2_K", 256, True),
    "IQ4_XS": ("LLAMA_FTYPE_MOSTLY_IQ4_XS", 256, True),
}
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
TOOL_PACKAGES = ("llama-cpp-python", "gguf", "torch", "transformers", "sentencepiece", "numpy")
FETCH_ARGS = "-m convert.gguf --fetch-converter"  # run with the environment's python: .venv/bin/python -m convert.gguf ...


@dataclass(frozen=True)
class Imatrix:
    """llama.cpp's importance matrix: per GGUF weight name, the sum of x² per input column and the token count.

    Sums are float32, as the imatrix file stores them, so a matrix used at once and one read back
    from its file quantize identically (and as ``llama-quantize --imatrix`` would)."""

    sums: dict[str, np.ndarray]  # float32, one value per input column
    counts: dict[str, int]
    chunk_count: int
    chunk_size: int

    def importance(self, name: str) -> np.ndarray:
        """What llama.cpp's quantizer weighs columns by: the mean of x², computed as llama-quantize does (float32)."""
        return self.sums[name] / np.float32(self.counts[name])


# --- the one call a pipeline makes ------------------------------------------------------------


def convert(
    *,
    source_dir: Path,
    out_dir: Path,
    variant: str,
    calibration: CalibrationSet | None,
    progress: bool = True,
    model_name: str | None = None,
    f16_gguf: Path | None = None,
    imatrix_gguf: Path | None = None,
) -> dict:
    """Write ``<model>-<TYPE>.gguf`` (+ ``imatrix.gguf`` for imatrix types, + ``Modelfile``) into ``out_dir``.

    ``variant`` is a llama.cpp type name (``QUANT_TYPES``), optionally with ``-noimatrix`` to quantize
    an imatrix type without one (for comparison). Reuse, to avoid repeating the slow steps for each
    variant: ``f16_gguf`` — an F16 GGUF this module made from the same source, quantized directly;
    ``imatrix_gguf`` — an ``imatrix.gguf`` this module computed from the same calibration set (ignored
    by types that use no imatrix). Returns the manifest details.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    quant_type, use_imatrix = parse_variant(variant)
    config = check_source(source_dir=source_dir, quant_type=quant_type)
    if use_imatrix and (calibration is None or not calibration.input_ids):
        raise ValueError(
            f"variant {variant} quantizes with an importance matrix and needs a non-empty calibration set "
            f"(or name the variant {quant_type}{NO_IMATRIX_SUFFIX})"
        )
    if not out_dir.is_dir():
        raise ValueError(f"{out_dir}: output directory does not exist")
    if f16_gguf is not None and quant_type != "F16":
        check_f16_gguf(Path(f16_gguf))
    imatrix = None
    if use_imatrix and imatrix_gguf is not None:
        imatrix = read_imatrix(Path(imatrix_gguf), expect_dataset=calibration_label(calibration))
    name = model_name or source_dir.name
    gguf_name = f"{name}-{variant}.gguf"  # Q4_K_M and Q4_K_M-noimatrix must not share a name in one repo
    converter = fetch_converter()  # also when reusing an F16 GGUF: its provenance goes into the manifest
    started = time.perf_counter()
    timings: dict[str, float] = {}
    work = out_dir / ".work"
    work.mkdir(exist_ok=True)
    try:
        if quant_type == "F16":
            convert_to_f16(source_dir=source_dir, out_file=out_dir / gguf_name, model_name=name, converter_dir=converter, progress=progress)
            timings["convert_seconds"] = round(time.perf_counter() - started, 3)
        else:
            if f16_gguf is None:
                f16_gguf = work / f"{name}-F16.gguf"
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
            "method": "llama.cpp llama_model_quantize" if quant_type != "F16" else "llama.cpp convert_hf_to_gguf.py",
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


def read_llama_config(source_dir: Path) -> tuple[Path, dict]:
    """The source's config.json (its path and contents), after checking it describes a Llama decoder."""
    if not source_dir.is_dir():
        raise ValueError(f"{source_dir}: no such model directory")
    config_path = source_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{source_dir}: no config.json (expected a Hugging Face checkpoint dir)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: not readable JSON ({err})") from None
    architectures = config.get("architectures") or []
    if not any(arch in SUPPORTED_ARCHITECTURES for arch in architectures):
        raise ValueError(f"{config_path}: architectures {architectures} is not a Llama decoder "
                         f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    return config_path, config


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


# --- 1. HF -> F16 GGUF with llama.cpp's converter -----------------------------------------------


def default_converter_dir(version: str) -> Path:
    """Where the converter of llama-cpp-python ``version`` is kept: inside the environment, beside the package."""
    return Path(sys.prefix) / "share" / "invoker-pack" / f"llama.cpp-convert-{version}"


def fetch_converter(*, version: str | None = None, dest: Path | None = None) -> Path:
    """The dir holding llama.cpp's ``convert_hf_to_gguf.py`` (+ ``conversion/``, bundled ``gguf-py``) from the
    installed llama-cpp-python's own sdist; downloaded once with pip from the package index, then reused.

    ``make setup`` runs it once (``python -m convert.gguf --fetch-converter``), so conversion needs no
    network later; without it, the first conversion downloads it, or says which command to run."""
    version = version or installed_version("llama-cpp-python")
    dest = dest or default_converter_dir(version)
    if (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        try:
            sdist = download_sdist(version=version, into=Path(tmp))
        except RuntimeError as err:
            raise RuntimeError(
                f"llama.cpp's converter (convert_hf_to_gguf.py from the llama-cpp-python {version} sdist) is not in {dest} "
                f"and could not be downloaded: {err}. Fetch it once, while the package index is reachable, with: "
                f"{sys.executable} {FETCH_ARGS} (make setup runs it)"
            ) from None
        staged = Path(tmp) / "converter"
        extract_converter(sdist=sdist, version=version, into=staged)
        (staged / "SOURCE.json").write_text(json.dumps({
            "package": "llama-cpp-python",
            "version": version,
            "sdist": sdist.name,
            "sdist_sha256": sha256_file(sdist),
            "members": list(CONVERTER_MEMBERS),
        }, indent=2) + "\n")
        os.replace(staged, dest)
    return dest


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"{package} is not installed; install the gguf extra (make setup EXTRAS=gguf,dev)") from None


def download_sdist(*, version: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
               "--retries", "2", "--timeout", "30", f"llama-cpp-python=={version}", "-d", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    sdists = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not sdists:
        tail = (done.stderr or done.stdout).strip().splitlines()[-2:]
        raise RuntimeError(f"pip download failed ({' | '.join(tail) or 'no sdist'})")
    return sdists[0]


def extract_converter(*, sdist: Path, version: str, into: Path) -> None:
    """Copy only the converter's files out of the sdist (vendor/llama.cpp/...), refusing any path that escapes."""
    root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist, "r:gz") as archive:
        wanted = [m for m in archive.getmembers()
                  if m.name.startswith(root) and m.name[len(root):].startswith(CONVERTER_MEMBERS) and m.isfile()]
        if not any(m.name == root + "convert_hf_to_gguf.py" for m in wanted):
            raise RuntimeError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
        for member in wanted:
            relative = Path(member.name[len(root):])
            if relative.is_absolute() or ".." in relative.parts:
                raise RuntimeError(f"{sdist}: unsafe path {member.name}")
            target = into / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as data, open(target, "wb") as out:
                shutil.copyfileobj(data, out)


def converter_provenance(converter_dir: Path) -> dict:
    source = json.loads((converter_dir / "SOURCE.json").read_text())
    return {"script": "convert_hf_to_gguf.py", **{k: source[k] for k in ("package", "version", "sdist", "sdist_sha256")}}


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


def run_converter(*, command: list[str], source_dir: Path, progress: bool) -> None:
    """Run the converter; show its log and progress lines (not the echoed chat template) when ``progress``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tail: list[str] = []
    buffer = b""
    while chunk := process.stderr.read1(65536):
        buffer += chunk
        *segments, buffer = _split_keep(buffer)
        for segment in segments:
            text = segment.decode("utf-8", errors="replace")
            tail = (tail + [text.rstrip()])[-20:] if text.strip() else tail
            if progress and text.startswith(("WARNING:", "ERROR:", "Writing:")):
                sys.stderr.write(text if len(text) < 240 else text[:200] + " …\n")
                sys.stderr.flush()
    process.wait()
    if process.returncode != 0:
        reason = "\n".join(line for line in tail if line)[-2000:]
        raise RuntimeError(f"llama.cpp convert_hf_to_gguf.py failed on {source_dir} (exit {process.returncode}):\n{reason}")


def _split_keep(data: bytes) -> list[bytes]:
    """Split after every \\n or \\r, keeping them; the last item is the unfinished rest."""
    parts, start = [], 0
    for index, byte in enumerate(data):
        if byte in (10, 13):
            parts.append(data[start : index + 1])
            start = index + 1
    return [*parts, data[start:]]


# --- 2. the importance matrix -------------------------------------------------------------------


def compute_imatrix(*, source_dir: Path, calibration: CalibrationSet, device: str = "cpu", progress: bool = True) -> Imatrix:
    """llama.cpp's importance matrix for every linear layer of the decoder blocks (as ``llama-imatrix`` collects
    it: inputs to ``blk.*`` weights, not ``output.weight``), from the calibration samples.

    Runs one decoder layer at a time (weights read from the checkpoint per layer, hidden states of all
    samples kept in float32), so memory is one layer plus the activations, whatever the depth.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoConfig
    from transformers.masking_utils import create_causal_mask
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = AutoConfig.from_pretrained(str(source_dir))
    config._attn_implementation = "sdpa"
    weights = CheckpointReader(source_dir)
    torch_device = torch.device(device)
    embed = weights.tensor("model.embed_tokens.weight").to(torch_device)
    hidden = [torch.nn.functional.embedding(torch.tensor([ids], device=torch_device), embed).float()
              for ids in calibration.input_ids]
    del embed
    rotary = LlamaRotaryEmbedding(config=config).to(torch_device)
    names = gguf_weight_names(n_layers=config.num_hidden_layers)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def accumulate(name: str):
        def hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            sums[name] = sums.get(name, 0) + x.pow(2).sum(0, dtype=torch.float64)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    for index in tqdm(range(config.num_hidden_layers), desc="imatrix", unit="layer", disable=not progress, file=sys.stderr):
        layer = load_decoder_layer(config=config, index=index, weights=weights, device=torch_device)
        hooks = [
            module.register_forward_pre_hook(accumulate(names[f"model.layers.{index}.{module_name}.weight"]))
            for module_name, module in layer.named_modules()
            if isinstance(module, torch.nn.Linear)
        ]
        with torch.inference_mode():
            for k, states in enumerate(hidden):
                positions = torch.arange(states.shape[1], device=torch_device).unsqueeze(0)
                mask = create_causal_mask(config=config, inputs_embeds=states, attention_mask=None,
                                          past_key_values=None, position_ids=positions)
                hidden[k] = layer(states, attention_mask=mask, position_ids=positions,
                                  position_embeddings=rotary(states, positions))
        for hook in hooks:
            hook.remove()
        del layer
    return Imatrix(
        sums={name: value.cpu().numpy().astype(np.float32) for name, value in sorted(sums.items())},
        counts=dict(sorted(counts.items())),
        chunk_count=len(calibration.input_ids),
        chunk_size=calibration.spec.max_length,
    )


def gguf_weight_names(*, n_layers: int) -> dict[str, str]:
    """HF weight name -> GGUF tensor name for a Llama's block linears, from gguf's maintained tensor map."""
    import gguf

    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    modules = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    names = {}
    for index in range(n_layers):
        for module in modules:
            hf_name = f"model.layers.{index}.{module}.weight"
            gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight",))
            if gguf_name is None:
                raise RuntimeError(f"gguf's tensor map has no name for {hf_name}")
            names[hf_name] = gguf_name
    return names


class CheckpointReader:
    """Read single tensors from a checkpoint's safetensors (or PyTorch .bin) shards without loading the rest.

    Each read maps the shard and unmaps it again, so pages of layers already done do not stay mapped.
    """

    def __init__(self, source_dir: Path) -> None:
        self.source_dir = Path(source_dir)
        self._where = self._index()

    def _index(self) -> dict[str, Path]:
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index_path = self.source_dir / index_name
            if index_path.is_file():
                weight_map = json.loads(index_path.read_text())["weight_map"]
                return {name: self.source_dir / file for name, file in weight_map.items()}
        for file_name in ("model.safetensors", "pytorch_model.bin"):
            path = self.source_dir / file_name
            if path.is_file():
                return {name: path for name in self._names(path)}
        raise ValueError(f"{self.source_dir}: no model.safetensors, pytorch_model.bin or shard index")

    @staticmethod
    def _names(path: Path) -> list[str]:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return list(handle.keys())
        import torch

        return list(torch.load(str(path), map_location="cpu", mmap=True, weights_only=True))

    def tensor(self, name: str):
        if name not in self._where:
            raise ValueError(f"{self.source_dir}: checkpoint has no tensor {name}")
        path = self._where[name]
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        import torch

        return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)[name].clone()


def load_decoder_layer(*, config, index: int, weights: CheckpointReader, device):
    """Decoder layer ``index`` with its checkpoint weights, in float32 on ``device`` (built on meta, then assigned)."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    with torch.device("meta"):
        layer = LlamaDecoderLayer(config, layer_idx=index)
    prefix = f"model.layers.{index}."
    state = {name: weights.tensor(prefix + name).to(device, torch.float32) for name in layer.state_dict()}
    layer.load_state_dict(state, assign=True, strict=True)
    return layer.eval()


def write_imatrix(imatrix: Imatrix, path: Path, *, dataset: str, arch: str) -> Path:
    """Save in llama.cpp's GGUF imatrix format: ``<name>.in_sum2`` and ``<name>.counts`` (F32) per weight,
    ``general.type = imatrix``, ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``."""
    import gguf

    partial = path.with_name(f".{path.name}.partial")
    try:
        writer = gguf.GGUFWriter(str(partial), arch=arch)
        writer.add_type("imatrix")
        writer.add_array("imatrix.datasets", [dataset])
        writer.add_uint32("imatrix.chunk_count", imatrix.chunk_count)
        writer.add_uint32("imatrix.chunk_size", imatrix.chunk_size)
        for name in sorted(imatrix.sums):
            writer.add_tensor(f"{name}.in_sum2", imatrix.sums[name].reshape(1, -1))
            writer.add_tensor(f"{name}.counts", np.array([[imatrix.counts[name]]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def read_imatrix(path: Path, *, expect_dataset: str | None = None) -> Imatrix:
    """Read an imatrix written by ``write_imatrix`` (or ``llama-imatrix``); with ``expect_dataset``, refuse one
    computed from another calibration set."""
    import gguf

    if not path.is_file():
        raise ValueError(f"{path}: no such imatrix file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:
        raise ValueError(f"{path}: not a readable GGUF imatrix ({type(err).__name__}: {err})") from None
    fields = reader.fields
    if "general.type" not in fields or fields["general.type"].contents() != "imatrix":
        raise ValueError(f"{path}: not an imatrix GGUF (general.type is not 'imatrix')")
    datasets = fields["imatrix.datasets"].contents() if "imatrix.datasets" in fields else []
    if expect_dataset is not None and datasets != [expect_dataset]:
        raise ValueError(f"{path}: computed from {datasets}, not from this calibration set ({expect_dataset})")
    tensors = {t.name: np.ravel(t.data) for t in reader.tensors}
    names = sorted(name.removesuffix(".in_sum2") for name in tensors if name.endswith(".in_sum2"))
    return Imatrix(
        sums={name: tensors[f"{name}.in_sum2"].astype(np.float32) for name in names},
        counts={name: int(tensors[f"{name}.counts"][0]) for name in names},
        chunk_count=int(fields["imatrix.chunk_count"].contents()),
        chunk_size=int(fields["imatrix.chunk_size"].contents()),
    )


def calibration_label(calibration: CalibrationSet) -> str:
    """The dataset line recorded in the imatrix and the GGUF: source, size and hash of the calibration ids."""
    spec = calibration.spec
    return (f"invoker-pack calibration source={spec.source} n_samples={len(calibration.input_ids)} "
            f"max_length={spec.max_length} seed={spec.seed} sha256={calibration.sha256[:16]}")


# --- 3. quantization with llama.cpp ----------------------------------------------------------------


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
