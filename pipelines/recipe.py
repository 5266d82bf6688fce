"""Recipes: one TOML file per model naming what `invoker-pack quantize` builds, checks and measures.

A recipe is read and validated whole before any work starts: every section is checked and every
problem reported at once, each with the key it sits under (``variants[2]: unknown GGUF variant 'Q9';
valid: …``; ``eval.suites[1]: …``; ``calibration.general_text: …: no such file``). Variant names are
parsed by their format's entry in the registry (``convert.formats``). Format: docs/PIPELINE.md.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from convert.calibration import CalibrationSpec
from convert.formats import BASELINE, FORMATS, FormatSpec, get

HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
TOP_LEVEL_KEYS = ("name", "source", "variants", "compare_only", "calibration", "calibrations", "convert", "eval", "bench",
                  "gate", "fidelity")
SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class RecipeError(ValueError):
    """A recipe that cannot be run; the message names the file and, for each problem, its key."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Source:
    """Where the fp16 checkpoint comes from: a local dir (``path``) or a Hub repo (``hub`` at ``revision``)."""

    path: Path | None = None
    hub: str | None = None
    revision: str | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else self.hub


@dataclass(frozen=True)
class VariantSpec:
    """One artifact to build: ``gguf:Q4_K_M`` -> format gguf, variant Q4_K_M, dir ``gguf-Q4_K_M``;
    ``gguf:Q4_K_M@generic`` -> the same, calibrated on the recipe's named set ``generic``, dir
    ``gguf-Q4_K_M@generic``."""

    format: str
    variant: str
    bits_per_weight: float  # nominal, from the format's registry entry; picks the gate's threshold
    calibrates: bool  # its conversion uses a calibration set
    release: bool = True  # False: built and evaluated to compare with, never published (``compare_only``)
    calibration_set: str | None = None  # a name of ``[calibrations.<name>]``; None: ``[calibration]``
    ablation_of: str | None = None  # the variant this one ablates (GGUF: Q4_K_M-noimatrix -> Q4_K_M)

    @property
    def name(self) -> str:
        return f"{self.format}:{self.variant}" + (f"@{self.calibration_set}" if self.calibration_set else "")

    @property
    def dir_name(self) -> str:
        if self.format == BASELINE.name:
            return BASELINE.name
        return f"{self.format}-{self.variant}" + (f"@{self.calibration_set}" if self.calibration_set else "")

    @property
    def spec(self) -> FormatSpec:
        return get(self.format)


def baseline_variant() -> VariantSpec:
    """fp16, the source itself, as a variant: what the gate compares with (its own settings in ``convert.formats``;
    a reference, never released)."""
    settings = BASELINE.variant_settings(BASELINE.name)
    return VariantSpec(format=BASELINE.name, variant=BASELINE.name, bits_per_weight=settings.bits_per_weight,
                       calibrates=settings.calibrates, release=not settings.comparison)


@dataclass(frozen=True)
class ConvertSettings:
    """Where the conversions of formats that can use CUDA (``FormatSpec.converts_on_cuda``: GPTQ, AWQ, ct) run:
    ``auto`` (CUDA where there is one, else the CPU), ``cpu`` or ``cuda``. GGUF converts on the CPU."""

    device: str = "auto"


@dataclass(frozen=True)
class EvalSettings:
    suites: tuple[str, ...] = ("synthetic",)
    limit: int | None = None  # the first ``limit`` cases of each suite (None: all)
    limits: dict[str, int] = field(default_factory=dict)  # per-suite limits, over ``limit``
    max_tokens: int = 256
    seed: int = 0

    def limit_for(self, suite: str) -> int | None:
        return self.limits.get(suite, self.limit)


@dataclass(frozen=True)
class FidelitySettings:
    """The fidelity stage: fp16's top-``top_k`` log-probs on the first ``limit`` cases of the gated suite."""

    limit: int = 100
    top_k: int = 32


