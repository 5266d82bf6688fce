"""llama.cpp's importance matrix, computed with torch on the shared layer walk, and its GGUF file.

``compute_imatrix`` collects what ``llama-imatrix`` collects — per linear weight of the decoder blocks
(not ``output.weight``), the sum of x² per input column and the number of tokens — over the
calibration samples, as one more per-layer callback of ``convert.checkpoint.walk_layers`` (one decoder
layer in memory at a time). ``write_imatrix`` / ``read_imatrix`` keep it in llama.cpp's GGUF imatrix
format, which ``llama-quantize --imatrix`` reads; ``convert.gguf.quantize_gguf`` hands it to llama.cpp.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.architectures import Architecture
from convert.calibration import CalibrationSet

IMATRIX_NAME = "imatrix.gguf"


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


def compute_imatrix(*, source_dir: Path, calibration: CalibrationSet, device: str = "cpu", progress: bool = True) -> Imatrix:
    """llama.cpp's importance matrix for every linear layer of the decoder blocks (as ``llama-imatrix`` collects
    it: inputs to ``blk.*`` weights, not ``output.weight``), from the calibration samples.

    One decoder layer at a time (``walk_layers``), hidden states of all samples kept in float32, so memory
    is one layer plus the activations, whatever the depth.
    """
    import torch

    from convert.checkpoint import walk_layers

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def on_layer(*, layer, index, hidden, runner):
        architecture = runner.architecture
        names = gguf_weight_names(n_layers=runner.config.num_hidden_layers, architecture=architecture)

        def accumulate(module_name: str, inputs: torch.Tensor) -> None:
            name = names[architecture.layer_tensor(index, module_name)]
            sums[name] = sums.get(name, 0) + inputs.pow(2).sum(0, dtype=torch.float64)
            counts[name] = counts.get(name, 0) + inputs.shape[0]

        return runner.forward(layer, hidden, observe=accumulate, module_names=architecture.linears)

    walk_layers(source_dir=Path(source_dir), samples=[list(ids) for ids in calibration.input_ids],
                device=torch.device(device), on_layer=on_layer, desc="imatrix", progress=progress)
    return Imatrix(
        sums={name: value.cpu().numpy().astype(np.float32) for name, value in sorted(sums.items())},
        counts=dict(sorted(counts.items())),
        chunk_count=len(calibration.input_ids),
        chunk_size=calibration.spec.max_length,
    )


def gguf_weight_names(*, n_layers: int, architecture: Architecture) -> dict[str, str]:
    """HF weight name -> GGUF tensor name for the block linears, from gguf's maintained tensor map."""
    import gguf

    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[architecture.gguf_arch], n_layers)
    names = {}
    for index in range(n_layers):
        for module in architecture.linears:
            hf_name = architecture.layer_tensor(index, module)
            gguf_name = tensor_map.get_name(hf_name, try_suffixes=(".weight",))
            if gguf_name is None:
                raise RuntimeError(f"gguf's tensor map has no name for {hf_name}")
            names[hf_name] = gguf_name
    return names


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
