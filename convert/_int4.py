"""What GPTQ and AWQ share: their variant names, cheap checks of the source, and writing a 4-bit checkpoint
one decoder layer at a time.

Streaming: ``quantize_layers`` runs the converter's per-layer quantization on the shared layer walk
(``convert.checkpoint.walk_layers``: one decoder layer in memory at a time, its weights read from the
source's shards when its turn comes) and writes each quantized layer to its own output shard before the
next one is read. Peak memory is one layer (float32) plus the calibration activations, whatever the depth.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from convert.architectures import Architecture, architecture_of
from convert.calibration import CalibrationSet
from convert.checkpoint import CheckpointReader, read_llama_config, walk_layers
from convert.formats import VariantSettings

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)
_VARIANT_PATTERN = re.compile(r"^(?P<bits>4)bit-g(?P<group>\d+)(?P<actorder>-actorder)?$")
_PACK_WIDTH = 8  # 4-bit codes per int32 word
_INPUT_DIMS = ("hidden_size", "intermediate_size", "num_attention_heads * head_dim")  # widths that get grouped


@dataclass(frozen=True)
class Variant:
    name: str
    bits: int
    group_size: int
    act_order: bool

    @property
    def bits_per_weight(self) -> float:
        """Codes plus, per group of input columns and output row, an fp16 scale and a packed zero point."""
        return self.bits + (16 + self.bits) / self.group_size


def parse_variant(variant: str, *, variants: tuple[str, ...], title: str) -> Variant:
    """``4bit-g128`` -> 4 bits, groups of 128 input columns; ``-actorder`` adds GPTQ's act-order."""
    match = _VARIANT_PATTERN.match(variant) if variant in variants else None
    if match is None:
        raise ValueError(f"unknown {title} variant {variant!r}; valid: {', '.join(variants)}")
    return Variant(
        name=variant,
        bits=int(match["bits"]),
        group_size=int(match["group"]),
        act_order=bool(match["actorder"]),
    )


def variant_settings(variant: Variant) -> VariantSettings:
    return VariantSettings(bits_per_weight=variant.bits_per_weight, calibrates=True)


def check_source(*, source_dir: Path, group_size: int) -> dict:
    """The source's config.json, after checking that it is a Llama decoder we can quantize in groups of ``group_size``."""
    config_path, config = read_llama_config(source_dir)
    if config.get("quantization_config"):
        raise ValueError(f"{config_path}: the checkpoint is already quantized ({config['quantization_config'].get('quant_method')})")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ValueError(f"{config_path}: {key} is true; only Llama layers without biases are supported")
    if not any(source_dir.glob("*.safetensors")):
        raise ValueError(f"{source_dir}: no *.safetensors weights (layers are streamed from safetensors)")
    if not any((source_dir / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise ValueError(f"{source_dir}: no tokenizer (tokenizer.model or tokenizer.json)")
    for key, value in linear_dims(config).items():
        if key in _INPUT_DIMS and value % group_size:
            raise ValueError(
                f"{config_path}: {key} = {value} is not a multiple of the group size {group_size} "
                "(groups run along the input dimension); choose a variant whose group size divides it"
            )
        if value % _PACK_WIDTH:
            raise ValueError(f"{config_path}: {key} = {value} is not a multiple of {_PACK_WIDTH} (4-bit codes per int32 word)")
    return config


def linear_dims(config: dict) -> dict[str, int]:
    """Every input and output width of a decoder layer's linears, by what it is called in config.json."""
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else 0)
    kv_heads = config.get("num_key_value_heads") or heads
    dims = {
        "hidden_size": config.get("hidden_size"),
        "intermediate_size": config.get("intermediate_size"),
        "num_attention_heads * head_dim": (heads or 0) * head_dim,
        "num_key_value_heads * head_dim": (kv_heads or 0) * head_dim,
    }
    for key, value in dims.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"config.json: {key} = {value!r} is not a positive integer")
    return dims


def check_calibration(calibration: CalibrationSet | None) -> list[list[int]]:
    """The calibration samples, or a clear error when there are none."""
    if calibration is None:
        raise ValueError("GPTQ and AWQ need a calibration set (convert.calibration.build_calibration); got None")
    samples = [list(ids) for ids in calibration.input_ids if len(ids) > 0]
    if not samples:
        raise ValueError("the calibration set is empty: no samples with tokens to calibrate on")
    return samples


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when torch sees it, else CPU; a named CUDA device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available to torch {torch.__version__}")
    return torch_device


