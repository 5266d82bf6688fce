"""``invoker-pack publish``: dry-run bundle offline, and the upload path against a local Hub stub (tests/hub_stub.py)."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from pathlib import Path

import pytest
from hub_stub import HubStub, make_release

from invoker.files import sha256_file
from pipelines.cli import main
from pipelines.publish import PublishError, publish

TOKEN = "hf_stubTOKEN0123456789secretXYZ"
SOURCE = Path(__file__).resolve().parents[1] / "models" / "tiny-invoker"  # its card carries the license
GGUF, GPTQ, AWQ = "test/tiny-invoker-GGUF", "test/tiny-invoker-GPTQ", "test/tiny-invoker-AWQ"


@pytest.fixture
def out_dir(tmp_path):
    return make_release(tmp_path / "out", source_dir=SOURCE)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("publish tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the stub speaks LFS basic only
    with HubStub(token=TOKEN) as stub:
        yield stub


def run_publish(out_dir, stub, **kwargs):
    lines = []
    result = publish(out_dir=out_dir, namespace="test", endpoint=stub.endpoint, log=lines.append,
                     warn=lines.append, **kwargs)
    return result, lines


def commit_posts(stub):
    return [path for method, path in stub.requests if method == "POST" and "/commit/" in path]


def test_dry_run_writes_exactly_one_folder_per_repo_without_network(out_dir, tmp_path, no_network, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    dest = tmp_path / "release"
    assert main(["publish", str(out_dir), "--namespace", "test", "--dry-run", str(dest)]) == 0
    release = json.loads((dest / "release.json").read_text())
    assert sorted(p.name for p in dest.iterdir()) == ["release.json", "tiny-invoker-GGUF", "tiny-invoker-GPTQ"]
    assert [r["repo_id"] for r in release["repos"]] == [GGUF, GPTQ]  # the unverified AWQ is not there
    for entry in release["repos"]:
        folder = dest / entry["folder"]
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert on_disk == sorted(entry["files"])
        for name, described in entry["files"].items():
            assert sha256_file(folder / name) == described["sha256"]
            assert (folder / name).stat().st_size == described["bytes"]
    gguf = release["repos"][0]["files"]
    assert {"tiny-invoker-Q4_K_M.gguf", "tiny-invoker-Q8_0.gguf", "Modelfile.Q4_K_M", "Modelfile.Q8_0",
            "imatrix-Q4_K_M.gguf", "README.md", "accuracy_vs_size.png", "manifests/gguf-Q4_K_M.json"} <= set(gguf)
    manifest = json.loads((out_dir / "gguf-Q4_K_M" / "manifest.json").read_text())
    assert gguf["tiny-invoker-Q4_K_M.gguf"]["sha256"] == manifest["files"]["tiny-invoker-Q4_K_M.gguf"]["sha256"]
    assert "FROM ./tiny-invoker-Q8_0.gguf" in (dest / "tiny-invoker-GGUF" / "Modelfile.Q8_0").read_text()


def test_no_verified_variant_is_refused_with_the_reasons_before_any_network(out_dir, no_network, capsys):
    for manifest_path in out_dir.glob("*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        if manifest["format"] != "fp16":
            manifest["verified"] = False
            manifest_path.write_text(json.dumps(manifest))
    assert main(["publish", str(out_dir), "--namespace", "test"]) == 2
    err = capsys.readouterr().err
    assert "no verified variant to publish" in err
    assert "awq-4bit-g128: call_accuracy 0.010 < 0.90 x fp16 0.040" in err


def test_upload_sends_every_bundle_file_once_and_a_rerun_commits_nothing(out_dir, hub, tmp_path):
    result, lines = run_publish(out_dir, hub, private=True, description="release notes")
    assert set(hub.repos) == {GGUF, GPTQ}
    assert "refused awq-4bit-g128 (gate: call_accuracy 0.010 < 0.90 x fp16 0.040)" in lines
    assert "left out gguf-Q4_K_M-noimatrix: a comparison variant (the recipe's compare_only), not for release" in lines
    assert all(repo["private"] for repo in hub.repos.values())
    for entry in result["repos"]:
        (commit,) = hub.commits(entry["repo_id"])
        assert commit["files"] == sorted(entry["files"])
        assert commit["summary"].startswith("invoker-pack 0.1.0: ")
        assert f"@sha256:{'a' * 12}" in commit["summary"]  # the source's weights hash: a local source has no revision
        assert commit["description"] == "release notes"
    assert hub.file_bytes(GGUF, "tiny-invoker-Q4_K_M.gguf") == (out_dir / "gguf-Q4_K_M" / "tiny-invoker-Q4_K_M.gguf").read_bytes()
    assert hub.repos[GGUF]["files"]["tiny-invoker-Q4_K_M.gguf"]["lfs"]  # went through the LFS batch + PUT
    assert hub.repos[GGUF]["files"]["Modelfile.Q4_K_M"]["content"] == (out_dir / "gguf-Q4_K_M" / "Modelfile").read_bytes()
    assert not any(p.name.startswith(".publish-") for p in out_dir.iterdir())  # the staging bundle is gone

    before = len(hub.requests)
    again, lines = run_publish(out_dir, hub)
    assert [r["status"] for r in again["results"]] == ["unchanged", "unchanged"]
    assert all(len(hub.commits(repo)) == 1 for repo in (GGUF, GPTQ))
    assert len(commit_posts(hub)) == 2  # still exactly the two first commits
    assert not [p for m, p in hub.requests[before:] if "/preupload/" in p or "lfs" in p]


def test_a_changed_manifest_is_uploaded_alone_with_its_new_card(out_dir, hub):
    run_publish(out_dir, hub)
    assert all("visibility" not in payload for payload in hub.create_payloads)  # the namespace's default applies
    card_sha = hub.repos[GPTQ]["files"]["README.md"]["content"]
    manifest_path = out_dir / "gptq-4bit-g128" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["bench"]["cpu"]["decode_tok_s"] = 46.5  # re-measured
    manifest_path.write_text(json.dumps(manifest))
    result, _ = run_publish(out_dir, hub)
    assert [r["status"] for r in result["results"]] == ["unchanged", "committed"]
    assert hub.commits(GPTQ)[-1]["files"] == ["README.md", "manifests/gptq-4bit-g128.json"]
    assert hub.repos[GPTQ]["files"]["README.md"]["content"] != card_sha
    assert b"| 46.5 (cpu: AMD EPYC 7B13, 2 threads) |" in hub.repos[GPTQ]["files"]["README.md"]["content"]


def test_a_tampered_file_aborts_naming_it_and_sends_nothing(out_dir, hub):
    weights = out_dir / "gguf-Q8_0" / "tiny-invoker-Q8_0.gguf"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")  # same size, different bytes
    with pytest.raises(PublishError, match=r"tiny-invoker-Q8_0\.gguf: changed since its manifest was written"):
        run_publish(out_dir, hub)
    assert hub.requests == []
    assert not any(p.name.startswith(".publish-") for p in out_dir.iterdir())


def test_the_token_is_used_but_never_printed_logged_or_written(out_dir, hub, tmp_path, capsys, caplog):
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_debug()
    try:
        with caplog.at_level(logging.DEBUG):
            run_publish(out_dir, hub)
            assert main(["publish", str(out_dir), "--namespace", "test", "--dry-run", str(tmp_path / "dry")]) == 0
    finally:
        hf_logging.set_verbosity_warning()
    assert hub.commits(GGUF)  # the stub only answers with the right bearer token
    captured = capsys.readouterr()
    assert caplog.records  # huggingface_hub's debug logging was on and captured
    assert TOKEN not in caplog.text and TOKEN not in captured.out and TOKEN not in captured.err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 20
    assert not [p for p in written if TOKEN.encode() in p.read_bytes()]


def test_network_failure_mid_upload_is_a_clear_error_and_a_rerun_completes(out_dir, hub, monkeypatch):
    hub.fail_next_commit_to = GPTQ  # the GGUF repo commits, then the connection drops on the GPTQ commit
    with pytest.raises(PublishError) as failure:
        run_publish(out_dir, hub)
    message = str(failure.value)
    assert message.startswith(f"{GPTQ}: the Hub request failed")
    assert "this repo is not published" in message and f"Finished before: {GGUF} (committed)" in message
    assert "Rerun the same command to complete" in message
    assert hub.commits(GPTQ) == []

    result, lines = run_publish(out_dir, hub)
    assert [r["status"] for r in result["results"]] == ["unchanged", "committed"]
    assert len(hub.commits(GGUF)) == 1 and len(hub.commits(GPTQ)) == 1
    assert any(line.startswith(f"{GPTQ}: committed 10 of 10 files") for line in lines)  # 4 of them the vLLM plugin


def test_no_token_is_a_one_line_error_before_any_network(out_dir, no_network, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login either
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    assert main(["publish", str(out_dir), "--namespace", "test"]) == 2
    assert "no Hugging Face token: set HF_TOKEN or run `hf auth login`" in capsys.readouterr().err


def test_a_variant_no_longer_verified_leaves_its_files_with_a_warning(out_dir, hub):
    run_publish(out_dir, hub)
    manifest_path = out_dir / "gguf-Q8_0" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(verified=False, gate={"thresholds": {}, "reason": "call_accuracy 0.02 < 0.98 x fp16 0.04"})
    manifest_path.write_text(json.dumps(manifest))
    result, lines = run_publish(out_dir, hub)
    assert "refused gguf-Q8_0 (gate: call_accuracy 0.02 < 0.98 x fp16 0.04)" in lines
    assert (f"{GGUF}: left in place, not part of this release: Modelfile.Q8_0, manifests/gguf-Q8_0.json, "
            "tiny-invoker-Q8_0.gguf") in lines
    assert hub.commits(GGUF)[-1]["files"] == ["README.md"]  # the card no longer lists Q8_0
    assert b"Q8_0" not in hub.repos[GGUF]["files"]["README.md"]["content"].split(b"## Prompt format")[0]


def test_repo_names_and_base_model_of_a_hub_source(out_dir, tmp_path, no_network):
    actorder = out_dir / "gptq-4bit-g128-actorder"
    shutil.copytree(out_dir / "gptq-4bit-g128", actorder)
    for manifest_path in out_dir.glob("*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        manifest["source"]["model"] = "jeffrey-fong/invoker-13b"
        manifest["source"]["revision"] = "0123abc"
        if manifest_path.parent == actorder:
            manifest["variant"] = "4bit-g128-actorder"
        manifest_path.write_text(json.dumps(manifest))
    result = publish(out_dir=out_dir, namespace="org", dry_run=tmp_path / "rel", license_id="llama2",
                     log=lambda _: None, warn=lambda _: None)
    assert [r["repo_id"] for r in result["repos"]] == [
        "org/tiny-invoker-GGUF", "org/tiny-invoker-GPTQ", "org/tiny-invoker-GPTQ-4bit-g128-actorder"]
    assert result["base_model"] == "jeffrey-fong/invoker-13b" and result["license"] == "llama2"
    assert result["repos"][2]["commit_message"] == (
        "invoker-pack 0.1.0: 4bit-g128-actorder of jeffrey-fong/invoker-13b@0123abc")


def test_a_second_dry_run_into_the_same_dir_leaves_only_the_new_release(out_dir, tmp_path, no_network):
    dest = tmp_path / "release"
    publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    manifest_path = out_dir / "gptq-4bit-g128" / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace('"verified": true', '"verified": false'))
    publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    assert sorted(p.name for p in dest.iterdir()) == ["release.json", "tiny-invoker-GGUF"]


def test_a_variants_own_readme_is_replaced_by_the_card_and_left_untouched(out_dir, tmp_path, no_network):
    from invoker.files import describe_files
    from invoker.manifest import read_manifest, write_manifest

    variant = out_dir / "gptq-4bit-g128"
    (variant / "README.md").write_text("the source's card\n")
    manifest = read_manifest(variant)
    manifest["files"] = describe_files(variant)
    write_manifest(variant, manifest)
    publish(out_dir=out_dir, namespace="test", dry_run=tmp_path / "rel", log=lambda _: None, warn=lambda _: None)
    assert (variant / "README.md").read_text() == "the source's card\n"
    assert (tmp_path / "rel" / "tiny-invoker-GPTQ" / "README.md").read_text().startswith("---\nbase_model:")


# --- publish stays inside its folders (issue 12) ------------------------------------------------


def rewrite_manifest(variant: Path, change) -> None:
    path = variant / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["../../secretdir/token.txt", "/etc/hostname", "sub/../../x", "./Modelfile", "a//b", "c:\\x"])
def test_a_manifest_file_name_outside_the_variant_dir_is_refused_naming_manifest_and_key(out_dir, tmp_path, no_network,
                                                                                         capsys, name):
    secret = tmp_path / "secretdir" / "token.txt"
    secret.parent.mkdir()
    secret.write_text("hf_secret\n")
    variant = out_dir / "gguf-Q8_0"
    rewrite_manifest(variant, lambda m: m["files"].update({name: {"sha256": sha256_file(secret), "bytes": secret.stat().st_size}}))
    dest = tmp_path / "release"
    assert main(["publish", str(out_dir), "--namespace", "test", "--dry-run", str(dest)]) == 2
    err = capsys.readouterr().err
    assert f"{variant / 'manifest.json'}: files.{json.dumps(name)}: must be a plain relative file name" in err
    assert not dest.exists()
    assert not [p for p in tmp_path.rglob("token.txt") if p != secret]


def test_a_symlink_out_of_the_variant_dir_is_refused(out_dir, tmp_path, no_network):
    secret = tmp_path / "token.txt"
    secret.write_text("hf_secret\n")
    variant = out_dir / "gguf-Q8_0"
    (variant / "notes.txt").symlink_to(secret)
    rewrite_manifest(variant, lambda m: m["files"].update({"notes.txt": {"sha256": sha256_file(secret), "bytes": secret.stat().st_size}}))
    with pytest.raises(PublishError, match=r"files\.\"notes\.txt\": resolves outside"):
        publish(out_dir=out_dir, namespace="test", dry_run=tmp_path / "rel", log=lambda _: None, warn=lambda _: None)
    assert not (tmp_path / "rel").exists()


@pytest.mark.parametrize("folder", ["..", ".", "", "../sibling", "/tmp", "a/b", ".publish-x"])
def test_a_hostile_release_json_is_refused_before_anything_is_deleted(out_dir, tmp_path, no_network, folder):
    root = tmp_path / "root"
    dest, sibling = root / "dest", root / "sibling"
    sibling.mkdir(parents=True)
    (sibling / "sentinel").write_text("keep me")
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me too")
    (dest / "release.json").write_text(json.dumps({"repos": [{"folder": folder, "files": {}}]}))
    with pytest.raises(PublishError, match=r"release\.json: repos\[0\]\.folder: .* not touching anything"):
        publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    assert (sibling / "sentinel").read_text() == "keep me" and (dest / "mine.txt").read_text() == "keep me too"
    assert sorted(p.name for p in dest.iterdir()) == ["mine.txt", "release.json"]


def test_folders_publish_did_not_write_are_never_deleted_or_overwritten(out_dir, tmp_path, no_network):
    dest = tmp_path / "release"
    (dest / "tiny-invoker-GGUF").mkdir(parents=True)
    (dest / "tiny-invoker-GGUF" / "my-notes.md").write_text("mine")
    with pytest.raises(PublishError, match="no .*release.json of an earlier publish lists it; not overwriting it"):
        publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    assert (dest / "tiny-invoker-GGUF" / "my-notes.md").read_text() == "mine"
    assert sorted(p.name for p in dest.iterdir()) == ["tiny-invoker-GGUF"]  # no staging dir, no release.json left
    (dest / "tiny-invoker-GGUF" / "my-notes.md").unlink()
    (dest / "tiny-invoker-GGUF").rmdir()
    publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    (dest / "tiny-invoker-GGUF" / "added-by-hand.txt").write_text("mine")  # inside an earlier bundle's folder
    with pytest.raises(PublishError, match="holds files the earlier release did not write .*added-by-hand.txt"):
        publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    assert (dest / "tiny-invoker-GGUF" / "added-by-hand.txt").read_text() == "mine"
    assert (dest / "tiny-invoker-GGUF" / "tiny-invoker-Q8_0.gguf").is_file()


def test_manifest_sizes_must_be_integers(out_dir, tmp_path, no_network, capsys):
    variant = out_dir / "gguf-Q8_0"
    rewrite_manifest(variant, lambda m: m["files"]["tiny-invoker-Q8_0.gguf"].update(bytes="5959744"))
    assert main(["publish", str(out_dir), "--namespace", "test", "--dry-run", str(tmp_path / "rel")]) == 2
    err = capsys.readouterr().err
    assert f"{variant / 'manifest.json'}: files.tiny-invoker-Q8_0.gguf.bytes: must be a non-negative integer, got '5959744'" in err
    assert "Traceback" not in err


def test_the_dry_run_bundle_is_a_copy_so_damage_to_it_does_not_reach_the_artifacts(out_dir, tmp_path, no_network):
    dest = tmp_path / "release"
    publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    artifact = out_dir / "gguf-Q4_K_M" / "tiny-invoker-Q4_K_M.gguf"
    bundled = dest / "tiny-invoker-GGUF" / "tiny-invoker-Q4_K_M.gguf"
    before = artifact.read_bytes()
    assert bundled.read_bytes() == before and artifact.stat().st_nlink == 1
    with bundled.open("r+b") as handle:
        handle.write(b"XXXX")
    assert artifact.read_bytes() == before


def test_a_failed_publish_leaves_no_bundle_behind(out_dir, tmp_path, no_network):
    weights = out_dir / "gptq-4bit-g128" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")  # the GPTQ repo, built second, fails its check
    dest = tmp_path / "new" / "release"
    with pytest.raises(PublishError, match="changed since its manifest was written"):
        publish(out_dir=out_dir, namespace="test", dry_run=dest, log=lambda _: None, warn=lambda _: None)
    assert not (tmp_path / "new").exists()  # the folders this run made, gone again
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(PublishError):
        publish(out_dir=out_dir, namespace="test", dry_run=existing, log=lambda _: None, warn=lambda _: None)
    assert list(existing.iterdir()) == []


@pytest.mark.parametrize("variant", ["x/../../../../../../tmp/somewhere/ESCAPED", "Q8_0/x", "..", ".hidden", "", None, 8,
                                     ["Q8_0"], {"a": 1}, "a b"])
def test_a_variant_name_that_is_not_one_plain_word_is_refused_before_anything_is_written(out_dir, tmp_path, no_network,
                                                                                         capsys, variant):
    target = tmp_path / "escape"
    manifest_path = out_dir / "gguf-Q8_0" / "manifest.json"
    rewrite_manifest(out_dir / "gguf-Q8_0", lambda m: m.update(variant=variant))
    dest = tmp_path / "rel"
    assert main(["publish", str(out_dir), "--namespace", "test", "--dry-run", str(dest)]) == 2
    err = capsys.readouterr().err
    assert f"{manifest_path}: variant: must be a name of letters, digits" in err and "Traceback" not in err
    assert not dest.exists() and not target.exists() and not (Path("/tmp/somewhere") / "ESCAPED").exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["gate"].update(suite=["synthetic"]), "gate.suite: must be a suite name"),
    (lambda m: m["source"].update(parameters="135M"), "source.parameters: must be a positive integer"),
    (lambda m: m["source"].update(parameters=-3), "source.parameters: must be a positive integer"),
])
def test_manifest_fields_of_the_wrong_type_are_one_clean_error(out_dir, tmp_path, no_network, capsys, change, message):
    rewrite_manifest(out_dir / "gguf-Q8_0", change)
    assert main(["publish", str(out_dir), "--namespace", "test", "--dry-run", str(tmp_path / "rel")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_out_dir_whose_name_is_no_valid_repo_name_is_refused_naming_the_dir(out_dir, tmp_path, no_network, capsys):
    spaced = out_dir.parent / "tiny invoker"
    out_dir.rename(spaced)
    assert main(["publish", str(spaced), "--namespace", "test", "--dry-run", str(tmp_path / "rel")]) == 2
    err = capsys.readouterr().err
    assert "'test/tiny invoker-GGUF', not a valid Hub repo id" in err and "rename the dir" in err
    assert not (tmp_path / "rel").exists()
