"""Streaming a Llama-shaped checkpoint one decoder layer at a time: the walk the importance matrix, GPTQ and AWQ share.

The converters never build the model. Calibration samples are embedded once (float32, on the CPU);
then ``walk_layers`` reads each decoder layer's weights from the safetensors (or .bin) shards when its
turn comes (``CheckpointReader``: each read maps and unmaps its shard), hands the layer and the hidden
states to a callback — which measures it (the imatrix), quantizes it (GPTQ, AWQ), and returns the
hidden states the next layer sees — and drops it. Peak memory is one layer (float32) plus the
calibration activations, whatever the depth. ``LayerRunner`` runs a layer (or part of it) over the
samples with the causal mask and rotary embeddings transformers' Llama uses. Tensor and module names come from
the source's entry in ``convert.architectures``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from convert.architectures import Architecture, architecture_of, load_class



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
    try:
        architecture_of(config)
    except ValueError as err:
        raise ValueError(f"{config_path}: {err}") from None
    return config_path, config


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
        return list(torch.load(str(path), map_location="cpu", mmap=True, weights_only=True))

    def tensor(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise ValueError(f"{self.source_dir}: checkpoint has no tensor {name}")
        path = self._where[name]
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        return torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)[name].clone()


def model_config(source_dir: Path):
    """transformers' config for the source, set to compute attention with SDPA."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source_dir))
    config._attn_implementation = "sdpa"
    return config


def load_decoder_layer(*, config, index: int, weights: CheckpointReader, device):
    """Decoder layer ``index`` with its checkpoint weights, in float32 on ``device`` (built on meta, then assigned)."""
    architecture = architecture_of(config)
    with torch.device("meta"):
        layer = load_class(architecture.decoder_layer)(config, layer_idx=index)
    prefix = architecture.layer_prefix(index)
    state = {name: weights.tensor(prefix + name).to(device, torch.float32) for name in layer.state_dict()}
    layer.load_state_dict(state, assign=True, strict=True)
    return layer.eval()


def embed_samples(*, weights: CheckpointReader, samples: list[list[int]], architecture: Architecture) -> list[torch.Tensor]:
    """Each sample's input embeddings, float32 ``[1, tokens, hidden]`` on the CPU."""
    table = weights.tensor(architecture.embed_tokens)
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
        self.config = config
        self.architecture = architecture_of(config)  # the layer's layout, for the algorithms that run it
        self.device = device
        self.rotary = load_class(self.architecture.rotary_embedding)(config=config).to(device)

    def attention_inputs(self, states: torch.Tensor) -> dict:
        """Causal mask, positions and rotary embeddings for one sample (what a layer's forward needs besides states)."""
        from transformers.masking_utils import create_causal_mask

        positions = torch.arange(states.shape[1], device=self.device).unsqueeze(0)
        mask = create_causal_mask(
            config=self.config, inputs_embeds=states, attention_mask=None, past_key_values=None, position_ids=positions
        )
        return {"attention_mask": mask, "position_ids": positions, "position_embeddings": self.rotary(states, positions)}

    def forward(self, layer, hidden: list[torch.Tensor], *, observe: Callable[[str, torch.Tensor], None] | None = None,
                module_names: tuple[str, ...] = ()) -> list[torch.Tensor]:
        """The layer's outputs for every sample (float32, CPU). With ``observe``, the input of each
        ``layer.<name>`` in ``module_names`` (float32 ``[tokens, features]``) is handed to ``observe(name, inputs)``
        on the way."""
        handles = [layer.get_submodule(name).register_forward_pre_hook(_observer(name, observe))
                   for name in module_names] if observe else []
        outputs = []
        try:
            with torch.inference_mode():
                for states in hidden:
                    states = states.to(self.device)
                    outputs.append(layer(states, **self.attention_inputs(states)).float().cpu())
        finally:
            for handle in handles:
                handle.remove()
        return outputs

    def capture_inputs(self, layer, hidden: list[torch.Tensor], *, module_names: tuple[str, ...],
                       consume: Callable[[str, torch.Tensor], None]) -> None:
        """For every sample, hand the input of each ``layer.<name>`` (float32 ``[tokens, features]``) to
        ``consume(name, inputs)``. ``module_names`` are in execution order: each forward pass stops at
        the last one, as nothing after it is needed."""
        last = module_names[-1]

        def stop_after(name: str, inputs: torch.Tensor) -> None:
            consume(name, inputs)
            if name == last:
                raise _InputCaptured

        handles = [layer.get_submodule(name).register_forward_pre_hook(_observer(name, stop_after))
                   for name in module_names]
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


def _observer(name: str, observe: Callable[[str, torch.Tensor], None]):
    def hook(_module, args):
        observe(name, args[0].reshape(-1, args[0].shape[-1]).float())

    return hook


class _InputCaptured(Exception):
    """Raised by a capture hook to end a forward pass once the input it wanted has been seen."""


def walk_layers(*, source_dir: Path, samples: list[list[int]], device: torch.device, on_layer: Callable, desc: str,
                progress: bool) -> CheckpointReader:
    """Embed ``samples``, then for each decoder layer in turn read its weights and call
    ``on_layer(layer=, index=, hidden=, runner=)``, which returns the hidden states the next layer sees.
    One layer is in memory at a time. Returns the checkpoint's reader (for the tensors outside the layers)."""
    from tqdm import tqdm

    config = model_config(source_dir)
    weights = CheckpointReader(source_dir)
    runner = LayerRunner(config=config, device=device)
    hidden = embed_samples(weights=weights, samples=samples, architecture=runner.architecture)
    for index in tqdm(range(config.num_hidden_layers), desc=desc, unit="layer", disable=not progress, file=sys.stderr):
        layer = load_decoder_layer(config=config, index=index, weights=weights, device=device)
        hidden = on_layer(layer=layer, index=index, hidden=hidden, runner=runner)
        del layer
    return weights
