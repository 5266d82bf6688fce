import json

import pytest

from invoker.files import atomic_output_dir, describe_files, sha256_file
from invoker.manifest import ManifestError, read_manifest, sha256_weights, validate_manifest, write_manifest


def _manifest(**overrides):
    base = {
        "format": "gguf", "variant": "Q4_K_M", "source": {"model": "m", "sha256": "0" * 64},
        "calibration": {"spec": {}, "sha256": "1" * 64}, "tools": {"gguf": "0.19.0"},
        "files": {"model.gguf": {"sha256": "2" * 64, "bytes": 3}}, "eval": {}, "bench": {},
        "verified": False, "gate": {"threshold": 0.9, "reason": "not evaluated"},
    }
    return {**base, **overrides}


def test_atomic_output_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "variant"
    with atomic_output_dir(final) as tmp:
        (tmp / "a.txt").write_text("one")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(final) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("converter died")
    assert (final / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["variant"]


def test_describe_files_hashes_every_file_but_the_manifest(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    files = describe_files(tmp_path)
    assert list(files) == ["sub/x.json", "w.safetensors"]
    assert files["w.safetensors"] == {"sha256": sha256_file(tmp_path / "w.safetensors"), "bytes": 3}


def test_sha256_weights_changes_with_any_weight_file(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"1")
    (tmp_path / "config.json").write_text("{}")
    first = sha256_weights(tmp_path)
    (tmp_path / "config.json").write_text('{"x": 1}')
    assert sha256_weights(tmp_path) == first
    (tmp_path / "a.safetensors").write_bytes(b"2")
    assert sha256_weights(tmp_path) != first
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no weight files"):
        sha256_weights(tmp_path / "empty")


def test_manifest_roundtrip_and_contract_errors(tmp_path):
    write_manifest(tmp_path, _manifest())
    assert read_manifest(tmp_path)["variant"] == "Q4_K_M"
    assert validate_manifest(_manifest(format="onnx")) == ["format: 'onnx' is not one of fp16, gguf, gptq, awq, ct"]
    broken = _manifest()
    del broken["gate"]
    with pytest.raises(ManifestError, match="gate: missing"):
        write_manifest(tmp_path, broken)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(ManifestError, match=r"manifest.json: not valid JSON \(line 1"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "missing")
    assert json.loads(json.dumps(_manifest()))  # plain JSON
