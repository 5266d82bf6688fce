"""The release model: what the pipeline's output dir offers for publishing, and which Hub repos it makes.

Read from the variants' manifests alone (``invoker.manifest.Manifest``): ``load_release`` finds every
variant dir of ``out/<model>/`` and the fp16 baseline; ``plan_repos`` groups the publishable variants
into one repo per format (``convert.formats``: repo suffix, default variant, per-variant file names).
The model cards (``pipelines.card``) and publish (``pipelines.publish``) both build on this, not on
each other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id

from convert.formats import BASELINE, FormatSpec, get
from invoker.files import sha256_file
from invoker.manifest import MANIFEST_NAME, Manifest, load_manifest

PLOT_NAME = "accuracy_vs_size.png"
GENERATED = ("README.md", PLOT_NAME)  # written per repo; a variant's own file of that name is not uploaded
NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# vLLM's tool-call parser for Invoker's answers (docs/VLLM.md), shipped in every repo vLLM can serve so that
# `vllm serve REPO --tool-parser-plugin <folder>/vllm-plugin/invoker/vllm_tool_parser.py` needs nothing else:
# the plugin and the two standard-library modules it imports, in the layout it finds them by.
VLLM_PLUGIN_DIR = "vllm-plugin"
VLLM_PLUGIN_FILES = ("invoker/__init__.py", "invoker/parse.py", "invoker/stream_parse.py", "invoker/vllm_tool_parser.py")
_ROOT = Path(__file__).resolve().parents[1]


class PublishError(RuntimeError):
    """An expected failure of publish (nothing verified, a changed file, no token, the Hub failing)."""


@dataclass(frozen=True)
class ReleaseVariant:
    name: str  # the dir name, e.g. gguf-Q4_K_M
    path: Path
    manifest: Manifest

    @property
    def spec(self) -> FormatSpec:
        return get(self.manifest.format)


@dataclass(frozen=True)
class Release:
    out_dir: Path
    model: str
    fp16: ReleaseVariant | None
    variants: list[ReleaseVariant]
    plot: Path | None

    @property
    def gated_suite(self) -> str | None:
        """The suite the gate judged on (fp16's record of it; every manifest of a run holds the same)."""
        for variant in ([self.fp16] if self.fp16 else []) + self.variants:
            if variant.manifest.gated_suite:
                return variant.manifest.gated_suite
        return None

    def refused(self) -> list[tuple[str, str]]:
        """``(dir name, the gate's reason)`` for every variant the gate did not verify."""
        return [(v.name, v.manifest.gate_reason) for v in self.variants if v.manifest.verified is not True]

    def left_out(self) -> list[str]:
        """Verified variants the recipe kept out of the release (``compare_only``: built to compare with)."""
        return [v.name for v in self.variants if v.manifest.verified is True and not v.manifest.publishable]

    def publishable(self) -> list[ReleaseVariant]:
        return [v for v in self.variants if v.manifest.publishable]


@dataclass(frozen=True)
class RepoFile:
    path_in_repo: str
    source: Path  # where the bytes come from
    sha256: str
    bytes: int


@dataclass
class RepoPlan:
    repo_id: str
    spec: FormatSpec
    variants: list[ReleaseVariant]
    files: list[RepoFile] = field(default_factory=list)  # the variants' files, as the repo names them

    @property
    def format(self) -> str:
        return self.spec.name

    @property
    def recommended(self) -> ReleaseVariant:
        """The variant usage snippets name: the first of the format's ``recommended`` the repo holds, else its first."""
        held = {v.manifest.variant: v for v in self.variants}
        return next((held[name] for name in self.spec.recommended if name in held), self.variants[0])

    def weight_file(self, variant: ReleaseVariant) -> str:
        """A variant's (first) weight file, under its name in this repo."""
        return self.spec.repo_path(variant=variant.manifest.variant, name=variant.manifest.weight_files[0])


def load_release(out_dir: str | Path) -> Release:
    """Every variant dir of ``out_dir`` (those with a manifest), the fp16 baseline and the plot."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise PublishError(f"{out_dir}: no such directory (the pipeline's output, e.g. out/tiny-invoker)")
    variants, fp16 = [], None
    for path in sorted(p for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (path / MANIFEST_NAME).is_file():
            continue
        variant = ReleaseVariant(name=path.name, path=path, manifest=load_manifest(path))
        if variant.manifest.format == BASELINE.name:
            fp16 = variant
        else:
            variants.append(variant)
    if not variants:
        raise PublishError(f"{out_dir}: no variant dirs with a {MANIFEST_NAME} (run `make quantize` first)")
    plot = out_dir / PLOT_NAME
    return Release(out_dir=out_dir, model=out_dir.name, fp16=fp16, variants=variants, plot=plot if plot.is_file() else None)


def plan_repos(*, release: Release, namespace: str) -> list[RepoPlan]:
    """One repo per format for the publishable variants (per the registry: a format with a default variant
    gets one repo per variant); refuses when there is none."""
    if not NAMESPACE.match(namespace):
        raise PublishError(f"--namespace {namespace!r}: not a Hub user or organization name")
    publishable = release.publishable()
    if not publishable:
        reasons = "; ".join([f"{name}: {reason}" for name, reason in release.refused()]
                            + [f"{name}: a comparison variant (compare_only)" for name in release.left_out()])
        raise PublishError(f"{release.out_dir}: no verified variant to publish ({reasons})")
    plans: dict[str, RepoPlan] = {}
    for variant in publishable:
        spec = variant.spec
        repo_id = f"{namespace}/{spec.repo_name(model=release.model, variant=variant.manifest.variant)}"
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            raise PublishError(f"{release.out_dir}: its variants would go to {repo_id!r}, not a valid Hub repo id ({err}); "
                               "the repo name comes from the output dir's name: rename the dir") from None
        plans.setdefault(repo_id, RepoPlan(repo_id=repo_id, spec=spec, variants=[])).variants.append(variant)
    for plan in plans.values():
        plan.files = repo_files(plan=plan)
    return list(plans.values())


def repo_files(*, plan: RepoPlan) -> list[RepoFile]:
    """The variants' files under their names in the repo (``FormatSpec.repo_path``), and each manifest."""
    files: dict[str, RepoFile] = {}
    for variant in plan.variants:
        for name, entry in sorted(variant.manifest.files.items()):
            if name in GENERATED or name.startswith("manifests/"):
                continue  # the card, the plot and the manifests are written for the repo
            path_in_repo = plan.spec.repo_path(variant=variant.manifest.variant, name=name)
            source = variant.path / name
            if not source.resolve().is_relative_to(variant.path.resolve()):
                raise PublishError(f"{variant.path / MANIFEST_NAME}: files.{json.dumps(name)}: resolves outside "
                                   f"{variant.path} (a symlink?); not publishing it")
            new = RepoFile(path_in_repo=path_in_repo, source=source, sha256=entry.sha256, bytes=entry.bytes)
            old = files.get(path_in_repo)
            if old is not None and old.sha256 != new.sha256:
                raise PublishError(f"{plan.repo_id}: {path_in_repo} differs between {old.source} and {new.source}")
            files.setdefault(path_in_repo, new)
        files[f"manifests/{variant.name}.json"] = _own_file(f"manifests/{variant.name}.json", variant.path / MANIFEST_NAME)
    if "vllm" in plan.spec.snippets:
        for name in VLLM_PLUGIN_FILES:
            files[f"{VLLM_PLUGIN_DIR}/{name}"] = _own_file(f"{VLLM_PLUGIN_DIR}/{name}", _ROOT / name)
    return [files[name] for name in sorted(files)]


def _own_file(path_in_repo: str, source: Path) -> RepoFile:
    """A file the pipeline adds to a repo (a manifest, the vLLM plugin), hashed as it is now."""
    return RepoFile(path_in_repo=path_in_repo, source=source, sha256=sha256_file(source), bytes=source.stat().st_size)


def pipeline_version() -> str:
    return metadata.version("invoker-pack")
