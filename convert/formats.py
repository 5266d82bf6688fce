"""The format registry: one ``FormatSpec`` per quantization format, and the protocol its converter module follows.

Everything outside the converter that depends on the format reads it from here: the recipe's variant
names, which variants need the calibration set, the convert stage's tool versions, which runtime
loads the artifact, the Hub repo a variant goes to, the model card's tags, library and usage
snippets. Adding a format is one converter module (``Converter`` below) and one entry in ``FORMATS``;
a runtime too only if no runtime of ``invoker.runtimes`` loads it yet (docs/FORMATS.md).

This module imports nothing heavy: converter modules are imported when a variant is parsed or built.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from convert.calibration import CalibrationSet


@dataclass(frozen=True)
class VariantSettings:
    """What a variant's name says, from ``Converter.variant_settings``."""

    bits_per_weight: float  # nominal storage per quantized weight, scales included: F16 16, Q8_0 8.5, 4bit-g128 4.16
    calibrates: bool  # the conversion needs the calibration set
    comparison: bool = False  # built to compare with (an ablation), not to publish, unless the recipe says otherwise
    ablation_of: str | None = None  # the variant this one is an ablation of (GGUF: Q4_K_M-noimatrix -> Q4_K_M)


class Converter(Protocol):
    """A converter module, ``convert/<format>.py`` — the writing side of a format, as
    ``invoker.runtimes.base.Runtime`` is the reading side. The pipeline calls these and nothing else."""

    def variant_settings(self, variant: str) -> VariantSettings:
        """Parse a variant name (``"Q4_K_M"``, ``"4bit-g128"``); a ``ValueError`` names the valid choices:
        ``"unknown GGUF variant 'Q9'; valid: F16, Q8_0, …"``."""

    def convert(self, *, source_dir: Path, out_dir: Path, variant: str, calibration: CalibrationSet | None,
                progress: bool, model_name: str, shared_dir: Path | None) -> dict:
        """Write the artifact into ``out_dir`` (an empty temp dir the pipeline renames into place), in the layout
        the format's runtime loads. ``calibration`` is given when ``variant_settings(variant).calibrates``;
        ``model_name`` names files where the format names them after the model; ``shared_dir`` is what
        ``build_shared`` wrote, or None. Returns the manifest's ``conversion`` details, with ``"tools"``
        (package -> version) among them."""


class SharedBaseConverter(Converter, Protocol):
    """A converter whose variants reuse one base built once per run (``FormatSpec.shared_base``): GGUF quantizes
    every type from one F16 GGUF with one importance matrix."""

    def shared_base_needed(self, variants: list[str]) -> bool:
        """Whether these variants use a shared base at all (GGUF: any type but F16)."""

    def build_shared(self, *, source_dir: Path, out_dir: Path, model_name: str, calibration: CalibrationSet | None,
                     progress: bool) -> None:
        """Write the base into ``out_dir`` (an empty temp dir); ``calibration`` is given when a variant calibrates."""


@dataclass(frozen=True)
class FormatSpec:
    """One format: how it is named, converted, loaded, published and documented."""

    name: str  # the recipe's prefix (gguf:Q4_K_M), the manifest's "format", the variant dir's prefix (gguf-Q4_K_M)
    title: str  # as people write it: "GGUF"
    converter: str | None  # the module implementing Converter; None for the baseline, which is the source itself
    runtime: str  # the invoker.runtimes runtime that loads it (eval, bench and serve load through it)
    tool_packages: tuple[str, ...]  # their versions go into the manifest and the convert stage's inputs
    variants: tuple[str, ...] = ()  # the documented variants (errors list them; more may parse)
    shared_base: bool = False  # the converter is a SharedBaseConverter
    converts_on_cuda: bool = False  # its convert() takes ``device`` ("auto", "cpu", "cuda"): the recipe's convert.device
    repo_suffix: str = ""  # the Hub repo is <model>-<suffix>
    default_variant: str | None = None  # published as <model>-<suffix>, any other as <model>-<suffix>-<variant>;
    #                                     None: every variant of the format in the one repo
    recommended: tuple[str, ...] = ()  # the variant a card's usage snippets name: the first of these its repo holds
    repo_names: Mapping[str, str] = field(default_factory=dict)  # in a repo of several variants, a variant's file
    #                                                               is renamed so they do not collide: "{variant}"
    card_tags: tuple[str, ...] = ()
    card_library: str = ""  # the card's library_name
    snippets: tuple[str, ...] = ()  # the usage snippets of its cards (pipelines.snippets), in order
    install: str = ""  # pip packages the transformers snippet needs besides transformers and accelerate

    def module(self) -> ModuleType:
        """The converter module (imported now)."""
        if self.converter is None:
            raise ValueError(f"{self.name} is the baseline: it is the source checkpoint, not converted")
        return importlib.import_module(self.converter)

    def variant_settings(self, variant: str) -> VariantSettings:
        if self.converter is None:  # the baseline: the source checkpoint, in fp16, the reference of every comparison
            if variant != self.name:
                raise ValueError(f"{self.name} has no variants but itself, got {variant!r}")
            return BASELINE_SETTINGS
        return self.module().variant_settings(variant)

    def repo_name(self, *, model: str, variant: str) -> str:
        """The Hub repo (without namespace) a variant of this format is published in."""
        if self.default_variant is None or variant == self.default_variant:
            return f"{model}-{self.repo_suffix}"
        return f"{model}-{self.repo_suffix}-{variant}"

    def repo_path(self, *, variant: str, name: str) -> str:
        """Where a variant's file goes in its repo: as is, or renamed per variant (``repo_names``)."""
        return self.repo_names[name].format(variant=variant) if name in self.repo_names else name


