"""GGUF conversion: llama.cpp's converter and quantizer, the importance matrix, the chat template, errors."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from convert import gguf as gguf_convert
from convert import hf_to_gguf, imatrix as imatrix_module
from convert.architectures import LLAMA
from convert.calibration import CalibrationSet, CalibrationSpec, build_calibration
from convert.ollama import STOP_STRINGS, TEMPLATE, render_modelfile
from invoker.chat_template import CHAT_TEMPLATE
from invoker.files import atomic_output_dir
from invoker.prompt import SYSTEM_PROMPT, render_prompt

FUNCTIONS = [
    {
        "name": "get_weather",
        "description": "Weather — «now», in °C",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City\nname"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    }
]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Zürich?  Two spaces,\ttab."},
    {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}},
    {"role": "function", "name": "get_weather", "content": '{"temp": 3}'},
    {"role": "user", "content": "And tomorrow? 🌧"},
]
TOKENIZER_CORPUS = [
    '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"days\\": 3}"}',
    "```json\n{\"type\": \"object\", \"properties\": {}}\n```",
    "Zürich café naïve — 東京 🌧 emoji 👩‍💻 ½ ∑",
    "two  spaces,   three,    four;\ttab\t\ttabs\n\nnewlines\n\n\n  leading spaces",
    "  leading double space",
    " ",
    "\n",
    "1234567890 3.14159 -0.5e10",
    "USER: hi\nASSISTANT: ```{\"content\": \"ok\", \"function_call\": null}```",
]


# --- fast: argument checking before any heavy work --------------------------------------------------


def test_variant_names_parse_and_unknown_ones_list_the_valid_choices():
    assert gguf_convert.parse_variant("Q4_K_M") == ("Q4_K_M", True)
    assert gguf_convert.parse_variant("Q4_K_M-noimatrix") == ("Q4_K_M", False)
    assert gguf_convert.parse_variant("Q8_0") == ("Q8_0", False)
    assert gguf_convert.parse_variant("F16") == ("F16", False)
    with pytest.raises(ValueError, match=r"unknown GGUF quantization type 'Q4_K_X'; valid: F16, BF16, Q8_0.*Q4_K_M"):
        gguf_convert.parse_variant("Q4_K_X")
    with pytest.raises(ValueError, match="never uses an importance matrix"):
        gguf_convert.parse_variant("Q8_0-noimatrix")
    assert set(gguf_convert.VARIANTS) <= set(gguf_convert.QUANT_TYPES)


def test_every_quant_type_names_a_llama_cpp_file_type():
    import llama_cpp

    for name, (constant, *_) in gguf_convert.QUANT_TYPES.items():
        assert isinstance(getattr(llama_cpp, constant), int), name


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_bad_sources_are_refused_with_the_file_named(tmp_path, tiny_random_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}: no config.json"):
        gguf_convert.check_source(source_dir=empty, quant_type="F16")

    no_tokenizer = copy_model(tiny_random_model, tmp_path / "no-tokenizer")
    for name in ("tokenizer.model", "tokenizer.json"):
        (no_tokenizer / name).unlink()
    with pytest.raises(ValueError, match=f"{no_tokenizer}: no tokenizer"):
        gguf_convert.check_source(source_dir=no_tokenizer, quant_type="F16")

    not_llama = copy_model(tiny_random_model, tmp_path / "not-llama")
    config = json.loads((not_llama / "config.json").read_text())
    (not_llama / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="not a Llama decoder"):
        gguf_convert.check_source(source_dir=not_llama, quant_type="F16")

    odd = copy_model(tiny_random_model, tmp_path / "odd")
    (odd / "config.json").write_text(json.dumps({**config, "intermediate_size": 800}))
    gguf_convert.check_source(source_dir=odd, quant_type="F16")  # F16 has no block size
    with pytest.raises(ValueError, match="intermediate_size = 800 is not a multiple of 256, which Q4_K_M needs"):
        gguf_convert.check_source(source_dir=odd, quant_type="Q4_K_M")


def test_convert_refuses_before_writing_anything(tmp_path, tiny_random_model):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="valid: F16"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q3_X", calibration=None)
    with pytest.raises(ValueError, match="needs a non-empty calibration set.*Q4_K_M-noimatrix"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q4_K_M", calibration=None)
    empty = CalibrationSet(spec=CalibrationSpec(), texts=[], input_ids=[], sha256="")
    with pytest.raises(ValueError, match="non-empty calibration"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q5_K_M", calibration=empty)
    assert list(out.iterdir()) == []


def test_reused_inputs_that_are_not_whole_ggufs_are_refused_by_name(tmp_path, tiny_random_model, calibration):
    import gguf

    out = tmp_path / "out"
    out.mkdir()
    cut = tmp_path / "cut-F16.gguf"
    cut.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(ValueError, match=f"{cut}: corrupt or truncated GGUF"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q8_0", calibration=None, f16_gguf=cut)
    with pytest.raises(ValueError, match=f"{tmp_path / 'missing.gguf'}: no such F16 GGUF file"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q8_0", calibration=None,
                             f16_gguf=tmp_path / "missing.gguf")
    not_f16 = tmp_path / "f32.gguf"
    writer = gguf.GGUFWriter(str(not_f16), arch="llama")
    writer.add_file_type(0)  # ALL_F32
    writer.add_token_list(["<unk>", "<s>", "</s>"])
    writer.add_tensor("output.weight", np.ones((3, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=f"{not_f16}: not an F16 GGUF"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q8_0", calibration=None, f16_gguf=not_f16)
    with pytest.raises(ValueError, match=f"{cut}: not a readable GGUF imatrix"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q4_K_M", calibration=calibration,
                             imatrix_gguf=cut)
    assert list(out.iterdir()) == []


def test_without_converter_or_network_conversion_names_the_fetch_command(tmp_path, tiny_random_model, monkeypatch, capsys):
    """No converter in the environment and no package index: a clear error naming the one-time setup command."""
    nowhere = tmp_path / "no-links"
    nowhere.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # no configured mirrors or find-links
    monkeypatch.setenv("PIP_FIND_LINKS", str(nowhere))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens on port 9
    monkeypatch.setattr(hf_to_gguf, "default_converter_dir", lambda version: tmp_path / f"converter-{version}")
    out = tmp_path / "out"
    out.mkdir()
    command = re.escape(f"{sys.executable} -m convert.gguf --fetch-converter")
    with pytest.raises(RuntimeError, match=f"converter .* is not in {tmp_path}/converter-.*could not be downloaded.*{command}"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="F16", calibration=None, progress=False)
    assert list(out.iterdir()) == [] and not list(tmp_path.glob("converter-*"))
    assert gguf_convert.main(["--fetch-converter"]) == 1
    assert re.search(command, capsys.readouterr().err)


# --- the importance matrix ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration(tiny_random_model) -> CalibrationSet:
    return build_calibration(tokenizer_dir=tiny_random_model, spec=CalibrationSpec(n_samples=6, max_length=256))


def test_imatrix_layer_by_layer_equals_hooks_on_the_whole_model(tiny_random_model, calibration):
    import torch
    from transformers import AutoModelForCausalLM

    imatrix = imatrix_module.compute_imatrix(source_dir=tiny_random_model, calibration=calibration, progress=False)

    model = AutoModelForCausalLM.from_pretrained(str(tiny_random_model), dtype=torch.float32).eval()
    names = imatrix_module.gguf_weight_names(n_layers=model.config.num_hidden_layers, architecture=LLAMA)
    expected: dict[str, torch.Tensor] = {}

    def record(name):
        def hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            expected[name] = expected.get(name, 0) + x.pow(2).sum(0)
        return hook

    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module_name.startswith("model.layers."):
            module.register_forward_pre_hook(record(names[module_name + ".weight"]))
    with torch.inference_mode():
        for ids in calibration.input_ids:
            model(torch.tensor([ids]))

    assert sorted(imatrix.sums) == sorted(expected) and len(expected) == 7 * model.config.num_hidden_layers
    assert "blk.0.attn_q.weight" in imatrix.sums and "blk.1.ffn_down.weight" in imatrix.sums
    for name, value in expected.items():
        np.testing.assert_allclose(imatrix.sums[name], value.numpy(), rtol=1e-6)
        assert imatrix.counts[name] == calibration.n_tokens
    assert imatrix.sums["blk.0.ffn_down.weight"].shape == (model.config.intermediate_size,)


def test_imatrix_file_is_llama_cpp_gguf_imatrix_format(tmp_path):
    import gguf

    imatrix = imatrix_module.Imatrix(
        sums={"blk.0.attn_q.weight": np.array([1.0, 4.0, 9.0], dtype=np.float32),
              "blk.0.ffn_up.weight": np.array([2.0, 2.0], dtype=np.float32)},
        counts={"blk.0.attn_q.weight": 3, "blk.0.ffn_up.weight": 2},
        chunk_count=2,
        chunk_size=512,
    )
    path = imatrix_module.write_imatrix(imatrix, tmp_path / "imatrix.gguf", dataset="calibration xyz", arch="llama")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "imatrix"
    assert reader.fields["imatrix.datasets"].contents() == ["calibration xyz"]
    assert reader.fields["imatrix.chunk_count"].contents() == 2
    assert reader.fields["imatrix.chunk_size"].contents() == 512
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {"blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts",
                            "blk.0.ffn_up.weight.in_sum2", "blk.0.ffn_up.weight.counts"}
    assert tensors["blk.0.attn_q.weight.in_sum2"].tensor_type.name == "F32"
    np.testing.assert_array_equal(np.ravel(tensors["blk.0.attn_q.weight.in_sum2"].data), [1.0, 4.0, 9.0])
    np.testing.assert_array_equal(np.ravel(tensors["blk.0.attn_q.weight.counts"].data), [3.0])
    np.testing.assert_allclose(imatrix.importance("blk.0.attn_q.weight"), [1 / 3, 4 / 3, 3.0], rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["imatrix.gguf"]
    again = imatrix_module.read_imatrix(path, expect_dataset="calibration xyz")
    assert again.counts == imatrix.counts and (again.chunk_count, again.chunk_size) == (2, 512)
    np.testing.assert_array_equal(again.sums["blk.0.ffn_up.weight"], imatrix.sums["blk.0.ffn_up.weight"])
    with pytest.raises(ValueError, match="not from this calibration set"):
        imatrix_module.read_imatrix(path, expect_dataset="another set")


# --- the Ollama Modelfile -------------------------------------------------------------------------


def test_modelfile_points_at_the_gguf_and_carries_template_stops_and_defaults():
    text = render_modelfile(gguf_name="tiny-Q4_K_M.gguf", context_length=4096)
    commands = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert commands[0] == "FROM ./tiny-Q4_K_M.gguf"
    assert f'TEMPLATE """{TEMPLATE}"""' in text and '"""' not in TEMPLATE
    assert [line for line in commands if line.startswith("PARAMETER stop")] == [f'PARAMETER stop "{s}"' for s in STOP_STRINGS]
    assert "PARAMETER temperature 0" in commands and "PARAMETER num_ctx 4096" in commands
    assert "</s>" in STOP_STRINGS