@dataclass(frozen=True)
class BenchSettings:
    devices: tuple[str, ...] = ("cpu",)
    prompt_tokens: int = 128
    gen_tokens: int = 128
    runs: int = 5
    warmup: int = 1
    threads: int | None = None


@dataclass(frozen=True)
class GateSettings:
    """``call_accuracy`` must reach ``ratio × fp16's`` (ratio by bits) and ``json_valid_rate`` an absolute floor.

    When fp16's call accuracy is below ``weak_baseline``, name accuracy must also reach ``ratio × fp16's``
    (docs/PIPELINE.md, "The gate").
    """

    ratio_8bit: float = 0.98  # variants of 8 bits or more (F16, Q8_0)
    ratio_4bit: float = 0.90  # variants below 8 bits (Q5_K_M, Q4_K_M, 4-bit GPTQ/AWQ)
    json_valid_rate: float = 0.90
    weak_baseline: float = 0.20
    alpha: float = 0.05  # the paired test's significance level
    kld_8bit: float = 0.01  # mean KL divergence on answer tokens that decides an unresolved verdict, >= 8 bits
    kld_4bit: float = 0.10  # the same below 8 bits
    suite: str | None = None  # the suite gated on; default: the first eval suite

    def ratio_for(self, bits_per_weight: float) -> float:
        return self.ratio_8bit if bits_per_weight >= 8 else self.ratio_4bit

    def kld_for(self, bits_per_weight: float) -> float:
        return self.kld_8bit if bits_per_weight >= 8 else self.kld_4bit

    def to_dict(self) -> dict:
        return {"ratio_8bit": self.ratio_8bit, "ratio_4bit": self.ratio_4bit, "json_valid_rate": self.json_valid_rate,
                "weak_baseline": self.weak_baseline, "alpha": self.alpha, "kld_8bit": self.kld_8bit,
                "kld_4bit": self.kld_4bit, "suite": self.suite}


