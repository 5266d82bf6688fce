"""``invoker-pack publish``: verified variants → one Hub model repo per format, with a generated card.

Reads nothing but the pipeline's output dir (``out/<model>/``): each variant's ``manifest.json``
(the contract), plus ``report.json`` and ``accuracy_vs_size.png`` when present. Steps:

1. ``pipelines.release.load_release``: every variant dir with a manifest; unverified ones are refused
   with the gate's reason, comparison variants (the recipe's ``compare_only``) left out.
2. ``pipelines.release.plan_repos``: one repo per format as its registry entry says — ``<ns>/<model>-GPTQ``,
   ``-AWQ`` (variant ``4bit-g128``; any other variant gets ``-GPTQ-<variant>``) and ``<ns>/<model>-GGUF``
   with every GGUF file, one Modelfile per quant.
3. ``write_bundle``: the exact folders to upload (files copied — hard-linked only in the upload's own
   temporary bundle —, card, plot, manifests) and ``release.json``; every variant file's sha256 checked
   against its manifest on the way. It deletes nothing it did not write (docs/PUBLISH.md, "Safety rules").
4. ``upload_bundle`` (not with ``--dry-run``): per repo ``create_repo(exist_ok=True)``, compare with
   the remote's files (LFS sha256 / git blob id), re-check every sha256, one ``create_commit`` with
   only the changed files — none when nothing changed — then check the remote holds exactly our hashes.

See docs/PUBLISH.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from invoker.files import sha256_file, write_json_atomic, write_text_atomic
from invoker.manifest import file_name_problem
from pipelines.card import render_card
from pipelines.release import PLOT_NAME, PublishError, Release, RepoFile, RepoPlan, load_release, pipeline_version, plan_repos

RELEASE_NAME = "release.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

__all__ = ["PublishError", "publish"]


# --- the bundle: exactly what would be uploaded -------------------------------------------------


def write_bundle(*, release: Release, plans: list[RepoPlan], dest: str | Path, base_model: str, license_id: str,
                 hard_link: bool = False) -> dict:
    """Write one folder per repo into ``dest`` plus ``release.json``; return it.

    Files are copied (``hard_link``: hard-linked, for the upload's own temporary bundle that nothing else
    sees). The folders are built in a dot-named staging dir inside ``dest`` and moved into place only when
    all are complete; a failure leaves ``dest`` as it was. What an earlier bundle in ``dest`` wrote (its
    ``release.json``, validated first) is replaced only when it still holds exactly the files that
    ``release.json`` lists; nothing else in ``dest`` is ever deleted or overwritten."""
    dest = Path(dest)
    created = [path for path in (dest, *dest.parents) if not path.exists()]  # innermost first
    dest.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        previous = previous_bundle(dest)
        names = [plan.repo_id.split("/")[1] for plan in plans]
        for name in names:
            if (dest / name).exists() or (dest / name).is_symlink():
                if name not in previous:
                    raise PublishError(f"{dest / name}: already exists and no {dest / RELEASE_NAME} of an earlier "
                                       "publish lists it; not overwriting it (move it, or pick another --dry-run DIR)")
        for name, files in previous.items():
            check_previous_folder(dest / name, files=files)
        staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=dest))
        entries = []
        for plan, name in zip(plans, names):
            folder = staging / name
            folder.mkdir()
            check_files(files=plan.files)
            for item in plan.files:
                place_file(source=item.source, target=folder / item.path_in_repo, hard_link=hard_link)
            if release.plot is not None:
                shutil.copyfile(release.plot, folder / PLOT_NAME)
            card = render_card(release=release, plan=plan, plans=plans, base_model=base_model, license_id=license_id)
            write_text_atomic(folder / "README.md", card)
            entries.append({
                "repo_id": plan.repo_id,
                "folder": name,
                "format": plan.format,
                "variants": [v.name for v in plan.variants],
                "commit_message": commit_message(release=release, plan=plan),
                "files": describe_folder(folder),
            })
        release_json = {"model": release.model, "base_model": base_model, "license": license_id,
                        "pipeline": f"invoker-pack {pipeline_version()}", "repos": entries}
        for name, files in previous.items():
            remove_previous_folder(dest / name, files=files)
        for name in names:
            (staging / name).rename(dest / name)
        write_json_atomic(dest / RELEASE_NAME, release_json)  # replaces the earlier one
        return release_json
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # this run's own staging dir
        for path in created:  # made by this run and left empty by a failure
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def previous_bundle(dest: Path) -> dict[str, dict]:
    """``{folder: files}`` an earlier bundle's ``release.json`` in ``dest`` lists, validated before anything
    acts on it: folders are plain names in ``dest``, files plain relative names with a size."""
    path = dest / RELEASE_NAME
    if not path.exists() and not path.is_symlink():
        return {}
    if path.is_symlink() or not path.is_file():
        raise PublishError(f"{path}: not a regular file; not touching anything in {dest}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PublishError(f"{path}: not readable JSON ({err}); not touching anything in {dest}") from None
    repos = data.get("repos") if isinstance(data, dict) else None
    if not isinstance(repos, list):
        raise PublishError(f"{path}: repos: must be a list; not touching anything in {dest}")
    folders: dict[str, dict] = {}
    for index, entry in enumerate(repos):
        where = f"{path}: repos[{index}]"
        folder = entry.get("folder") if isinstance(entry, dict) else None
        if not isinstance(folder, str) or not FOLDER_NAME.match(folder):
            raise PublishError(f"{where}.folder: {folder!r} is not a folder name publish writes (a plain name "
                               f"inside {dest}); not touching anything in {dest}")
        files = entry.get("files")
        if not isinstance(files, dict):
            raise PublishError(f"{where}.files: must be an object; not touching anything in {dest}")
        for name, described in files.items():
            problem = file_name_problem(name)
            size = described.get("bytes") if isinstance(described, dict) else None
            if problem or isinstance(size, bool) or not isinstance(size, int):
                raise PublishError(f"{where}.files.{json.dumps(name)}: {problem or 'needs an integer bytes'}; "
                                   f"not touching anything in {dest}")
        if folder in folders:
            raise PublishError(f"{where}.folder: {folder!r} is listed twice; not touching anything in {dest}")
        folders[folder] = files
    return folders


def check_previous_folder(folder: Path, *, files: dict[str, dict]) -> None:
    """An earlier bundle's folder may be replaced only if it holds exactly what its release.json lists
    (names and sizes, no symlinks, nothing added): otherwise it is not publish's to delete."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise PublishError(f"{folder}: not a folder an earlier publish wrote (a symlink or a file); not deleting it")
    found, dirs = {}, set()
    for root, subdirs, names in os.walk(folder):
        for name in subdirs + names:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                raise PublishError(f"{path}: a symlink an earlier publish did not write; not deleting {folder}")
            if name in subdirs:
                dirs.add(relative)
            else:
                found[relative] = path.stat().st_size
    expected_dirs = {"/".join(name.split("/")[:depth]) for name in files for depth in range(1, name.count("/") + 1)}
    extra = sorted(set(found) - set(files)) + sorted(dirs - expected_dirs)
    changed = sorted(name for name in set(found) & set(files) if found[name] != files[name]["bytes"])
    if extra or changed:
        what = (f"holds files the earlier release did not write ({', '.join(extra[:5])})" if extra
                else f"has files changed since the earlier release wrote them ({', '.join(changed[:5])})")
        raise PublishError(f"{folder}: {what}; not deleting it — move it away or pick another --dry-run DIR")