def norm_tensors(*, layer, index: int, architecture: Architecture) -> dict[str, torch.Tensor]:
    """A layer's RMSNorm weights, fp16, under their checkpoint names."""
    return {architecture.layer_tensor(index, name): layer.get_submodule(name).weight.detach().to("cpu", torch.float16)
            for name in architecture.norms}


def outside_layer_tensors(*, weights: CheckpointReader, architecture: Architecture) -> dict[str, torch.Tensor]:
    """Embeddings, final norm and ``lm_head`` (when not tied), unquantized in fp16."""
    tensors = {}
    for name in architecture.outside_layers:
        try:
            tensors[name] = weights.tensor(name).to(torch.float16)
        except ValueError:  # no such tensor: lm_head tied to the embeddings
            if name != architecture.lm_head:
                raise
    return tensors


class ShardWriter:
    """Write a checkpoint one shard at a time (a decoder layer per shard), then its index.

    Shards get their final ``model-0000i-of-0000n.safetensors`` names in ``finish``; a single shard
    is named ``model.safetensors`` with no index, as transformers does.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._shards: list[tuple[Path, list[str], int]] = []

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path = self.out_dir / f".shard-{len(self._shards):05d}.safetensors"
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(path), metadata={"format": "pt"})
        self._shards.append((path, sorted(tensors), sum(t.numel() * t.element_size() for t in tensors.values())))

    def finish(self) -> None:
        """Rename the shards into place and write ``model.safetensors.index.json`` (several shards only)."""
        if len(self._shards) == 1:
            self._shards[0][0].rename(self.out_dir / "model.safetensors")
            return
        total = len(self._shards)
        weight_map = {}
        for number, (path, tensor_names, _) in enumerate(self._shards, start=1):
            name = f"model-{number:05d}-of-{total:05d}.safetensors"
            path.rename(self.out_dir / name)
            weight_map.update({tensor: name for tensor in tensor_names})
        index = {"metadata": {"total_size": sum(size for _, _, size in self._shards)}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def quantize_layers(
    *,
    source_dir: Path,
    out_dir: Path,
    samples: list[list[int]],
    device: torch.device,
    quantize_layer: Callable,
    desc: str,
    progress: bool,
) -> None:
    """Write the quantized checkpoint: for each decoder layer in turn (``walk_layers``), ``quantize_layer(layer=,
    index=, hidden=, runner=)`` returns the packed tensors per linear (``{"self_attn.q_proj": {"qweight": …, …}}``)
    and the hidden states the next layer calibrates on; the layer's shard is written (with its norms as they
    are afterwards) before the next layer is read. Last, the tensors outside the layers."""
    writer = ShardWriter(out_dir)
    _, config = read_llama_config(source_dir)
    architecture = architecture_of(config)

    def quantize_and_write(*, layer, index, hidden, runner):
        packed, hidden = quantize_layer(layer=layer, index=index, hidden=hidden, runner=runner)
        tensors = norm_tensors(layer=layer, index=index, architecture=architecture)
        for name, values in packed.items():
            tensors.update({architecture.layer_tensor(index, name, key): value for key, value in values.items()})
        writer.write(tensors)
        return hidden

    weights = walk_layers(source_dir=source_dir, samples=samples, device=device, on_layer=quantize_and_write,
                          desc=desc, progress=progress)
    writer.write(outside_layer_tensors(weights=weights, architecture=architecture))
    writer.finish()


def write_config(*, source_config: dict, out_dir: Path, quantization_config: dict) -> None:
    """The source's config.json with ``quantization_config`` and fp16 as the unquantized tensors' dtype."""
    config = dict(source_config)
    config["quantization_config"] = quantization_config
    config["dtype"] = "float16"
    if "torch_dtype" in config:  # the name older readers look for
        config["torch_dtype"] = "float16"
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def copy_tokenizer_files(*, source_dir: Path, out_dir: Path) -> None:
    """Copy the tokenizer, chat template and generation config next to the weights."""
    for name in TOKENIZER_FILES:
        if (source_dir / name).is_file():
            shutil.copyfile(source_dir / name, out_dir / name)