@dataclass(frozen=True)
class Recipe:
    name: str
    source: Source
    variants: tuple[VariantSpec, ...]
    calibration: CalibrationSpec
    convert: ConvertSettings = field(default_factory=ConvertSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    calibrations: dict[str, CalibrationSpec] = field(default_factory=dict)  # named sets, for comparisons
    bench: BenchSettings = field(default_factory=BenchSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    fidelity: FidelitySettings = field(default_factory=FidelitySettings)
    path: Path | None = None

    @property
    def gate_suite(self) -> str:
        return self.gate.suite or self.eval.suites[0]

    def calibration_spec(self, calibration_set: str | None) -> CalibrationSpec:
        return self.calibration if calibration_set is None else self.calibrations[calibration_set]


def load_recipe(path: str | Path, *, model: str | None = None) -> Recipe:
    """Read and validate the recipe at ``path``; ``model`` (a local dir or a Hub id) replaces its source."""
    path = Path(path)
    data = read_recipe_toml(path)
    if model is not None:
        data["source"] = source_override(source=data.get("source"), model=model)
    try:
        return parse_recipe(data, path=path)
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None


MAX_EXTENDS = 8


def read_recipe_toml(path: Path, *, chain: tuple[Path, ...] = ()) -> dict:
    """The recipe's TOML as a dict, with ``extends = "other.toml"`` (relative to this file) applied: the other
    recipe's keys first, then this one's — a top-level value replaces the other's, a table is merged key by key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: not readable ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from None
    except RecursionError:
        raise RecipeError(f"{path}: not a recipe: its tables or arrays nest too deeply for a TOML reader") from None
    if "extends" not in data:
        return data
    extends = data.pop("extends")
    if not isinstance(extends, str) or not extends:
        raise RecipeError(f"{path}: extends: must be the path of another recipe file, got {extends!r}")
    parent = (path.parent / extends).resolve()
    chain = (*chain, path.resolve())
    if parent in chain or len(chain) > MAX_EXTENDS:
        raise RecipeError(f"{path}: extends: {' -> '.join(map(str, (*chain, parent)))} does not end in a recipe of its own")
    merged = read_recipe_toml(parent, chain=chain)
    for key, value in data.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def source_override(*, source: object, model: str) -> dict:
    """``--model``: a local dir becomes ``source.path``; a Hub id keeps the recipe's revision only if it is the same repo."""
    if Path(model).is_dir() or not HUB_ID_PATTERN.match(model):
        return {"path": model}
    same_repo = isinstance(source, dict) and source.get("hub") == model
    return {"hub": model, **({"revision": source["revision"]} if same_repo and "revision" in source else {})}


def parse_recipe(data: dict, *, path: Path | None = None) -> Recipe:
    """Validate a recipe's parsed TOML; every problem found is raised at once in one ``RecipeError``, each
    naming its key."""
    problems: list[str] = []

    def checked(parse: Callable, *args, **kwargs):
        try:
            return parse(*args, **kwargs)
        except RecipeError as err:
            problems.extend(err.problems)
            return None

    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    problems += [f"{key}: unknown key; valid: {', '.join(TOP_LEVEL_KEYS)}" for key in unknown]
    source = checked(parse_source, data.get("source"))
    name = data.get("name", source and (source.path.name if source.path is not None else source.hub.split("/")[-1]))
    if name is not None and (not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name)):
        problems.append(f"name: must be a plain dir name (letters, digits, '_', '.', '-'), got {name!r}")
    calibrations = checked(parse_calibrations, checked(_table, data, "calibrations") or {})
    variants = checked(parse_variants, data.get("variants"), sets=tuple(calibrations or ()))
    if variants is not None and "compare_only" in data:
        variants = checked(parse_compare_only, data["compare_only"], variants=variants)
    calibration = checked(parse_calibration, checked(_table, data, "calibration") or {})
    convert = checked(parse_convert, checked(_table, data, "convert") or {})
    eval_settings = checked(parse_eval, checked(_table, data, "eval") or {})
    bench = checked(parse_bench, checked(_table, data, "bench") or {})
    gate = checked(parse_gate, checked(_table, data, "gate") or {},
                   suites=eval_settings.suites if eval_settings else None)
    fidelity = checked(parse_fidelity, checked(_table, data, "fidelity") or {})
    if problems:
        raise RecipeError(*problems)
    return Recipe(name=name, source=source, variants=variants, calibration=calibration, calibrations=calibrations,
                  convert=convert, eval=eval_settings, bench=bench, gate=gate, fidelity=fidelity, path=path)


def parse_source(value: object) -> Source:
    if not isinstance(value, dict):
        raise RecipeError("source: missing; give source.path (a local checkpoint dir) or source.hub + source.revision")
    _no_unknown_keys(value, key="source", valid=("path", "hub", "revision"))
    if ("path" in value) == ("hub" in value):
        raise RecipeError("source: give exactly one of source.path and source.hub")
    if "path" in value:
        local = Path(str(value["path"]))
        if not local.is_dir():
            raise RecipeError(f"source.path: {local}: no such directory")
        if not (local / "config.json").is_file():
            raise RecipeError(f"source.path: {local}: no config.json (expected a Hugging Face checkpoint dir)")
        return Source(path=local)
    hub, revision = value["hub"], value.get("revision")
    if not isinstance(hub, str) or not HUB_ID_PATTERN.match(hub):
        raise RecipeError(f"source.hub: {hub!r} is not a Hub id like 'owner/name'")
    if not isinstance(revision, str) or not revision:
        raise RecipeError("source.revision: required with source.hub (a commit sha, so the run is reproducible)")
    return Source(hub=hub, revision=revision)


def parse_variants(value: object, *, sets: tuple[str, ...] = ()) -> tuple[VariantSpec, ...]:
    if not isinstance(value, list) or not value:
        raise RecipeError("variants: missing or empty; e.g. variants = [\"gguf:Q4_K_M\", \"gptq:4bit-g128\"]")
    specs, problems, seen = [], [], set()
    for index, item in enumerate(value):
        try:
            spec = parse_variant(item, key=f"variants[{index}]", sets=sets)
        except RecipeError as err:
            problems += err.problems
            continue
        if spec.name in seen:
            problems.append(f"variants[{index}]: {spec.name!r} is listed twice")
        seen.add(spec.name)
        specs.append(spec)
    if problems:
        raise RecipeError(*problems)
    return tuple(specs)


def parse_variant(value: object, *, key: str, sets: tuple[str, ...] = ()) -> VariantSpec:
    """``"gguf:Q4_K_M"`` -> VariantSpec, through its format's registry entry; an unknown format or variant
    names the valid ones. ``"gguf:Q4_K_M@generic"`` calibrates on the named set ``generic`` (one of ``sets``);
    such a variant exists to be compared with, so it is not released unless ``compare_only`` says otherwise."""
    if not isinstance(value, str) or ":" not in value:
        raise RecipeError(f"{key}: {value!r} is not '<format>:<variant>' (formats: {', '.join(FORMATS)})")
    value, _, calibration_set = value.partition("@")
    fmt, variant = value.split(":", 1)
    if fmt not in FORMATS:
        raise RecipeError(f"{key}: unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    try:
        settings = FORMATS[fmt].variant_settings(variant)
    except ValueError as err:
        raise RecipeError(f"{key}: {err}") from None
    if calibration_set:
        if calibration_set not in sets:
            raise RecipeError(f"{key}: calibration set {calibration_set!r} is not defined; define [calibrations.{calibration_set}]"
                              + (f" (defined: {', '.join(sets)})" if sets else ""))
        if not settings.calibrates:
            raise RecipeError(f"{key}: {value} uses no calibration set, so '@{calibration_set}' means nothing")
    return VariantSpec(format=fmt, variant=variant, bits_per_weight=settings.bits_per_weight,
                       calibrates=settings.calibrates, release=not settings.comparison and not calibration_set,
                       calibration_set=calibration_set or None, ablation_of=settings.ablation_of)


def parse_compare_only(value: object, *, variants: tuple[VariantSpec, ...]) -> tuple[VariantSpec, ...]:
    """``compare_only``: the variants built and evaluated only to compare with (never published); it replaces
    the default, which is every variant its format calls a comparison (GGUF's ``<TYPE>-noimatrix``)."""
    names = [v.name for v in variants]
    if not isinstance(value, list):
        raise RecipeError("compare_only: must be a list of variants, e.g. [\"gguf:Q4_K_M-noimatrix\"] (or [])")
    problems = [f"compare_only[{index}]: {item!r} is not one of variants ({', '.join(names)})"
                for index, item in enumerate(value) if item not in names]
    if problems:
        raise RecipeError(*problems)
    return tuple(replace(v, release=v.name not in value) for v in variants)


def parse_calibrations(table: dict) -> dict[str, CalibrationSpec]:
    """``[calibrations.<name>]``: more calibration sets, each a ``[calibration]`` table, for variants named
    ``<format>:<variant>@<name>``."""
    sets, problems = {}, []
    for name, value in table.items():
        if not SET_NAME.match(name):
            problems.append(f"calibrations.{name}: a set name is letters, digits, '_' and '-'")
            continue
        if not isinstance(value, dict):
            problems.append(f"calibrations.{name}: must be a table ([calibrations.{name}])")
            continue
        try:
            sets[name] = parse_calibration(value, key=f"calibrations.{name}")
        except RecipeError as err:
            problems += err.problems
    if problems:
        raise RecipeError(*problems)
    return sets


def parse_calibration(table: dict, *, key: str = "calibration") -> CalibrationSpec:
    """The calibration spec; its files are checked now: ``general_text`` must exist, and so must a ``source``
    that names a file (a .json/.jsonl file or a dir; a Hub dataset id ``owner/name`` is fetched when used)."""
    valid = ("source", "n_samples", "max_length", "seed", "general_text", "general_text_fraction")
    _no_unknown_keys(table, key=key, valid=valid)
    try:
        spec = CalibrationSpec(**table)
    except ValueError as err:
        raise RecipeError(f"{key}: {err}") from None
    problems = []
    if spec.general_text is not None:
        from convert.corpus import CORPORA, PREFIX, is_corpus

        if is_corpus(spec.general_text) and spec.general_text[len(PREFIX):] not in CORPORA:
            problems.append(f"{key}.general_text: unknown corpus {spec.general_text!r}; known: "
                            f"{', '.join(PREFIX + name for name in CORPORA)}")
        elif not is_corpus(spec.general_text) and not Path(spec.general_text).is_file():
            problems.append(f"{key}.general_text: {spec.general_text}: no such file")
    source = spec.source
    if source != "synthetic" and not Path(source).exists() and (source.endswith((".json", ".jsonl"))
                                                                 or not HUB_ID_PATTERN.match(source)):
        problems.append(f"{key}.source: {source}: no such file or directory (or give \"synthetic\", "
                        "a .json/.jsonl file or dir of conversations, or a Hub dataset id owner/name)")
    if problems:
        raise RecipeError(*problems)
    return spec


def parse_eval(table: dict) -> EvalSettings:
    _no_unknown_keys(table, key="eval", valid=("suites", "limit", "limits", "max_tokens", "seed"))
    suites = table.get("suites", ["synthetic"])
    if not isinstance(suites, list) or not suites or not all(isinstance(s, str) and s for s in suites):
        raise RecipeError("eval.suites: must be a non-empty list of suite names (e.g. [\"synthetic\"])")
    problems = []
    for index, suite in enumerate(suites):
        try:
            check_suite(suite, key=f"eval.suites[{index}]")
        except RecipeError as err:
            problems += err.problems
    if problems:
        raise RecipeError(*problems)
    limit = table.get("limit")
    if limit is not None:
        _int_in(limit, key="eval.limit", minimum=1)
    limits = table.get("limits", {})
    if not isinstance(limits, dict):
        raise RecipeError('eval.limits: must be a table of suite = limit, e.g. limits = { "bfcl:simple" = 50 }')
    for suite, value in limits.items():
        if suite not in suites:
            raise RecipeError(f"eval.limits: {suite!r} is not one of eval.suites ({', '.join(suites)})")
        _int_in(value, key=f"eval.limits.{suite!r}", minimum=1)
    max_tokens = _int_in(table.get("max_tokens", 256), key="eval.max_tokens", minimum=1)
    seed = table.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RecipeError(f"eval.seed: must be an integer, got {seed!r}")
    return EvalSettings(suites=tuple(suites), limit=limit, limits=dict(limits), max_tokens=max_tokens, seed=seed)


def check_suite(suite: str, *, key: str) -> None:
    """A suite the eval stage can load, checked now rather than after the conversions: a known name, a
    ``jsonl:`` file that exists, a BFCL category whose data file is found."""
    if suite == "synthetic":
        return
    if suite.startswith("jsonl:"):
        path = Path(suite[len("jsonl:") :])
        if not suite[len("jsonl:") :] or not path.is_file():
            raise RecipeError(f"{key}: {suite!r}: no such file {str(path)!r} (jsonl:PATH names a JSONL file of cases)")
        from invoker.data.loaders import DataError, load_conversations

        try:  # read now, so a file that holds no cases fails here, not after the conversions
            load_conversations(path, limit=1)
        except (DataError, OSError, UnicodeDecodeError, ValueError) as err:
            raise RecipeError(f"{key}: {suite!r}: not a JSONL file of cases ({str(err)[:200]})") from None
        return
    if suite.startswith("bfcl:"):
        from pipelines.bfcl import BfclDataError, find_data_file, package_data_dir, parse_suite_name

        try:
            category, data_dir = parse_suite_name(suite)
            find_data_file(category, data_dir=data_dir or package_data_dir())
        except BfclDataError as err:
            raise RecipeError(f"{key}: {err}") from None
        return
    raise RecipeError(f"{key}: unknown suite {suite!r}; valid: synthetic, jsonl:PATH, bfcl:<category>")


def parse_convert(table: dict) -> ConvertSettings:
    _no_unknown_keys(table, key="convert", valid=("device",))
    device = table.get("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise RecipeError(f"convert.device: must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return ConvertSettings(device=device)


def parse_bench(table: dict) -> BenchSettings:
    _no_unknown_keys(table, key="bench", valid=("devices", "prompt_tokens", "gen_tokens", "runs", "warmup", "threads"))
    devices = table.get("devices", ["cpu"])
    if not isinstance(devices, list) or not devices or any(d not in ("cpu", "cuda") for d in devices):
        raise RecipeError(f"bench.devices: must be a non-empty list of 'cpu' / 'cuda', got {devices!r}")
    threads = table.get("threads")
    if threads is not None:
        _int_in(threads, key="bench.threads", minimum=1, maximum=4096)
    return BenchSettings(
        devices=tuple(devices),
        prompt_tokens=_int_in(table.get("prompt_tokens", 128), key="bench.prompt_tokens", minimum=2),
        gen_tokens=_int_in(table.get("gen_tokens", 128), key="bench.gen_tokens", minimum=2),
        runs=_int_in(table.get("runs", 5), key="bench.runs", minimum=1, maximum=1000),
        warmup=_int_in(table.get("warmup", 1), key="bench.warmup", minimum=0, maximum=1000),
        threads=threads,
    )


def parse_gate(table: dict, *, suites: tuple[str, ...] | None) -> GateSettings:
    """The gate's thresholds; ``suites`` are the eval suites ``gate.suite`` must be one of (None: eval is invalid)."""
    numbers = ("ratio_8bit", "ratio_4bit", "json_valid_rate", "weak_baseline", "alpha", "kld_8bit", "kld_4bit")
    _no_unknown_keys(table, key="gate", valid=(*numbers, "suite"))
    defaults = GateSettings()
    values = {}
    for key in numbers:
        value = table.get(key, getattr(defaults, key))
        upper = None if key.startswith("kld") else 1
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
                or (upper is not None and value > upper)):
            bounds = "[0, inf)" if upper is None else f"[0, {upper}]"
            raise RecipeError(f"gate.{key}: must be a number in {bounds}, got {value!r}")
        values[key] = float(value)
    suite = table.get("suite")
    if suite is not None and suites is not None and suite not in suites:
        raise RecipeError(f"gate.suite: {suite!r} is not one of eval.suites ({', '.join(suites)})")
    return GateSettings(**values, suite=suite)


def parse_fidelity(table: dict) -> FidelitySettings:
    _no_unknown_keys(table, key="fidelity", valid=("limit", "top_k"))
    defaults = FidelitySettings()
    return FidelitySettings(limit=_int_in(table.get("limit", defaults.limit), key="fidelity.limit", minimum=1),
                            top_k=_int_in(table.get("top_k", defaults.top_k), key="fidelity.top_k", minimum=1, maximum=1000))


def _table(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RecipeError(f"{key}: must be a table ([{key}])")
    return value


def _no_unknown_keys(table: dict, *, key: str, valid: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise RecipeError(f"{key}.{unknown[0]}: unknown key; valid: {', '.join(valid)}")


def _int_in(value: object, *, key: str, minimum: int, maximum: int = 1_000_000) -> int:
    """An integer in ``[minimum, maximum]``; the upper bound keeps a typo (``runs = 10**12``) from
    becoming work that never ends."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise RecipeError(f"{key}: must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value
