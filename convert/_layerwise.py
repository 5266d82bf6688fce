"""What GPTQ and AWQ share: check the source cheaply, walk its decoder layers one at a time, write the result.

Streaming: the converters never build the model. Calibration hidden states (float32, on the CPU) go
through one ``LlamaDecoderLayer`` at a time, its weights read from the safetensors shards when the
layer's turn comes (``convert.gguf.CheckpointReader``: each read maps and unmaps its shard), and the
quantized layer is written to its own output shard before the next one is read. Peak memory is one
layer (float32) plus the calibration activations, whatever the depth.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from convert.calibration import CalibrationSet
from convert.gguf import CheckpointReader, load_decoder_layer, read_llama_config

LINEAR_NAMES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
NORM_NAMES = ("input_layernorm", "post_attention_layernorm")
OUTSIDE_LAYERS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")  # kept in fp16
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


def parse_variant(variant: str, *, variants: tuple[str, ...]) -> Variant:
    """``4bit-g128`` -> 4 bits, groups of 128 input columns; ``-actorder`` adds GPTQ's act-order."""
    match = _VARIANT_PATTERN.match(variant) if variant in variants else None
    if match is None:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(variants)}")
    return Variant(
        name=variant,
        bits=int(match["bits"]),
        group_size=int(match["group"]),
        act_order=bool(match["actorder"]),
    )


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


def model_config(source_dir: Path):
    """transformers' config for the source, set to compute attention with SDPA."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source_dir))
    config._attn_implementation = "sdpa"
    return config


def embed_samples(*, weights: CheckpointReader, samples: list[list[int]]) -> list[torch.Tensor]:
    """Each sample's input embeddings, float32 ``[1, tokens, hidden]`` on the CPU."""
    table = weights.tensor("model.embed_tokens.weight")
    vocab = table.shape[0]
    for number, ids in enumerate(samples):
        if max(ids) >= vocab or min(ids) < 0:
            raise ValueError(f"calibration sample {number} has token ids outside the model's vocabulary of {vocab}")
    return [table[torch.tensor(ids)].float().unsqueeze(0) for ids in samples]


class LayerRunner:
    """Runs one decoder layer (or a part of it) over the calibration samples, one sample at a time.

    Hidden states live on the CPU; each sample visits ``device`` for its forward pass.
    """

    def __init__(self, *, config, device: torch.device) -> None:
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        self.config = config
        self.device = device
        self.rotary = LlamaRotaryEmbedding(config=config).to(device)

    def attention_inputs(self, states: torch.Tensor) -> dict:
        """Causal mask, positions and rotary embeddings for one sample (what a layer's forward needs besides states)."""
        from transformers.masking_utils import create_causal_mask

        positions = torch.arange(states.shape[1], device=self.device).unsqueeze(0)
        mask = create_causal_mask(
            config=self.config, inputs_embeds=states, attention_mask=None, past_key_values=None, position_ids=positions
        )
        return {"attention_mask": mask, "position_ids": positions, "position_embeddings": self.rotary(states, positions)}

    def forward(self, layer, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        """The layer's outputs for every sample (float32, CPU)."""
        outputs = []
        with torch.inference_mode():
            for states in hidden:
                states = states.to(self.device)
                outputs.append(layer(states, **self.attention_inputs(states)).float().cpu())
        return outputs

    def capture_inputs(self, layer, hidden: list[torch.Tensor], *, module_names: tuple[str, ...],
                       consume: Callable[[str, torch.Tensor], None]) -> None:
        """For every sample, hand the input of each ``layer.<name>`` (float32 ``[tokens, features]``) to
        ``consume(name, inputs)``. ``module_names`` are in execution order: each forward pass stops at
        the last one, as nothing after it is needed."""
        last = module_names[-1]

        def hook_for(name: str):
            def hook(_module, args):
                consume(name, args[0].reshape(-1, args[0].shape[-1]).float())
                if name == last:
                    raise _InputCaptured

            return hook

        handles = [layer.get_submodule(name).register_forward_pre_hook(hook_for(name)) for name in module_names]
        try:
            with torch.inference_mode():
                for states in hidden:
                    states = states.to(self.device)
                    try:
                        layer(states, **self.attention_inputs(states))
                    except _InputCaptured:
                        pass
        finally:
            for handle in handles:
                handle.remove()


class _InputCaptured(Exception):
    """Raised by a capture hook to end a forward pass once the input it wanted has been seen."""


def norm_tensors(*, layer, index: int) -> dict[str, torch.Tensor]:
    """A layer's RMSNorm weights, fp16, under their checkpoint names."""
    return {f"model.layers.{index}.{name}.weight": layer.get_submodule(name).weight.detach().to("cpu", torch.float16)
            for name in NORM_NAMES}


def outside_layer_tensors(*, weights: CheckpointReader) -> dict[str, torch.Tensor]:
    """Embeddings, final norm and ``lm_head`` (when not tied), unquantized in fp16."""
    tensors = {}
    for name in OUTSIDE_LAYERS:
        try:
            tensors[name] = weights.tensor(name).to(torch.float16)
        except ValueError:  # no such tensor: lm_head tied to the embeddings
            if name != "lm_head.weight":
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
    """The walk both converters share: embed the samples, then for each decoder layer in turn read its
    weights, hand it to ``quantize_layer(layer=, index=, hidden=, runner=)`` — which returns the packed tensors
    per linear (``{"self_attn.q_proj": {"qweight": …, …}}``) and the hidden states the next layer calibrates
    on — and write its shard (with the layer's norms as they are afterwards); last the tensors outside the
    layers. One layer is in memory at a time."""
    from tqdm import tqdm

    config = model_config(source_dir)
    weights = CheckpointReader(source_dir)
    hidden = embed_samples(weights=weights, samples=samples)
    runner = LayerRunner(config=config, device=device)
    writer = ShardWriter(out_dir)
    for index in tqdm(range(config.num_hidden_layers), desc=desc, unit="layer", disable=not progress, file=sys.stderr):
        layer = load_decoder_layer(config=config, index=index, weights=weights, device=device)
        packed, hidden = quantize_layer(layer=layer, index=index, hidden=hidden, runner=runner)
        tensors = norm_tensors(layer=layer, index=index)
        for name, values in packed.items():
            tensors.update({f"model.layers.{index}.{name}.{key}": value for key, value in values.items()})
        writer.write(tensors)
        del layer, packed, tensors
    writer.write(outside_layer_tensors(weights=weights))
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