def remove_previous_folder(folder: Path, *, files: dict[str, dict]) -> None:
    """Delete exactly the files an earlier bundle listed (checked by ``check_previous_folder``), then the
    folders they leave empty."""
    if not folder.is_dir():
        return
    for name in files:
        (folder / name).unlink(missing_ok=True)
    for root, _, _ in sorted(os.walk(folder), key=lambda walked: -len(walked[0])):
        Path(root).rmdir()


def check_files(*, files: list[RepoFile]) -> None:
    """Every file still has the size and sha256 its manifest recorded; the first that does not aborts, named."""
    from tqdm import tqdm

    with tqdm(total=sum(item.bytes for item in files), unit="B", unit_scale=True, desc="sha256 check",
              leave=False, file=sys.stderr) as bar:
        for item in files:
            if not item.source.is_file():
                raise PublishError(f"{item.source}: listed in its manifest but missing; not publishing")
            if item.source.stat().st_size != item.bytes or sha256_file(item.source) != item.sha256:
                raise PublishError(f"{item.source}: changed since its manifest was written (sha256 differs); "
                                   "not publishing — rerun the pipeline to rebuild and re-verify it")
            bar.update(item.bytes)


def place_file(*, source: Path, target: Path, hard_link: bool) -> None:
    """Copy ``source`` to ``target`` — or hard-link it (``hard_link``; copied across file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if hard_link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


def describe_folder(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def default_base_model(*, release: Release, namespace: str) -> str:
    """The source's Hub id (a Hub source has a pinned ``revision``); else ``<namespace>/<model>`` (``--base-model``)."""
    source = release.variants[0].manifest.source
    model = str(source.get("model") or "")
    if source.get("revision") and HUB_ID.match(model):
        return model
    return f"{namespace}/{release.model}"


