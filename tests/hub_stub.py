"""A local stand-in for the Hugging Face Hub (the endpoints ``HfApi`` 2.4.0 calls to publish), and a small release.

``HubStub`` is a threading ``http.server`` on a free loopback port. It speaks, as huggingface_hub's
source calls them: ``GET /api/whoami-v2``, ``POST /api/repos/create`` (409 when the repo exists),
``GET /api/models/<repo>/tree/<rev>`` (one page, files only), ``POST /api/validate-yaml``,
``POST /api/models/<repo>/preupload/<rev>`` (upload mode and remote oid per file),
the git-LFS **basic** transfer (``POST /<repo>.git/info/lfs/objects/batch``, ``PUT`` of the bytes,
``POST`` verify) and ``POST /api/models/<repo>/commit/<rev>`` (NDJSON: header, base64 ``file``,
``lfsFile``). Not covered: the Xet transfer huggingface_hub uses for LFS files when ``hf_xet`` is
installed (tests set ``HF_HUB_DISABLE_XET``), LFS multipart, branches, pull requests, deletions.

It keeps every repo's files and commits, checks the bearer token, the LFS bytes against their
sha256 and that committed LFS objects were uploaded, and can drop the connection of the next commit
(``fail_next_commit_to = repo_id``) to act out a network failure.

``make_release`` writes a small ``out/<model>/`` as the pipeline does: fp16, two verified GGUF
quants (Modelfile per quant, imatrix), a verified GPTQ, an unverified AWQ, report.json and the plot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".png")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStub:
    def __init__(self, *, token: str):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.create_payloads: list[dict] = []
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next_commit_to: str | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def commits(self, repo_id: str) -> list[dict]:
        return self.repos[repo_id]["commits"] if repo_id in self.repos else []

    def file_bytes(self, repo_id: str, path: str) -> bytes:
        entry = self.repos[repo_id]["files"][path]
        return self.lfs[entry["lfs"]] if entry["lfs"] else entry["content"]

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                stub._dispatch(self, "GET")

            def do_POST(self):
                stub._dispatch(self, "POST")

            def do_PUT(self):
                stub._dispatch(self, "PUT")

        return Handler

    # --- plumbing ----------------------------------------------------------------------------------

    def _dispatch(self, handler, method: str) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append((method, path))
        body = read_body(handler)
        if path.startswith("/lfs-upload/") and method == "PUT":
            return self._lfs_put(handler, path.rsplit("/", 1)[1], body)
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            return reply(handler, 401, {"error": "Invalid credentials in Authorization header"})
        routes = [
            ("GET", "/api/whoami-v2", self._whoami),
            ("POST", "/api/repos/create", self._create_repo),
            ("POST", "/api/validate-yaml", self._validate_yaml),
            ("POST", "/lfs-verify", self._lfs_verify),
        ]
        for route_method, route_path, action in routes:
            if method == route_method and path == route_path:
                return action(handler, body)
        if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            return self._lfs_batch(handler, path.removeprefix("/").removesuffix(".git/info/lfs/objects/batch"), body)
        if path.startswith("/api/models/"):
            parts = path.removeprefix("/api/models/").split("/")
            repo_id, verb = "/".join(parts[:2]), parts[2] if len(parts) > 2 else ""
            if repo_id not in self.repos:
                return reply(handler, 404, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
            actions = {("GET", "tree"): self._tree, ("POST", "preupload"): self._preupload,
                       ("POST", "commit"): self._commit}
            if (method, verb) in actions:
                return actions[(method, verb)](handler, repo_id, body)
        return reply(handler, 404, {"error": f"stub: no route {method} {path}"})

    # --- endpoints ---------------------------------------------------------------------------------

    def _whoami(self, handler, body):
        reply(handler, 200, {"type": "user", "name": "stub-user", "orgs": [], "auth": {"type": "access_token"}})

    def _create_repo(self, handler, body):
        payload = json.loads(body)
        self.create_payloads.append(payload)
        repo_id = f"{payload['organization']}/{payload['name']}"
        if repo_id in self.repos:
            return reply(handler, 409, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"})
        attributes = b"*.gguf filter=lfs diff=lfs merge=lfs -text\n"
        self.repos[repo_id] = {"private": payload.get("visibility") == "private", "commits": [],
                               "files": {".gitattributes": {"content": attributes, "lfs": None, "size": len(attributes)}}}
        reply(handler, 200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, handler, body):
        content = json.loads(body)["content"]
        block = content.split("---")[1] if content.startswith("---") else ""
        if not isinstance(yaml.safe_load(block), dict):
            return reply(handler, 400, {"errors": [{"message": "metadata must be a mapping"}]})
        reply(handler, 200, {"warnings": []})

    def _tree(self, handler, repo_id, body):
        files = self.repos[repo_id]["files"]
        reply(handler, 200, [self._file_entry(path, files[path]) for path in sorted(files)])

    def _file_entry(self, path: str, entry: dict) -> dict:
        if entry["lfs"]:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{entry['lfs']}\nsize {entry['size']}\n".encode()
            return {"type": "file", "path": path, "size": entry["size"], "oid": git_blob_id(pointer),
                    "lfs": {"oid": entry["lfs"], "size": entry["size"], "pointerSize": len(pointer)}}
        return {"type": "file", "path": path, "size": entry["size"], "oid": git_blob_id(entry["content"])}

    def _preupload(self, handler, repo_id, body):
        files = self.repos[repo_id]["files"]
        answer = []
        for item in json.loads(body)["files"]:
            lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] >= 10_000_000
            remote = files.get(item["path"])
            oid = None
            if remote is not None:
                oid = remote["lfs"] if remote["lfs"] else git_blob_id(remote["content"])
            answer.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                           "oid": oid})
        reply(handler, 200, {"files": answer})

    def _lfs_batch(self, handler, repo_id, body):
        objects = []
        for item in json.loads(body)["objects"]:
            entry = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.lfs:
                entry["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{item['oid']}"},
                                    "verify": {"href": f"{self.endpoint}/lfs-verify"}}
            objects.append(entry)
        reply(handler, 200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, handler, oid, body):
        if hashlib.sha256(body).hexdigest() != oid:
            return reply(handler, 400, {"error": "sha256 mismatch"})
        self.lfs[oid] = body
        reply(handler, 200, {})

    def _lfs_verify(self, handler, body):
        item = json.loads(body)
        ok = item["oid"] in self.lfs and len(self.lfs[item["oid"]]) == item["size"]
        reply(handler, 200 if ok else 404, {})

    def _commit(self, handler, repo_id, body):
        if self.fail_next_commit_to == repo_id:
            self.fail_next_commit_to = None
            handler.close_connection = True  # the connection drops: no answer at all
            return None
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        changes = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                content = base64.b64decode(value["content"])
                changes[value["path"]] = {"content": content, "lfs": None, "size": len(content)}
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return reply(handler, 400, {"error": f"LFS object {value['oid']} was never uploaded"})
                changes[value["path"]] = {"content": None, "lfs": value["oid"], "size": value["size"]}
            else:
                return reply(handler, 400, {"error": f"stub: unsupported commit operation {line['key']}"})
        repo = self.repos[repo_id]
        repo["files"].update(changes)
        oid = hashlib.sha1(json.dumps([repo_id, len(repo["commits"]), sorted(changes)]).encode()).hexdigest()
        repo["commits"].append({"oid": oid, "summary": header["summary"], "description": header.get("description", ""),
                                "files": sorted(changes)})
        reply(handler, 200, {"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid})


def read_body(handler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", ""):
        data = b""
        while True:
            size = int(handler.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                handler.rfile.readline()
                return data
            data += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def reply(handler, status: int, payload, headers: dict | None = None) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


# --- a small release, as the pipeline writes it ------------------------------------------------------


def png_bytes(width: int = 4, height: int = 3) -> bytes:
    """A real (tiny, grey) PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def make_release(root: Path, *, source_dir: Path, model: str = "tiny-invoker") -> Path:
    """Write ``root/<model>/`` with real small files and manifests whose hashes match them."""
    from convert.ollama import render_modelfile
    from invoker.files import describe_files
    from invoker.manifest import write_manifest

    out = root / model
    bench = {"cpu": {"decode_tok_s": 41.5, "prompt_tok_s": 900.0, "threads": 2,
                     "hardware": {"cpu": "AMD EPYC 7B13", "cpus_available": 2}}}
    calibration = {"spec": {"source": "synthetic", "n_samples": 16, "max_length": 512, "seed": 0,
                            "general_text": None, "general_text_fraction": 0.0},
                   "sha256": "c" * 64, "n_samples": 16, "n_tokens": 8000, "n_documents": 40}
    source = {"model": str(source_dir), "revision": None, "sha256": "a" * 64, "parameters": 2000}

    def variant(name: str, fmt: str, quant: str, files: dict[str, bytes], *, verified: bool, accuracy: float,
                calib: dict, reason: str, release: bool | None = True) -> None:
        path = out / name
        path.mkdir(parents=True)
        for file_name, data in files.items():
            (path / file_name).write_bytes(data)
        write_manifest(path, {
            "format": fmt, "variant": quant, "source": source, "calibration": calib,
            "tools": {"invoker-pack": "0.1.0", "llama-cpp-python": "0.3.36"},
            "files": describe_files(path),
            "eval": {"synthetic": {"n": 60, "call_accuracy": accuracy, "name_accuracy": 0.5, "json_valid_rate": 0.98}},
            "bench": bench, "verified": verified, "conversion": {"quantization": {"type": quant, "method": fmt}},
            "gate": {"suite": "synthetic", "thresholds": {"call_accuracy_ratio": 0.9, "json_valid_rate": 0.9},
                     "reason": reason},
            **({"release": release} if release is not None else {}),
        })

    config = json.dumps({"architectures": ["LlamaForCausalLM"], "quantization_config": {"quant_method": "gptq", "bits": 4}})
    variant("fp16", "fp16", "fp16", {"model.safetensors": b"\x01" * 4000, "config.json": b"{}"}, verified=True,
            accuracy=0.040, calib={}, reason="the baseline", release=False)
    variant("gguf-Q4_K_M", "gguf", "Q4_K_M", {
        f"{model}-Q4_K_M.gguf": b"GGUF" + bytes(range(256)) * 6,
        "imatrix.gguf": b"GGUF" + b"\x07" * 300,
        "Modelfile": render_modelfile(gguf_name=f"{model}-Q4_K_M.gguf", context_length=2048).encode(),
    }, verified=True, accuracy=0.038, calib=calibration, reason="call_accuracy 0.038 >= 0.90 x fp16 0.040")
    variant("gguf-Q4_K_M-noimatrix", "gguf", "Q4_K_M-noimatrix", {  # the ablation: verified, but not for release
        f"{model}-Q4_K_M-noimatrix.gguf": b"GGUF" + bytes(range(255, -1, -1)) * 6,
        "Modelfile": render_modelfile(gguf_name=f"{model}-Q4_K_M-noimatrix.gguf", context_length=2048).encode(),
    }, verified=True, accuracy=0.036, calib={}, reason="call_accuracy 0.036 >= 0.90 x fp16 0.040", release=False)
    variant("gguf-Q8_0", "gguf", "Q8_0", {
        f"{model}-Q8_0.gguf": b"GGUF" + bytes(range(256)) * 9,
        "Modelfile": render_modelfile(gguf_name=f"{model}-Q8_0.gguf", context_length=2048).encode(),
    }, verified=True, accuracy=0.040, calib={}, reason="call_accuracy 0.040 >= 0.98 x fp16 0.040")
    variant("gptq-4bit-g128", "gptq", "4bit-g128", {
        "model.safetensors": b"\x02" * 1500, "config.json": config.encode(), "tokenizer.json": b'{"model": {}}',
    }, verified=True, accuracy=0.037, calib=calibration, reason="call_accuracy 0.037 >= 0.90 x fp16 0.040")
    variant("awq-4bit-g128", "awq", "4bit-g128", {
        "model.safetensors": b"\x03" * 1500, "config.json": b"{}",
    }, verified=False, accuracy=0.010, calib=calibration, reason="call_accuracy 0.010 < 0.90 x fp16 0.040")
    (out / "accuracy_vs_size.png").write_bytes(png_bytes())
    return out
