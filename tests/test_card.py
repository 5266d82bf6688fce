"""Model cards: metadata that validates, the results from the manifests, snippets that name real files and run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hub_stub import make_release

from invoker.prompt import render_prompt
from invoker.examples import GET_TIME, GET_TIME_QUESTION
from pipelines.card import validate_card
from pipelines.publish import publish

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "models" / "tiny-invoker"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    out_dir = make_release(root / "out", source_dir=SOURCE)
    publish(out_dir=out_dir, namespace="test", dry_run=root / "release", log=lambda _: None, warn=lambda _: None)
    return root / "release"


def card_text(bundle, repo: str) -> str:
    return (bundle / repo / "README.md").read_text(encoding="utf-8")


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```(?:python|shell)\n(.*?)^```$", text, flags=re.S | re.M)


@pytest.mark.parametrize("repo, library, tag", [("tiny-invoker-GGUF", "gguf", "gguf"),
                                                ("tiny-invoker-GPTQ", "transformers", "gptq")])
def test_card_metadata_parses_and_validates(bundle, repo, library, tag):
    from huggingface_hub import ModelCard

    text = card_text(bundle, repo)
    data = ModelCard(text).data.to_dict()
    assert validate_card(text) == []
    assert data["base_model"] == "test/tiny-invoker"  # a local source: <namespace>/<model>
    assert data["base_model_relation"] == "quantized"
    assert data["license"] == "apache-2.0"  # read from the source model's own card
    assert data["library_name"] == library
    assert data["pipeline_tag"] == "text-generation"
    assert data["quantized_by"] == "test"
    assert {tag, "function-calling"} <= set(data["tags"])


def test_validate_card_names_the_bad_field(bundle):
    text = card_text(bundle, "tiny-invoker-GPTQ")
    assert validate_card(text.replace("base_model_relation: quantized", "base_model_relation: quantised")) == [
        "base_model_relation: 'quantised' is not one of adapter, merge, quantized, finetune"]
    assert validate_card(text.replace("license: apache-2.0\n", "")) == ["license: missing"]


def test_results_table_comes_from_the_manifests(bundle):
    text = card_text(bundle, "tiny-invoker-GGUF")
    rows = [line for line in text.splitlines() if line.startswith("| gguf") or line.startswith("| fp16")]
    assert rows == [  # bits/weight = 8 × the weight file's bytes / 2000 parameters, as in the report
        "| gguf Q4_K_M | 1.54 KB | 6.16 | 0.038 (-0.002) | 0.980 | — | 41.5 (cpu: AMD EPYC 7B13, 2 threads) | yes |",
        "| gguf Q8_0 | 2.31 KB | 9.23 | 0.040 (+0.000) | 0.980 | — | 41.5 (cpu: AMD EPYC 7B13, 2 threads) | yes |",
        "| fp16 (reference) | 4.00 KB | 16.00 | 0.040 | 0.980 | 0 (reference) | 41.5 (cpu: AMD EPYC 7B13, 2 threads) | baseline |",
    ]
    assert "Eval suite `synthetic`" in text  # the suite the gate judged on
    assert "![Call accuracy against size" in text and "(accuracy_vs_size.png)" in text
    assert "awq" not in text.lower().split("## results")[1].split("## prompt format")[0]  # refused: not in the table
    assert "[test/tiny-invoker-GPTQ](https://huggingface.co/test/tiny-invoker-GPTQ)" in text  # links the other formats


def test_card_shows_the_prompt_calibration_and_every_file_with_its_hash(bundle):
    text = card_text(bundle, "tiny-invoker-GGUF")
    assert render_prompt(GET_TIME_QUESTION, functions=[GET_TIME]) in text
    assert "`n_samples` = `16`, `max_length` = `512`, `seed` = `0`" in text
    assert "Calibration: none for Q8_0" in text
    release = json.loads((bundle / "release.json").read_text())
    files = release["repos"][0]["files"]
    for name in set(files) - {"README.md", "accuracy_vs_size.png"}:
        assert f"| `{name}` |" in text and files[name]["sha256"] in text


def test_snippets_name_only_files_the_repo_holds(bundle):
    for repo in ("tiny-invoker-GGUF", "tiny-invoker-GPTQ"):
        text = card_text(bundle, repo)
        titles = re.findall(r"^### (.+)$", text, flags=re.M)
        expected = (["llama-cpp-python", "llama.cpp (llama-server)", "Ollama"] if repo.endswith("GGUF")
                    else ["transformers", "vLLM"]) + ["invoker-pack serve + the openai client"]
        assert titles == expected
        snippets = "\n".join(code_blocks(text))
        assert f"test/{repo}" in snippets
        named = set(re.findall(r"[\w.-]+\.gguf|Modelfile\.\w+", snippets))
        assert named == ({"tiny-invoker-Q4_K_M.gguf", "Modelfile.Q4_K_M"} if repo.endswith("GGUF") else set())
        assert all((bundle / repo / name).is_file() for name in named)


def test_repos_vllm_serves_ship_the_tool_parser_plugin_the_vllm_snippet_names(bundle):
    from pipelines.release import VLLM_PLUGIN_DIR, VLLM_PLUGIN_FILES

    for repo in ("tiny-invoker-GGUF", "tiny-invoker-GPTQ"):
        text = card_text(bundle, repo)
        shipped = sorted(p.relative_to(bundle / repo).as_posix() for p in (bundle / repo).rglob("*.py"))
        if repo.endswith("GGUF"):
            assert shipped == [] and "vllm serve" not in text
            continue
        assert shipped == sorted(f"{VLLM_PLUGIN_DIR}/{name}" for name in VLLM_PLUGIN_FILES)
        for name in VLLM_PLUGIN_FILES:
            assert (bundle / repo / VLLM_PLUGIN_DIR / name).read_bytes() == (ROOT / name).read_bytes()
        (snippet,) = [block for block in code_blocks(text) if "vllm serve" in block]
        plugin = re.search(r"--tool-parser-plugin (\S+)", snippet)[1]
        assert plugin == f"{repo}/{VLLM_PLUGIN_DIR}/invoker/vllm_tool_parser.py"  # where `hf download --local-dir` puts it
        assert f"vllm serve test/{repo} " in snippet and "--tool-call-parser invoker" in snippet


def test_llama_server_request_carries_the_exact_prompt(bundle):
    text = card_text(bundle, "tiny-invoker-GGUF")
    (request,) = re.findall(r"<<'EOF'\n(\{\"prompt\".*?)\nEOF", text, flags=re.S)
    assert json.loads(request)["prompt"] == render_prompt(GET_TIME_QUESTION, functions=[GET_TIME])


@pytest.mark.e2e
def test_transformers_snippet_runs_as_written(bundle, capsys):
    """The GPTQ card's transformers code, pointed at the bundled fp16 model (same API calls, no GPU needed)."""
    text = card_text(bundle, "tiny-invoker-GPTQ")
    (code,) = [block for block in code_blocks(text) if "AutoModelForCausalLM" in block]
    code = code.replace('"test/tiny-invoker-GPTQ"', repr(str(SOURCE))).replace("max_new_tokens=128", "max_new_tokens=24")
    exec(compile(code, "card-transformers-snippet", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.strip()  # it generated and decoded text
    assert "Available Functions" not in printed  # only the new tokens are printed


def test_the_comparison_variant_is_not_released_and_the_snippets_name_the_recommended_one(bundle):
    """The -noimatrix ablation is verified but marked not for release: no file of it in the bundle, and the
    llama-cpp-python snippet names Q4_K_M, not the ablation (whose file name sorts first)."""
    files = json.loads((bundle / "release.json").read_text())["repos"][0]["files"]
    assert not [name for name in files if "noimatrix" in name]
    text = card_text(bundle, "tiny-invoker-GGUF")
    assert 'filename="tiny-invoker-Q4_K_M.gguf"' in text and "noimatrix" not in text


def test_a_released_ablation_is_published_but_the_snippets_still_name_the_recommended_variant(tmp_path):
    out_dir = make_release(tmp_path / "out", source_dir=SOURCE)
    manifest_path = out_dir / "gguf-Q4_K_M-noimatrix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["release"] = True  # a recipe with compare_only = []
    manifest_path.write_text(json.dumps(manifest))
    publish(out_dir=out_dir, namespace="test", dry_run=tmp_path / "release", log=lambda _: None, warn=lambda _: None)
    files = json.loads((tmp_path / "release" / "release.json").read_text())["repos"][0]["files"]
    assert {"tiny-invoker-Q4_K_M-noimatrix.gguf", "Modelfile.Q4_K_M-noimatrix"} <= set(files)
    text = card_text(tmp_path / "release", "tiny-invoker-GGUF")
    snippets = "\n".join(code_blocks(text))
    assert "tiny-invoker-Q4_K_M.gguf" in snippets and "noimatrix" not in snippets


def test_the_prompt_format_names_the_special_tokens_of_the_artifact_it_describes(tmp_path, bundle):
    """BOS and EOS come from the variant's own tokenizer_config.json (the bundled model's: <|endoftext|>,
    <|im_end|>), else from its GGUF's metadata; a card never assumes Llama-2's <s> and </s>."""
    import shutil

    from invoker.files import describe_files
    from invoker.manifest import write_manifest

    out_dir = make_release(tmp_path / "out", source_dir=SOURCE)
    gptq = out_dir / "gptq-4bit-g128"
    shutil.copy(SOURCE / "tokenizer_config.json", gptq / "tokenizer_config.json")
    manifest = json.loads((gptq / "manifest.json").read_text())
    write_manifest(gptq, {**manifest, "files": describe_files(gptq)})
    publish(out_dir=out_dir, namespace="test", dry_run=tmp_path / "release", log=lambda _: None, warn=lambda _: None)
    text = card_text(tmp_path / "release", "tiny-invoker-GPTQ")
    section = text.split("## Prompt format")[1].split("##")[0]
    assert "The tokenizer adds BOS (`<|endoftext|>`) first." in section
    assert "then EOS (`<|im_end|>`)" in section and "```\n<|im_end|>" not in section
    assert section.count("```<|im_end|>") == 1  # the example answer ends in the model's own EOS
    assert "<s>" not in section and "</s>" not in section
    # the stub's GGUFs are not readable GGUF files: the card names the tokens by their role only
    gguf_section = card_text(bundle, "tiny-invoker-GGUF").split("## Prompt format")[1].split("##")[0]
    assert "<s>" not in gguf_section and "</s>" not in gguf_section and "then EOS;" in gguf_section


def test_special_tokens_are_read_from_a_gguf(tmp_path):
    import gguf

    from invoker.runtimes.llamacpp_runtime import gguf_special_tokens

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(3)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_special_tokens(path) == ("<|endoftext|>", "<|im_end|>")
