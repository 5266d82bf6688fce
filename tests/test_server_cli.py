"""``invoker-pack serve`` and the environment variables of the original server."""

from __future__ import annotations

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
