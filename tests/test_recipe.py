"""Recipes are validated whole before any work: each problem is refused with the key it sits under."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.recipe import RecipeError, load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "pipelines" / "recipes"


def write_recipe(tmp_path: Path, model_dir: Path, body: str, *, variants: str = '["gguf:Q8_0"]') -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(f'name = "tiny"\nvariants = {variants}\n[source]\npath = "{model_dir}"\n{body}', encoding="utf-8")
    return path


@pytest.fixture
def model_dir(tmp_path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    return directory


def test_shipped_recipes_load_with_every_product_variant():
    tiny = load_recipe(RECIPES / "tiny-invoker.toml")
    assert tiny.name == "tiny-invoker"
    mission = {"gguf:F16", "gguf:Q8_0", "gguf:Q5_K_M", "gguf:Q4_K_M", "gptq:4bit-g128", "awq:4bit-g128"}
    assert {v.name for v in tiny.variants} == mission  # make quantize's 45-minute budget: the mission's formats
    assert [v.dir_name for v in tiny.variants][:2] == ["gguf-F16", "gguf-Q8_0"]
    full = load_recipe(RECIPES / "tiny-invoker-full.toml")  # extends the default: same name, same out dir
    assert full.name == tiny.name and full.eval == tiny.eval and full.gate == tiny.gate and full.source == tiny.source
    assert {v.name for v in full.variants} == mission | {"gguf:Q4_K_M-noimatrix", "ct:w4a16-g128"}
    assert [v.name for v in full.variants if not v.release] == ["gguf:Q4_K_M-noimatrix"]
    big = load_recipe(RECIPES / "invoker-13b.toml")
    assert big.source.hub == "jeffrey-fong/invoker-13b" and big.source.revision
    assert {v.name for v in big.variants} == {"gguf:F16", "gguf:Q8_0", "gguf:Q5_K_M", "gguf:Q4_K_M",
                                              "gptq:4bit-g128", "awq:4bit-g128", "ct:w4a16-g128"}
    assert big.gate_suite == "synthetic"


def test_gate_thresholds_follow_the_bits_of_each_variant():
    recipe = load_recipe(RECIPES / "tiny-invoker.toml")
    ratios = {v.name: recipe.gate.ratio_for(v.bits_per_weight) for v in recipe.variants}
    assert ratios["gguf:F16"] == ratios["gguf:Q8_0"] == 0.98
    assert ratios["gguf:Q5_K_M"] == ratios["gguf:Q4_K_M"] == ratios["gptq:4bit-g128"] == ratios["awq:4bit-g128"] == 0.90
    assert "ct:w4a16-g128" not in ratios


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ('["gguf:Q8_0", "gguf:F16", "gguf:Q9"]', "variants[2]: unknown GGUF variant 'Q9'; valid: F16, Q8_0, Q5_K_M, Q4_K_M"),
        ('["gptq:3bit-g128"]', "variants[0]: unknown GPTQ variant '3bit-g128'; valid: 4bit-g128"),
        ('["awq:4bit-g128-actorder"]', "variants[0]: unknown AWQ variant '4bit-g128-actorder'; valid: 4bit-g128"),
        ('["onnx:int8"]', "variants[0]: unknown format 'onnx'; valid: gguf, gptq, awq"),
        ('["Q4_K_M"]', "variants[0]: 'Q4_K_M' is not '<format>:<variant>'"),
        ('["gguf:Q8_0", "gguf:Q8_0"]', "variants[1]: 'gguf:Q8_0' is listed twice"),
        ("[]", "variants: missing or empty"),
    ],
)
def test_bad_variants_are_refused_naming_the_entry_and_the_valid_choices(tmp_path, model_dir, variants, message):
    with pytest.raises(RecipeError, match="recipe.toml: " + re.escape(message)):
        load_recipe(write_recipe(tmp_path, model_dir, "", variants=variants))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[gate]\nratio_4bit = 1.5\n", "gate.ratio_4bit: must be a number in [0, 1], got 1.5"),
        ("[gate]\njson_valid_rate = -0.1\n", "gate.json_valid_rate: must be a number in [0, 1], got -0.1"),
        ('[gate]\nratio_8bit = "high"\n', "gate.ratio_8bit: must be a number in [0, 1]"),
        ('[gate]\nsuite = "bfcl:simple"\n', "gate.suite: 'bfcl:simple' is not one of eval.suites (synthetic)"),
        ("[gate]\nratio = 0.9\n", "gate.ratio: unknown key; valid: ratio_8bit"),
        ("[eval]\nlimit = 0\n", "eval.limit: must be an integer in [1, 1000000], got 0"),
        ('[eval]\nlimits = { "bfcl:simple" = 5 }\n', "eval.limits: 'bfcl:simple' is not one of eval.suites (synthetic)"),
        ('[eval]\nlimits = { "synthetic" = 0 }\n', "eval.limits.'synthetic': must be an integer in [1, 1000000], got 0"),
        ("[gate]\nkld_4bit = -1\n", "gate.kld_4bit: must be a number in [0, inf), got -1"),
        ("[gate]\nalpha = 2\n", "gate.alpha: must be a number in [0, 1], got 2"),
        # non-finite numbers: with ratio_8bit = nan every ratio check passed
        ("[gate]\nratio_8bit = nan\n", "gate.ratio_8bit: must be a number in [0, 1], got nan"),
        ("[gate]\nalpha = nan\n", "gate.alpha: must be a number in [0, 1], got nan"),
        ("[gate]\nkld_8bit = inf\n", "gate.kld_8bit: must be a number in [0, inf), got inf"),
        ("[bench]\nruns = 1000000000000\n", "bench.runs: must be an integer in [1, 1000], got 1000000000000"),
        ("[fidelity]\ntop_k = 1000000000\n", "fidelity.top_k: must be an integer in [1, 1000], got 1000000000"),
        ("[fidelity]\nlimit = 0\n", "fidelity.limit: must be an integer in [1, 1000000], got 0"),
        ("[fidelity]\ncases = 5\n", "fidelity.cases: unknown key; valid: limit, top_k"),
        ('[eval]\nsuites = ["mmlu"]\n', "eval.suites[0]: unknown suite 'mmlu'"),
        ("[bench]\nruns = 0\n", "bench.runs: must be an integer in [1, 1000], got 0"),
        ('[bench]\ndevices = ["tpu"]\n', "bench.devices: must be a non-empty list of 'cpu' / 'cuda'"),
        ('[convert]\ndevice = "gpu"\n', "convert.device: must be 'auto', 'cpu' or 'cuda', got 'gpu'"),
        ('[convert]\ndevices = ["cuda"]\n', "convert.devices: unknown key; valid: device"),
        ("[calibration]\nmax_length = 8\n", "calibration: calibration max_length must be an integer >= 16, got 8"),
        ("[calibration]\nsamples = 8\n", "calibration.samples: unknown key; valid: source, n_samples"),
    ],
)
def test_out_of_range_settings_are_refused_naming_the_key(tmp_path, model_dir, body, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(write_recipe(tmp_path, model_dir, body))


def test_a_jsonl_suite_that_holds_no_cases_is_refused_before_any_work(tmp_path, model_dir):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(RecipeError, match=re.escape(f"eval.suites[0]: 'jsonl:{passwd}': not a JSONL file of cases")):
        load_recipe(write_recipe(tmp_path, model_dir, f'[eval]\nsuites = ["jsonl:{passwd}"]\n'))


def test_a_recipe_extends_another_its_tables_merged_key_by_key(tmp_path, model_dir):
    base = write_recipe(tmp_path, model_dir, "[eval]\nlimit = 7\nmax_tokens = 64\n[gate]\nratio_4bit = 0.8\n")
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{base.name}"\nvariants = ["gguf:Q8_0"]\n[eval]\nlimit = 9\n')
    recipe = load_recipe(child)
    assert [v.name for v in recipe.variants] == ["gguf:Q8_0"]  # a top-level value replaces the parent's
    assert (recipe.eval.limit, recipe.eval.max_tokens, recipe.gate.ratio_4bit) == (9, 64, 0.8)  # tables merge
    base.write_text(f'extends = "{child.name}"\n')
    with pytest.raises(RecipeError, match="extends: .* does not end in a recipe of its own"):
        load_recipe(child)
    child.write_text('extends = "absent.toml"\n')
    with pytest.raises(RecipeError, match="absent.toml: no such recipe file"):
        load_recipe(child)


def test_a_recipe_nested_too_deeply_is_one_clean_error(tmp_path):
    recipe = tmp_path / "deep.toml"
    recipe.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError, match=re.escape(f"{recipe}: not a recipe: its tables or arrays nest too deeply")):
        load_recipe(recipe)


def test_a_missing_source_is_refused_before_any_work(tmp_path, model_dir):
    with pytest.raises(RecipeError, match=re.escape(f"source.path: {tmp_path / 'nowhere'}: no such directory")):
        load_recipe(write_recipe(tmp_path, tmp_path / "nowhere", ""))
    (model_dir / "config.json").unlink()
    with pytest.raises(RecipeError, match="source.path: .*: no config.json"):
        load_recipe(write_recipe(tmp_path, model_dir, ""))
    recipe = tmp_path / "hub.toml"
    recipe.write_text('variants = ["gguf:Q8_0"]\n[source]\nhub = "owner/model"\n')
    with pytest.raises(RecipeError, match="source.revision: required with source.hub"):
        load_recipe(recipe)
    recipe.write_text('variants = ["gguf:Q8_0"]\n')
    with pytest.raises(RecipeError, match="source: missing"):
        load_recipe(recipe)
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.toml")


def test_model_override_replaces_the_source_and_keeps_a_matching_revision(tmp_path, model_dir):
    recipe = load_recipe(RECIPES / "tiny-invoker.toml", model=str(model_dir))
    assert recipe.source.path == model_dir and recipe.name == "tiny-invoker"
    big = load_recipe(RECIPES / "invoker-13b.toml", model="jeffrey-fong/invoker-13b")
    assert big.source.revision == "main"
    with pytest.raises(RecipeError, match="source.revision: required"):
        load_recipe(RECIPES / "invoker-13b.toml", model="someone/else-13b")


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("variants = [\n")
    with pytest.raises(RecipeError, match="broken.toml: not valid TOML"):
        load_recipe(path)


def test_the_cli_refuses_a_bad_recipe_in_one_line_before_creating_anything(tmp_path, model_dir, capsys):
    from pipelines.cli import main

    out = tmp_path / "out"
    recipe = write_recipe(tmp_path, model_dir, "", variants='["gguf:Q8_0", "gguf:F16", "gguf:Q9"]')
    assert main(["quantize", "--recipe", str(recipe), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("invoker-pack quantize: error: ") and "variants[2]: unknown GGUF variant 'Q9'" in error
    assert error.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(("suites", "message"), [
    ('["synthetic", "bfcl:typo"]', "eval.suites[1]: unknown BFCL suite 'bfcl:typo'"),
    ('["jsonl:{missing}"]', "eval.suites[0]: 'jsonl:{missing}': no such file"),
    ('["jsonl:"]', "eval.suites[0]: 'jsonl:': no such file"),
    ('["bfcl:simple@{missing}"]', "eval.suites[0]: {missing}: no such directory"),
])
def test_a_suite_that_cannot_load_is_refused_up_front_naming_its_entry(tmp_path, model_dir, suites, message):
    """Before, these passed validation and the run failed at the eval stage, after every conversion."""
    missing = tmp_path / "nowhere" / "cases.jsonl"
    body = f"[eval]\nsuites = {suites.format(missing=missing)}\n"
    with pytest.raises(RecipeError, match=re.escape(message.format(missing=missing))):
        load_recipe(write_recipe(tmp_path, model_dir, body))


def test_suites_that_exist_are_accepted(tmp_path, model_dir):
    cases = tmp_path / "cases.jsonl"
    cases.write_text("")
    recipe = load_recipe(write_recipe(tmp_path, model_dir, f'[eval]\nsuites = ["synthetic", "jsonl:{cases}", "bfcl:simple"]\n'))
    assert recipe.eval.suites == ("synthetic", f"jsonl:{cases}", "bfcl:simple")


def test_every_problem_is_reported_at_once_each_naming_its_key(tmp_path, model_dir):
    """Validated whole: a recipe with several mistakes says all of them in one error, before any work."""
    body = '[eval]\nsuites = ["synthetic", "bfcl:typo"]\n[gate]\nratio_4bit = 1.5\n[calibration]\ngeneral_text = "nowhere.txt"\ngeneral_text_fraction = 0.2\n'
    recipe = write_recipe(tmp_path, model_dir, body, variants='["gguf:Q9", "gptq:3bit-g128"]')
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    message = str(caught.value)
    for expected in ("variants[0]: unknown GGUF variant 'Q9'", "variants[1]: unknown GPTQ variant '3bit-g128'",
                     "eval.suites[1]: unknown BFCL suite 'bfcl:typo'", "gate.ratio_4bit: must be a number in [0, 1]",
                     "calibration.general_text: nowhere.txt: no such file"):
        assert expected in message
    assert message.startswith(f"{recipe}: ") and "\n" not in message


def test_calibration_files_are_checked_when_the_recipe_is_read(tmp_path, model_dir):
    with pytest.raises(RecipeError, match=re.escape("calibration.source: data/calls.jsonl: no such file or directory")):
        load_recipe(write_recipe(tmp_path, model_dir, '[calibration]\nsource = "data/calls.jsonl"\n'))
    hub = load_recipe(write_recipe(tmp_path, model_dir, '[calibration]\nsource = "glaiveai/glaive-function-calling-v2"\n'))
    assert hub.calibration.source == "glaiveai/glaive-function-calling-v2"  # a Hub dataset: fetched when used


def test_comparison_variants_are_not_for_release_by_default_and_compare_only_says_which(tmp_path, model_dir):
    variants = '["gguf:Q4_K_M", "gguf:Q4_K_M-noimatrix", "gptq:4bit-g128"]'
    recipe = load_recipe(write_recipe(tmp_path, model_dir, "", variants=variants))
    assert {v.name: v.release for v in recipe.variants} == {
        "gguf:Q4_K_M": True, "gguf:Q4_K_M-noimatrix": False, "gptq:4bit-g128": True}
    path = tmp_path / "compare.toml"
    path.write_text(f'compare_only = ["gptq:4bit-g128"]\n{write_recipe(tmp_path, model_dir, "", variants=variants).read_text()}')
    assert {v.name: v.release for v in load_recipe(path).variants} == {
        "gguf:Q4_K_M": True, "gguf:Q4_K_M-noimatrix": True, "gptq:4bit-g128": False}
    path.write_text(f'compare_only = ["awq:4bit-g128"]\n{write_recipe(tmp_path, model_dir, "", variants=variants).read_text()}')
    with pytest.raises(RecipeError, match=re.escape("compare_only[0]: 'awq:4bit-g128' is not one of variants")):
        load_recipe(path)


def test_the_convert_device_is_auto_unless_the_recipe_names_one(tmp_path, model_dir):
    assert load_recipe(write_recipe(tmp_path, model_dir, "")).convert.device == "auto"
    assert load_recipe(write_recipe(tmp_path, model_dir, '[convert]\ndevice = "cuda"\n')).convert.device == "cuda"


def test_per_suite_limits_override_the_eval_limit(tmp_path, model_dir):
    body = '[eval]\nsuites = ["synthetic", "bfcl:simple"]\nlimit = 200\nlimits = { "bfcl:simple" = 40 }\n'
    recipe = load_recipe(write_recipe(tmp_path, model_dir, body))
    assert recipe.eval.limit_for("synthetic") == 200 and recipe.eval.limit_for("bfcl:simple") == 40
    assert recipe.gate.kld_for(4.5) == recipe.gate.kld_4bit and recipe.gate.kld_for(8.5) == recipe.gate.kld_8bit


def test_a_named_calibration_set_makes_a_comparison_variant_of_its_own(tmp_path, model_dir):
    body = '[calibrations.generic]\ngeneral_text = "corpus:botchan"\ngeneral_text_fraction = 1.0\nn_samples = 4\n'
    recipe = load_recipe(write_recipe(tmp_path, model_dir, body, variants='["gguf:Q4_K_M", "gguf:Q4_K_M@generic"]'))
    default, generic = recipe.variants
    assert (generic.name, generic.dir_name, generic.calibration_set) == ("gguf:Q4_K_M@generic", "gguf-Q4_K_M@generic", "generic")
    assert default.release is True and generic.release is False  # built to compare with, not published
    assert recipe.calibration_spec("generic").general_text_fraction == 1.0
    assert recipe.calibration_spec(None) == recipe.calibration


@pytest.mark.parametrize(
    ("variants", "body", "message"),
    [
        ('["gguf:Q4_K_M@nope"]', "", "variants[0]: calibration set 'nope' is not defined; define [calibrations.nope]"),
        ('["gguf:Q8_0@generic"]', '[calibrations.generic]\nn_samples = 4\n',
         "variants[0]: gguf:Q8_0 uses no calibration set, so '@generic' means nothing"),
        ('["gguf:Q8_0"]', '[calibrations.generic]\ngeneral_text = "corpus:nope"\ngeneral_text_fraction = 1.0\n',
         "calibrations.generic.general_text: unknown corpus 'corpus:nope'; known: corpus:botchan"),
        ('["gguf:Q8_0"]', '[calibrations.generic]\nsamples = 4\n', "calibrations.generic.samples: unknown key"),
    ],
)
def test_bad_calibration_sets_are_refused_naming_the_key(tmp_path, model_dir, variants, body, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(write_recipe(tmp_path, model_dir, body, variants=variants))
