"""The format registry: one entry per format, converters that follow the protocol, and no format named elsewhere."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from convert.formats import BASELINE, FORMATS, VariantSettings, get

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_ARGUMENTS = {"source_dir", "out_dir", "variant", "calibration", "progress", "model_name", "shared_dir"}
# Where a format may be named by a string literal: the one list (invoker/formats.py), the formats' own modules
# (convert/formats/<name>.py) and converters,
# the runtimes.
MAY_NAME_FORMATS = ("invoker/formats.py", "invoker/runtimes/", "convert/formats/",
                    *(spec.converter.replace(".", "/") + ".py" for spec in FORMATS.values()))


def test_one_list_of_formats_each_loaded_by_a_runtime():
    from invoker.formats import ARTIFACTS
    from invoker.runtimes import FORMATS as RUNTIME_FORMATS, RUNTIMES, formats_of

    assert list(RUNTIME_FORMATS) == list(ARTIFACTS) == [BASELINE.name, *FORMATS]
    for name, artifact in ARTIFACTS.items():
        assert artifact.runtime in RUNTIMES and all(other in RUNTIMES for other in artifact.also), name
        assert name in formats_of(artifact.runtime)
    for spec in FORMATS.values():
        assert spec.artifact is ARTIFACTS[spec.name] and spec.runtime == spec.artifact.runtime
        assert spec.module().SPEC is spec  # the converter reads the entry its format module declares
    assert get(BASELINE.name) is BASELINE
    with pytest.raises(ValueError, match=rf"unknown format 'onnx'; valid: {', '.join(FORMATS)}$") as raised:
        get("onnx")
    assert all(name in str(raised.value) for name in ("gguf", "gptq", "awq", "ct"))  # every shipped format


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_converter_follows_the_protocol(name):
    spec = FORMATS[name]
    module = spec.module()
    assert PROTOCOL_ARGUMENTS <= set(inspect.signature(module.convert).parameters)
    assert module.TOOL_PACKAGES == spec.tool_packages
    if spec.shared_base:
        assert PROTOCOL_ARGUMENTS - {"variant", "shared_dir"} <= set(inspect.signature(module.build_shared).parameters)
        assert callable(module.shared_base_needed)
    for variant in spec.variants:
        assert isinstance(spec.variant_settings(variant), VariantSettings)
    for variant in (spec.default_variant, *spec.recommended):
        assert variant is None or variant in spec.variants


def test_variant_settings_give_bits_per_weight_calibration_and_comparison():
    gguf, gptq, awq = FORMATS["gguf"], FORMATS["gptq"], FORMATS["awq"]
    assert gguf.variant_settings("F16") == VariantSettings(bits_per_weight=16.0, calibrates=False)
    assert gguf.variant_settings("Q8_0") == VariantSettings(bits_per_weight=8.5, calibrates=False)
    assert gguf.variant_settings("Q4_K_M") == VariantSettings(bits_per_weight=4.5, calibrates=True)
    assert gguf.variant_settings("Q4_K_M-noimatrix") == VariantSettings(bits_per_weight=4.5, calibrates=False,
                                                                        comparison=True, ablation_of="Q4_K_M")
    assert gptq.variant_settings("4bit-g128") == VariantSettings(bits_per_weight=4 + 20 / 128, calibrates=True)
    assert awq.variant_settings("4bit-g32").bits_per_weight == 4 + 20 / 32
    with pytest.raises(ValueError, match=r"unknown GGUF variant 'Q9'; valid: F16, Q8_0, Q5_K_M, Q4_K_M \(or any of BF16"):
        gguf.variant_settings("Q9")


def test_repos_and_file_names_come_from_the_entry():
    gguf, gptq = FORMATS["gguf"], FORMATS["gptq"]
    assert gguf.repo_name(model="m", variant="Q8_0") == gguf.repo_name(model="m", variant="Q4_K_M") == "m-GGUF"
    assert gguf.repo_path(variant="Q8_0", name="Modelfile") == "Modelfile.Q8_0"
    assert gguf.repo_path(variant="Q8_0", name="imatrix.gguf") == "imatrix-Q8_0.gguf"
    assert gguf.repo_path(variant="Q8_0", name="m-Q8_0.gguf") == "m-Q8_0.gguf"
    assert gptq.repo_name(model="m", variant="4bit-g128") == "m-GPTQ"
    assert gptq.repo_name(model="m", variant="4bit-g64-actorder") == "m-GPTQ-4bit-g64-actorder"


def test_no_module_names_a_format_but_the_registry_its_converter_and_the_runtimes():
    names = {BASELINE.name, *FORMATS}
    found = []
    for package in ("invoker", "convert", "pipelines", "serve_minimal"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(MAY_NAME_FORMATS):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert found == []