def source_license(*, release: Release) -> str:
    """The license in the source model's card: its local dir, or the Hub snapshot in the local cache (no network)."""
    from huggingface_hub import ModelCard, try_to_load_from_cache

    source = release.variants[0].manifest.source
    model = str(source.get("model") or "")
    if source.get("revision") and HUB_ID.match(model):
        cached = try_to_load_from_cache(model, "README.md", revision=source["revision"])
        readme = Path(cached) if isinstance(cached, str) else Path(model) / "README.md"
    else:
        readme = Path(model) / "README.md"
    license_id = ModelCard.load(readme).data.license if readme.is_file() else None
    if not license_id:
        raise PublishError(f"no license found in {readme} (the source's card); pass --license ID")
    return license_id


def commit_message(*, release: Release, plan: RepoPlan) -> str:
    """Names the pipeline version and the source revision (or, for a local source, its weights' sha256)."""
    source = plan.variants[0].manifest.source
    revision = source.get("revision") or f"sha256:{str(source.get('sha256', ''))[:12]}"
    variants = ", ".join(v.manifest.variant for v in plan.variants)
    return f"invoker-pack {pipeline_version()}: {variants} of {source.get('model')}@{revision}"


# --- upload -------------------------------------------------------------------------------------


def hub_token() -> str:
    """The token from the standard places (``HF_TOKEN``, then ``hf auth login``'s file); never shown anywhere."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def upload_bundle(*, bundle_dir: Path, release_json: dict, plans: list[RepoPlan], private: bool,
                  description: str | None, endpoint: str | None, token: str, log, warn) -> list[dict]:
    """Create/refresh each repo with one commit of its changed files; a repo with nothing changed gets none."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    done: list[dict] = []
    repo_id = None
    try:
        user = api.whoami()
        log(f"publishing as {user.get('name', '?')} to {api.endpoint}")
        for plan, entry in zip(plans, release_json["repos"], strict=True):
            repo_id = entry["repo_id"]
            done.append(upload_repo(api=api, folder=bundle_dir / entry["folder"], entry=entry, plan=plan,
                                    private=private, description=description, log=log, warn=warn))
    except PublishError:
        raise
    except (HfHubHTTPError, httpx2.HTTPError, OSError, RuntimeError) as err:  # huggingface_hub wraps LFS failures in RuntimeError
        finished = ", ".join(f"{d['repo_id']} ({d['status']})" for d in done) or "none"
        raise PublishError(f"{repo_id or api.endpoint}: the Hub request failed ({type(err).__name__}: "
                           f"{first_line(err)}); this repo is not published. Finished before: {finished}. "
                           "Rerun the same command to complete: it compares with the Hub's files and "
                           "commits only what is missing.") from None
    return done