def test_modelfile_template_blocks_are_balanced_and_lay_out_invoker_turns():
    actions = re.findall(r"\{\{-?\s*(\w+)", TEMPLATE)
    openings = sum(action in ("if", "range", "with") for action in actions)
    assert openings == actions.count("end") > 0
    assert TEMPLATE.startswith("Available Functions:\n{{- if .Tools }}")
    assert "\n\n" + SYSTEM_PROMPT + "\n{{-" in TEMPLATE
    for marker in ("\nSYSTEM: {{ $m.Content }}", "\nUSER: {{ $m.Content }}", '\nASSISTANT: ```{"content": ',
                   '\nFUNCTION: ```{"name": ', "\nASSISTANT:\n{{- end }}"):
        assert marker in TEMPLATE, marker


# --- end to end: HF checkpoint -> GGUF through llama.cpp ---------------------------------------------


@pytest.fixture(scope="module")
def converted(tiny_random_model, calibration, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Each variant converted into its own dir through atomic_output_dir, as the pipeline does."""
    root = tmp_path_factory.mktemp("gguf")
    results = {}
    for variant in ("F16", "Q8_0", "Q4_K_M", "Q4_K_M-noimatrix"):
        final = root / f"gguf-{variant}"
        with atomic_output_dir(final) as tmp:
            details = gguf_convert.convert(source_dir=tiny_random_model, out_dir=tmp, variant=variant,
                                           calibration=calibration, progress=False, model_name="tiny")
        results[variant] = (final, details)
    return results


def gguf_reader(directory: Path, name: str):
    import gguf

    return gguf.GGUFReader(str(directory / name))


@pytest.mark.e2e
def test_each_variant_dir_holds_its_gguf_modelfile_and_imatrix(converted):
    expected_files = {
        "F16": {"tiny-F16.gguf", "Modelfile"},
        "Q8_0": {"tiny-Q8_0.gguf", "Modelfile"},
        "Q4_K_M": {"tiny-Q4_K_M.gguf", "Modelfile", "imatrix.gguf"},
        "Q4_K_M-noimatrix": {"tiny-Q4_K_M-noimatrix.gguf", "Modelfile"},
    }
    for variant, (directory, details) in converted.items():
        assert {p.name for p in directory.iterdir()} == expected_files[variant]  # no .work, .partial or staging left
        assert details["gguf"] in expected_files[variant]
        assert details["imatrix"] == ("imatrix.gguf" if variant == "Q4_K_M" else None)
        assert details["converter"]["version"] == details["tools"]["llama-cpp-python"]  # converter and runtime: one release
        assert (directory / "Modelfile").read_text().startswith("# Ollama Modelfile for " + details["gguf"])
    assert converted["F16"][1]["converter"]["script"] == "convert_hf_to_gguf.py"
    assert len(converted["F16"][1]["converter"]["sdist_sha256"]) == 64


@pytest.mark.e2e
def test_tensor_types_follow_the_variant(converted):
    def types(variant):
        directory, details = converted[variant]
        return {t.name: t.tensor_type.name for t in gguf_reader(directory, details["gguf"]).tensors}

    assert types("F16")["blk.0.attn_q.weight"] == "F16" and types("F16")["blk.0.attn_norm.weight"] == "F32"
    assert {types("Q8_0")[f"blk.{i}.{w}.weight"] for i in (0, 1) for w in ("attn_q", "ffn_up", "ffn_down")} == {"Q8_0"}
    q4 = types("Q4_K_M")
    assert q4["blk.0.attn_q.weight"] == "Q4_K" and q4["output.weight"] == "Q6_K"
    assert types("Q4_K_M-noimatrix") == q4  # same mix of types; the imatrix changes the values


@pytest.mark.e2e
def test_the_imatrix_is_saved_used_and_recorded_in_the_gguf(converted, calibration):
    with_dir, with_details = converted["Q4_K_M"]
    without_dir, without_details = converted["Q4_K_M-noimatrix"]
    quantized = gguf_reader(with_dir, with_details["gguf"])
    plain = gguf_reader(without_dir, without_details["gguf"])
    assert quantized.fields["quantize.imatrix.file"].contents() == "imatrix.gguf"
    assert quantized.fields["quantize.imatrix.entries_count"].contents() == 14
    assert quantized.fields["quantize.imatrix.chunks_count"].contents() == len(calibration.input_ids)
    assert calibration.sha256[:16] in quantized.fields["quantize.imatrix.dataset"].contents()
    assert "quantize.imatrix.file" not in plain.fields
    data = {t.name: bytes(t.data) for t in quantized.tensors}
    plain_data = {t.name: bytes(t.data) for t in plain.tensors}
    changed = [name for name in data if name.startswith("blk.") and data[name] != plain_data[name]]
    assert len(changed) >= 7  # the block weights were quantized with the importance weights
    imatrix = gguf_reader(with_dir, "imatrix.gguf")
    assert imatrix.fields["imatrix.chunk_count"].contents() == len(calibration.input_ids)
    counts = {t.name: float(np.ravel(t.data)[0]) for t in imatrix.tensors if t.name.endswith(".counts")}
    assert set(counts.values()) == {float(calibration.n_tokens)} and len(counts) == 14


@pytest.mark.e2e
def test_the_gguf_carries_invokers_chat_template_and_llama_defaults(converted):
    directory, details = converted["Q4_K_M"]
    fields = gguf_reader(directory, details["gguf"]).fields
    assert fields["tokenizer.chat_template"].contents() == CHAT_TEMPLATE
    assert fields["general.name"].contents() == "tiny"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is True
    assert fields["tokenizer.ggml.model"].contents() == "llama"


@pytest.mark.e2e
def test_gguf_tokenizer_gives_the_hf_and_sentencepiece_ids(converted, tiny_random_model):
    import llama_cpp
    import sentencepiece
    from transformers import AutoTokenizer

    directory, details = converted["F16"]
    llama = llama_cpp.Llama(model_path=str(directory / details["gguf"]), vocab_only=True, verbose=False)
    hf = AutoTokenizer.from_pretrained(str(tiny_random_model))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tiny_random_model / "tokenizer.model"))
    corpus = TOKENIZER_CORPUS + [render_prompt(CONVERSATION, functions=FUNCTIONS)]
    for text in corpus:
        ids = llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        assert ids == hf(text)["input_ids"] == [sp.bos_id(), *sp.encode(text)], repr(text)
        assert llama.detokenize(ids).decode("utf-8") == text, repr(text)  # the dummy-prefix space is dropped after BOS


@pytest.mark.e2e
def test_plain_llama_cpp_chat_renders_invokers_prompt_from_the_gguf_alone(converted, tiny_random_model):
    """No code of ours between but the load's CPU-safety switch: llama-cpp-python picks the GGUF's chat template
    and tokenizes what it renders."""
    from transformers import AutoTokenizer

    from invoker.runtimes.llamacpp_cpu import open_llama

    directory, details = converted["Q8_0"]
    llama = open_llama(directory / details["gguf"], verbose=False)
    assert llama.chat_format == "chat_template.default"
    for messages, functions in ((CONVERSATION, FUNCTIONS), (CONVERSATION[1:2], None)):
        response = llama.create_chat_completion(messages=messages, functions=functions, max_tokens=1, temperature=0)
        seen = llama.input_ids[: response["usage"]["prompt_tokens"]].tolist()
        expected = AutoTokenizer.from_pretrained(str(tiny_random_model))(render_prompt(messages, functions=functions))["input_ids"]
        assert seen == expected
        assert seen[0] == llama.token_bos()
        assert llama.detokenize(seen).decode("utf-8") == render_prompt(messages, functions=functions)


@pytest.mark.e2e
def test_a_failing_converter_leaves_no_gguf_and_names_the_source(tmp_path, tiny_random_model):
    broken = copy_model(tiny_random_model, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match=f"convert_hf_to_gguf.py failed on {broken}"):
        gguf_convert.convert(source_dir=broken, out_dir=out, variant="F16", calibration=None, progress=False)
    assert list(out.iterdir()) == []


@pytest.mark.e2e
def test_a_failing_quantizer_leaves_no_gguf_under_its_final_name(tmp_path, tiny_random_model, converted, monkeypatch):
    import llama_cpp

    written = []

    def fail_halfway(source, target, params):
        written.append(Path(target.decode()))
        Path(target.decode()).write_bytes(b"GGUF half written")
        return 1

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", fail_halfway)
    f16_dir, f16 = converted["F16"]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RuntimeError, match="failed to quantize .* to Q8_0"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q8_0", calibration=None,
                             f16_gguf=f16_dir / f16["gguf"], progress=False)
    assert written and written[0].name.startswith(".") and written[0].name.endswith(".partial")
    assert list(out.glob("*.gguf")) == [] and not written[0].exists()


@pytest.mark.e2e
def test_reusing_the_f16_gguf_and_the_imatrix_gives_the_same_files(tmp_path, tiny_random_model, converted, calibration):
    f16_dir, f16 = converted["F16"]
    q4_dir, q4 = converted["Q4_K_M"]
    out = tmp_path / "reused"
    out.mkdir()
    details = gguf_convert.convert(source_dir=tiny_random_model, out_dir=out, variant="Q4_K_M", calibration=calibration,
                                   progress=False, model_name="tiny", f16_gguf=f16_dir / f16["gguf"],
                                   imatrix_gguf=q4_dir / "imatrix.gguf")
    assert "imatrix_seconds" not in details["timings"] and "convert_seconds" not in details["timings"]
    assert (out / "imatrix.gguf").read_bytes() == (q4_dir / "imatrix.gguf").read_bytes()
    assert (out / details["gguf"]).read_bytes() == (q4_dir / q4["gguf"]).read_bytes()  # deterministic, same inputs

    other = build_calibration(tokenizer_dir=tiny_random_model, spec=CalibrationSpec(n_samples=2, max_length=128, seed=9))
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    with pytest.raises(ValueError, match="imatrix.gguf: computed from .* not from this calibration set"):
        gguf_convert.convert(source_dir=tiny_random_model, out_dir=elsewhere, variant="Q5_K_M", calibration=other,
                             progress=False, f16_gguf=f16_dir / f16["gguf"], imatrix_gguf=q4_dir / "imatrix.gguf")
    assert not list(elsewhere.glob("*.gguf"))


@pytest.mark.e2e
@pytest.mark.parametrize("variant", ["Q8_0", "Q4_K_M"])
def test_every_load_carries_the_decision_and_both_layouts_compute_the_same(converted, variant, monkeypatch):
    """The real load: the runtime's llama.cpp model gets use_extra_bufts as decided, the defaults are restored
    after, and the plain layout (the one AMX hosts get) gives the repacked layout's log-probabilities."""
    from llama_cpp import llama_cpp as bindings

    from invoker.runtimes import llamacpp_cpu, load_runtime

    seen = []
    original = bindings.llama_model_load_from_file

    def spy(path, params):
        seen.append(params.use_extra_bufts)
        return original(path, params)

    monkeypatch.setattr(bindings, "llama_model_load_from_file", spy)
    logprobs = {}
    for safe in (True, False):
        monkeypatch.setattr(llamacpp_cpu, "use_extra_buffers", lambda safe=safe: safe)
        runtime = load_runtime(converted[variant][0])
        logprobs[safe] = runtime.logprobs(runtime.encode("What's the weather like in Boston, MA? " * 8))
    assert seen == [True, False]
    assert bindings.llama_model_default_params().use_extra_bufts  # llama.cpp's own default, untouched
    np.testing.assert_allclose(logprobs[False], logprobs[True], atol=2e-2)
    assert (logprobs[False].argmax(-1) == logprobs[True].argmax(-1)).mean() > 0.95
