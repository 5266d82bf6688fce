"""The format registry: one ``FormatSpec`` per quantization format, and the protocol its converter module follows.

Each format declares itself where it is defined: its module ``convert/formats/<name>.py`` registers its
``FormatSpec`` (``SPEC = register(FormatSpec(…))``: its converter module, variants, tool versions, shared base,
Hub repo, the model card's tags, library and usage snippets), on top of the one line ``invoker.formats`` holds
for it (how its artifacts are recognised and which runtime loads them; ``FormatSpec.artifact``). ``FORMATS``
lists the formats of ``invoker.formats`` and finds each one's entry in ``convert/formats/<name>.py``. Everything
outside the converter that depends on the format reads it from here. Adding a format is one module and one
line in ``invoker.formats`` (a runtime too only if no runtime of ``invoker.runtimes`` loads it yet;
docs/FORMATS.md).

This package imports nothing heavy: a format's module is data; its converter module is imported when a
variant is parsed or built (``FormatSpec.module``), never to publish or report.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from invoker.formats import ARTIFACTS, ArtifactFormat
from invoker.formats import BASELINE as ARTIFACT_BASELINE
from invoker.formats import get as get_artifact

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
    convert_seconds: float = 10.0  # one variant's conversion on this project's 2-core machine: a weight of the
    #                                run's time-left estimate (pipelines.eta), not a promise

    @property
    def artifact(self) -> ArtifactFormat:
        """The reading side: how its artifacts are recognised and which runtime loads them (``invoker.formats``)."""
        return get_artifact(self.name)

    @property
    def runtime(self) -> str:
        return self.artifact.runtime

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
    name=ARTIFACT_BASELINE.name,
    title=ARTIFACT_BASELINE.name,
    converter=None,
    tool_packages=("torch", "transformers", "safetensors"),
)

_REGISTERED: dict[str, FormatSpec] = {}


def register(spec: FormatSpec) -> FormatSpec:
    """Called by a format's module with its entry, where it is defined (``SPEC = register(FormatSpec(…))``)."""
    if spec.name not in ARTIFACTS or spec.name == BASELINE.name:
        raise ValueError(f"{spec.converter}: format {spec.name!r} is not declared in invoker.formats (one line there: "
                         "how its artifacts are recognised and which runtime loads them)")
    _REGISTERED[spec.name] = spec
    return spec


class _Registry(Mapping):
    """Every format but the baseline, in ``invoker.formats``' order; a format's entry is what its module
    ``convert/formats/<name>.py`` registers, imported the first time the entry is asked for."""

    def __iter__(self):
        return (name for name in ARTIFACTS if name != BASELINE.name)

    def __len__(self) -> int:
        return len(ARTIFACTS) - 1

    def __contains__(self, name: object) -> bool:
        return name in ARTIFACTS and name != BASELINE.name

    def __getitem__(self, name: str) -> FormatSpec:
        if name not in self:
            raise KeyError(name)
        if name not in _REGISTERED:
            importlib.import_module(f"{__name__}.{name}")  # convert/formats/<name>.py registers its entry
            if name not in _REGISTERED:
                raise LookupError(f"convert/formats/{name}.py does not register a FormatSpec named {name!r}")
        return _REGISTERED[name]


FORMATS: Mapping[str, FormatSpec] = _Registry()


def get(name: str) -> FormatSpec:
    """The entry of ``name`` (the baseline included); a ``ValueError`` lists the formats."""
    if name == BASELINE.name:
        return BASELINE
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[name]