def upload_repo(*, api, folder: Path, entry: dict, plan: RepoPlan, private: bool, description: str | None,
                log, warn) -> dict:
    from huggingface_hub import CommitOperationAdd

    repo_id = entry["repo_id"]
    api.create_repo(repo_id, private=True if private else None, exist_ok=True)  # None: the namespace's default
    remote = remote_files(api=api, repo_id=repo_id)
    stale = sorted(set(remote) - set(entry["files"]) - {".gitattributes"})
    if stale:
        warn(f"{repo_id}: left in place, not part of this release: {', '.join(stale)}")
    changed = changed_paths(remote=remote, folder=folder, files=entry["files"])
    if not changed:
        log(f"{repo_id}: up to date ({len(entry['files'])} files), no commit")
        return {"repo_id": repo_id, "status": "unchanged", "sent": []}
    check_files(files=plan.files)
    check_bundle(folder=folder, files=entry["files"])
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(folder / path)) for path in changed]
    info = api.create_commit(repo_id, operations=operations, commit_message=entry["commit_message"],
                             commit_description=description)
    mismatched = changed_paths(remote=remote_files(api=api, repo_id=repo_id), folder=folder, files=entry["files"])
    if mismatched:
        raise PublishError(f"{repo_id}: after the commit the Hub's copy of {', '.join(mismatched)} differs "
                           "from the bundle; check the repo")
    log(f"{repo_id}: committed {len(changed)} of {len(entry['files'])} files ({info.commit_url})")
    return {"repo_id": repo_id, "status": "committed", "sent": changed, "commit": info.oid}


def remote_files(*, api, repo_id: str) -> dict:
    """``{path: RepoFile}`` of the repo's main branch (each with its git blob id, and LFS sha256 if LFS)."""
    return {item.path: item for item in api.list_repo_tree(repo_id, recursive=True) if hasattr(item, "blob_id")}


def changed_paths(*, remote: dict, folder: Path, files: dict[str, dict]) -> list[str]:
    """Paths whose remote copy is missing or differs (LFS: sha256; regular files: the git blob id)."""
    changed = []
    for path, entry in sorted(files.items()):
        item = remote.get(path)
        if item is None:
            changed.append(path)
        elif item.lfs is not None:
            if item.lfs.sha256 != entry["sha256"]:
                changed.append(path)
        elif item.blob_id != git_blob_id(folder / path):
            changed.append(path)
    return changed


def check_bundle(*, folder: Path, files: dict[str, dict]) -> None:
    """The bundle's generated files (card, plot, manifests) still hash as written."""
    for path, entry in files.items():
        if sha256_file(folder / path) != entry["sha256"]:
            raise PublishError(f"{folder / path}: changed after the bundle was written; not publishing")


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def first_line(err: BaseException) -> str:
    """The error's first line, and its cause's (huggingface_hub wraps the real failure)."""
    lines = [(str(e).strip().splitlines() or [""])[0][:300] for e in (err, err.__cause__) if e is not None]
    return ": ".join(line for line in lines if line)


# --- the verb -----------------------------------------------------------------------------------


def publish(*, out_dir: str | Path, namespace: str, dry_run: str | Path | None = None, private: bool = False,
            description: str | None = None, base_model: str | None = None, license_id: str | None = None,
            endpoint: str | None = None, log=print, warn=print) -> dict:
    """Publish the verified variants of ``out_dir`` (or, with ``dry_run``, write the bundle there only)."""
    release = load_release(out_dir)
    for name, reason in release.refused():
        warn(f"refused {name} (gate: {reason})")
    for name in release.left_out():
        warn(f"left out {name}: a comparison variant (the recipe's compare_only), not for release")
    plans = plan_repos(release=release, namespace=namespace)
    if base_model is None:
        base_model = default_base_model(release=release, namespace=namespace)
        if base_model == f"{namespace}/{release.model}":
            warn(f"base_model: the source is a local dir, so the cards name {base_model} (pass --base-model ID)")
    license_id = license_id or source_license(release=release)
    token = hub_token() if dry_run is None else None
    if dry_run is not None:
        release_json = write_bundle(release=release, plans=plans, dest=dry_run, base_model=base_model,
                                    license_id=license_id)
        for entry in release_json["repos"]:
            size = sum(f["bytes"] for f in entry["files"].values())
            log(f"{entry['repo_id']}: {len(entry['files'])} files, {size} bytes -> {Path(dry_run) / entry['folder']}")
        return {"dry_run": str(dry_run), **release_json}
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=release.out_dir))
    try:
        release_json = write_bundle(release=release, plans=plans, dest=staging, base_model=base_model,
                                    license_id=license_id, hard_link=True)
        results = upload_bundle(bundle_dir=staging, release_json=release_json, plans=plans, private=private,
                                description=description, endpoint=endpoint, token=token, log=log, warn=warn)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**release_json, "results": results}