BASELINE_SETTINGS = VariantSettings(bits_per_weight=16.0, calibrates=False, comparison=True)  # never released
BASELINE = FormatSpec(
    name="fp16",
    title="fp16",
    converter=None,
    runtime="transformers",
    tool_packages=("torch", "transformers", "safetensors"),
)

FORMATS: Mapping[str, FormatSpec] = MappingProxyType({spec.name: spec for spec in (
    FormatSpec(
        name="gguf",
        title="GGUF",
        converter="convert.gguf",
        runtime="llama.cpp",
        tool_packages=("llama-cpp-python", "gguf", "torch", "transformers", "sentencepiece", "numpy"),
        variants=("F16", "Q8_0", "Q5_K_M", "Q4_K_M"),
        shared_base=True,
        repo_suffix="GGUF",
        recommended=("Q4_K_M", "Q5_K_M", "Q8_0", "F16"),
        repo_names=MappingProxyType({"Modelfile": "Modelfile.{variant}", "imatrix.gguf": "imatrix-{variant}.gguf"}),
        card_tags=("gguf", "llama.cpp", "ollama"),
        card_library="gguf",
        snippets=("llama-cpp-python", "llama-server", "ollama", "serve"),
    ),
    FormatSpec(
        name="gptq",
        title="GPTQ",
        converter="convert.gptq",
        runtime="transformers",
        converts_on_cuda=True,
        tool_packages=("torch", "transformers", "safetensors"),
        variants=("4bit-g128", "4bit-g128-actorder", "4bit-g64", "4bit-g64-actorder", "4bit-g32", "4bit-g32-actorder"),
        repo_suffix="GPTQ",
        default_variant="4bit-g128",
        card_tags=("gptq", "4-bit"),
        card_library="transformers",
        snippets=("transformers", "vllm", "serve"),
        install="gptqmodel optimum",
    ),
    FormatSpec(
        name="awq",
        title="AWQ",
        converter="convert.awq",
        runtime="transformers",
        converts_on_cuda=True,
        tool_packages=("torch", "transformers", "safetensors"),
        variants=("4bit-g128", "4bit-g64", "4bit-g32"),
        repo_suffix="AWQ",
        default_variant="4bit-g128",
        card_tags=("awq", "4-bit"),
        card_library="transformers",
        snippets=("transformers", "vllm", "serve"),
        install="gptqmodel",
    ),
    FormatSpec(
        name="ct",
        title="compressed-tensors",
        converter="convert.ct",
        runtime="transformers",
        converts_on_cuda=True,
        tool_packages=("torch", "transformers", "safetensors", "compressed-tensors"),
        variants=("w4a16-g128", "w4a16-g64", "w4a16-g32"),
        repo_suffix="W4A16",
        default_variant="w4a16-g128",
        card_tags=("compressed-tensors", "4-bit", "gptq"),
        card_library="transformers",
        snippets=("transformers", "vllm", "serve"),
        install="compressed-tensors",
    ),
)})


def get(name: str) -> FormatSpec:
    """The entry of ``name`` (the baseline included); a ``ValueError`` lists the formats."""
    if name == BASELINE.name:
        return BASELINE
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[name]


def check_runtimes(runtimes: Mapping[str, tuple[str, str, tuple[str, ...]]]) -> list[str]:
    """Where the registry and ``invoker.runtimes.RUNTIMES`` disagree: each format must be loaded by its runtime."""
    problems = []
    for spec in (BASELINE, *FORMATS.values()):
        if spec.runtime not in runtimes:
            problems.append(f"{spec.name}: runtime {spec.runtime!r} is not in invoker.runtimes.RUNTIMES")
        elif spec.name not in runtimes[spec.runtime][2]:
            problems.append(f"{spec.name}: runtime {spec.runtime!r} does not list it among the formats it loads")
    return problems
