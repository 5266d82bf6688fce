"""`invoker-pack quantize` with every format on the tiny random model: one calibration set, GGUF with and
without the importance matrix, GPTQ and AWQ, all through the pipeline's own ``convert_variant``.

The manifests and report.json are compared with a recorded run (``tests/golden/pipeline-formats.json``),
with what legitimately varies set aside: tool versions, timings, bench figures, the source's path and the
fidelity figures' values (float sums of another CPU's kernels differ in the last bits; their keys stay).
A refactor of the stages, the converters or the registry must leave them equal.
After an intended change, rewrite the recording with ``INVOKER_UPDATE_GOLDEN=1`` and review its diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "pipeline-formats.json"
VARIANTS = ("gguf:F16", "gguf:Q4_K_M", "gguf:Q4_K_M-noimatrix", "gguf:Q4_K_M@prose", "gptq:4bit-g128", "awq:4bit-g128")
DIRS = ("fp16", "gguf-F16", "gguf-Q4_K_M", "gguf-Q4_K_M-noimatrix", "gguf-Q4_K_M@prose", "gptq-4bit-g128", "awq-4bit-g128")
PROSE = "\n\n".join(f"Passage {i}: the quick brown fox jumps over the lazy dog, and the dog sleeps on." for i in range(400))
VARYING = ("timings", "wall_seconds", "seconds_per_case")  # how long it took: never the same twice

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def out(tiny_random_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    (root / "prose.txt").write_text(PROSE, encoding="utf-8")
    recipe = root / "tiny.toml"
    recipe.write_text(f"""
name = "tiny"
variants = {json.dumps(list(VARIANTS))}
[source]
path = "{tiny_random_model}"
[calibration]
source = "synthetic"
n_samples = 4
max_length = 64
seed = 0
[calibrations.prose]                  # generic text only: the calibration study's comparison set
source = "synthetic"
n_samples = 4
max_length = 64
general_text = "{root / 'prose.txt'}"
general_text_fraction = 1.0
[eval]
limit = 2
max_tokens = 16
[fidelity]
limit = 2
top_k = 8
[bench]
prompt_tokens = 8
gen_tokens = 8
runs = 1
warmup = 0
""", encoding="utf-8")
    out = root / "tiny"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: float sums in the same order on every machine
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "quantize", "--recipe", str(recipe), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def normalized_manifest(manifest: dict) -> dict:
    """The manifest without what legitimately differs between two runs of the same code on the same input."""
    manifest = dict(manifest)
    manifest["tools"] = {name: "<version>" for name in manifest["tools"]}
    manifest["source"] = {**manifest["source"], "model": "<source dir>"}
    manifest["bench"] = {device: sorted(result) for device, result in manifest["bench"].items()}
    conversion = dict(manifest.get("conversion") or {})
    if "converter" in conversion:
        conversion["converter"] = {key: "<version>" for key in conversion["converter"]}
    manifest["conversion"] = conversion
    if (manifest.get("calibration") or {}).get("spec", {}).get("general_text"):
        manifest["calibration"] = {**manifest["calibration"],
                                   "spec": {**manifest["calibration"]["spec"], "general_text": "<prose file>"}}
    if "fidelity" in manifest:
        manifest["fidelity"] = figure_keys(manifest["fidelity"])
    return drop_keys(manifest, VARYING)


def figure_keys(fidelity: dict) -> dict:
    """The fidelity figures with their values set aside (positions and case counts kept: those are exact)."""
    return {key: figure_keys(value) if isinstance(value, dict)
            else value if key in ("positions", "cases", "top_k", "suite") else "<figure>"
            for key, value in fidelity.items()}


def normalized_report(report: dict) -> dict:
    return {name: drop_keys({**entry, "bench": {device: sorted(result) for device, result in entry["bench"].items()},
                             "fidelity": figure_keys(entry["fidelity"])}, VARYING)
            for name, entry in report.items()}


def drop_keys(value, keys: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: drop_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [drop_keys(v, keys) for v in value]
    return value


def recording(out: Path) -> dict:
    manifests = {name: normalized_manifest(json.loads((out / name / "manifest.json").read_text())) for name in DIRS}
    return {"manifests": manifests, "report": normalized_report(json.loads((out / "report.json").read_text()))}


def test_every_format_is_built_from_one_calibration_set_and_the_shared_gguf_base(out):
    manifests = {name: json.loads((out / name / "manifest.json").read_text()) for name in DIRS}
    calibrated = {name for name, m in manifests.items() if m["calibration"]}
    assert calibrated == {"gguf-Q4_K_M", "gguf-Q4_K_M@prose", "gptq-4bit-g128", "awq-4bit-g128"}
    assert len({manifests[name]["calibration"]["sha256"] for name in calibrated - {"gguf-Q4_K_M@prose"}}) == 1
    prose = manifests["gguf-Q4_K_M@prose"]
    assert prose["calibration"]["sha256"] != manifests["gguf-Q4_K_M"]["calibration"]["sha256"]
    assert prose["calibration"]["spec"]["general_text_fraction"] == 1.0 and prose["release"] is False
    assert prose["files"]["imatrix.gguf"]["sha256"] != manifests["gguf-Q4_K_M"]["files"]["imatrix.gguf"]["sha256"]
    calibration = json.loads((out / ".pipeline" / "calibration@prose.json").read_text())
    assert all(text.startswith("Passage ") for text in calibration["texts"])  # only the named set's text
    assert "imatrix.gguf" in manifests["gguf-Q4_K_M"]["files"]
    assert "imatrix.gguf" not in manifests["gguf-Q4_K_M-noimatrix"]["files"]
    for name in ("gptq-4bit-g128", "awq-4bit-g128"):
        assert manifests[name]["conversion"]["quantization"]["bits"] == 4
        assert manifests[name]["eval"]["synthetic"]["n"] == 2  # loaded through its runtime and evaluated
    assert [name for name, m in manifests.items() if m["release"] is False] == ["fp16", "gguf-Q4_K_M-noimatrix",
                                                                                "gguf-Q4_K_M@prose"]
    records = out / ".pipeline" / "records"  # the one place every stage records what it did
    assert sorted(p.name for p in records.iterdir()) == ["bench", "calibrate", "calibrate.json", "convert", "eval",
                                                        "fidelity", "gate", "gguf-base.json", "gguf-base@prose.json",
                                                        "prepare.json", "report.json"]
    for stage in ("convert", "eval", "bench", "gate"):
        assert sorted(p.stem for p in (records / stage).iterdir()) == sorted(DIRS)
    assert sorted(p.stem for p in (records / "fidelity").iterdir()) == sorted(DIRS[1:])  # every variant against fp16
    for name in DIRS[1:]:
        answer = manifests[name]["fidelity"]["answer"]
        assert answer["positions"] > 0 and answer["mean_kl"] >= 0 and 0 <= answer["top1_agreement"] <= 1


def test_manifests_and_report_equal_the_recorded_run(out):
    found = recording(out)
    if os.environ.get("INVOKER_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    for name in DIRS:
        assert found["manifests"][name] == expected["manifests"][name], name
    assert found["report"] == expected["report"]
