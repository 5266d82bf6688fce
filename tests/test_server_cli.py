"""``invoker-pack serve`` and the environment variables of the original server."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from pipelines.cli import main
from serve_minimal.run import ENV_PATH, ENV_TYPE, app_from_env, model_name_of


def test_serve_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--host", "--port", "--api-key", "--max-concurrency", "--max-queue", "--queue-timeout",
                   "--max-body-bytes", "--no-constrained", "--model-name", "--runtime"):
        assert option in out
    assert "127.0.0.1" in out


def test_serve_a_missing_path_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("invoker-pack serve: error:") and "nope" in err[0]


def test_serve_without_path_or_environment_says_what_to_set(capsys, monkeypatch):
    monkeypatch.delenv(ENV_PATH, raising=False)
    assert main(["serve"]) == 2
    assert ENV_PATH in capsys.readouterr().err


def test_environment_variables_load_like_the_original_server(tiny_random_model, monkeypatch):
    monkeypatch.setenv(ENV_PATH, str(tiny_random_model))
    monkeypatch.setenv(ENV_TYPE, "hf")  # the original's name for transformers
    health = TestClient(app_from_env()).get("/health").json()
    assert (health["runtime"], health["format"], health["model"]) == ("transformers", "fp16", tiny_random_model.name)


def test_an_unknown_model_type_names_the_runtimes(tiny_random_model, monkeypatch):
    monkeypatch.setenv(ENV_PATH, str(tiny_random_model))
    monkeypatch.setenv(ENV_TYPE, "exllamav9")
    with pytest.raises(ValueError, match="unknown runtime 'exllamav9'; available: transformers"):
        app_from_env()


def test_model_name_is_the_directory_or_the_gguf_file_stem(tmp_path):
    assert model_name_of(tmp_path / "tiny-invoker") == "tiny-invoker"
    assert model_name_of(tmp_path / "out" / "model-Q4_K_M.gguf") == "model-Q4_K_M"


# --- keys, artifacts that changed, the real runtime (issue 12) ------------------------------------


@pytest.mark.parametrize(("option", "env"), [(["--api-key", ""], None), (["--api-key", "  "], None), ([], "")])
def test_an_empty_api_key_is_refused(option, env, monkeypatch, tmp_path, capsys):
    """An empty key would let ``Authorization: Bearer `` (an empty token) through."""
    from serve_minimal.run import ENV_API_KEY

    if env is None:
        monkeypatch.delenv(ENV_API_KEY, raising=False)
    else:
        monkeypatch.setenv(ENV_API_KEY, env)
    assert main(["serve", str(tmp_path), *option]) == 2
    assert "is empty" in capsys.readouterr().err


def test_the_gate_refuses_an_empty_key_too():
    from serve_minimal.app import create_app
    from serve_minimal.settings import ServerSettings
    from server_support import ScriptedRuntime

    with pytest.raises(ValueError, match="empty API key"):
        create_app(runtime=ScriptedRuntime(), settings=ServerSettings(model_name="m", api_key=""))


@pytest.mark.parametrize("env_key", [None, "sekrit"])
def test_the_no_key_warning_sees_the_environment_key(env_key, monkeypatch, caplog, tmp_path):
    import uvicorn

    import serve_minimal.run as run
    from serve_minimal.run import ENV_API_KEY

    if env_key is None:
        monkeypatch.delenv(ENV_API_KEY, raising=False)
    else:
        monkeypatch.setenv(ENV_API_KEY, env_key)
    monkeypatch.setattr(run, "app_from_args", lambda args: object())
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    with caplog.at_level("WARNING", logger="serve_minimal"):
        assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 0
    assert ("without an API key" in caplog.text) == (env_key is None)


def variant_with_manifest(gguf_dir, tmp_path):
    """A copy of the tiny GGUF variant dir with a manifest whose hashes match it."""
    import shutil

    from invoker.files import describe_files
    from invoker.manifest import write_manifest

    variant = tmp_path / "gguf-F16"
    shutil.copytree(gguf_dir, variant)
    write_manifest(variant, {"format": "gguf", "variant": "F16", "source": {}, "calibration": {}, "tools": {},
                             "files": describe_files(variant), "eval": {}, "bench": {}, "verified": True, "gate": {}})
    return variant


def damage(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the last tensor: the file still loads
    path.write_bytes(bytes(data))


def test_eval_and_serve_name_a_gguf_that_no_longer_matches_its_manifest(tiny_f16_gguf, tmp_path, capsys, caplog):
    import argparse

    from serve_minimal.run import add_serve_arguments, app_from_args

    variant = variant_with_manifest(tiny_f16_gguf, tmp_path)
    assert main(["eval", str(variant), "--limit", "1", "--max-tokens", "2", "--json", "--verify"]) == 0
    gguf = variant / "tiny-F16.gguf"
    damage(gguf)
    assert main(["eval", str(variant), "--limit", "1", "--max-tokens", "2", "--json", "--verify"]) == 2
    assert f"{gguf}: sha256 differs from its manifest" in capsys.readouterr().err
    assert main(["serve", str(variant), "--verify"]) == 2
    assert f"{gguf}: sha256 differs from its manifest" in capsys.readouterr().err
    assert main(["eval", str(variant), "--limit", "1", "--max-tokens", "2", "--json"]) == 0  # without --verify: a warning
    assert f"warning: {gguf}: sha256 differs from its manifest" in capsys.readouterr().err
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    with caplog.at_level("WARNING", logger="serve_minimal"):
        app = app_from_args(parser.parse_args([str(gguf)]))  # the file itself, too
    assert f"{gguf}: sha256 differs from its manifest" in caplog.text
    assert TestClient(app).get("/health").json()["format"] == "gguf"


def test_lone_surrogates_never_reach_the_llama_cpp_runtime(tiny_f16_gguf):
    """llama.cpp's runtime raised UnicodeEncodeError on them: a 500. Now a 400 naming the field."""
    import argparse

    from serve_minimal.run import add_serve_arguments, app_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    client = TestClient(app_from_args(parser.parse_args([str(tiny_f16_gguf)])), raise_server_exceptions=False)
    tool = {"type": "function", "function": {"name": "f", "description": "x\ud800", "parameters": {"type": "object"}}}
    for body, param in (({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
                        ({"messages": [{"role": "user", "content": "hi"}], "tools": [tool]}, "tools[0].function.description")):
        response = client.post("/v1/chat/completions", content=json.dumps({"model": "m", "max_tokens": 2, **body}),
                               headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    ok = client.post("/v1/chat/completions", json={"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200
