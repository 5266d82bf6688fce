"""Start the server: ``invoker-pack serve PATH`` / ``python -m serve_minimal PATH``, or, like the
original Invoker server, from environment variables with ``uvicorn --factory serve_minimal.run:app_from_env``.

The model is loaded by ``invoker.runtimes.load_runtime`` — the loader eval and bench use.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from invoker.formats import file_format
from invoker.manifest import check_artifact
from serve_minimal.settings import ServerSettings

ENV_PATH = "INVOKER_MODEL_NAME_OR_PATH"
ENV_TYPE = "INVOKER_MODEL_TYPE"
ENV_API_KEY = "INVOKER_API_KEY"
MODEL_TYPE_ALIASES = {"hf": "transformers", "auto": None}  # the original server's INVOKER_MODEL_TYPE=hf

logger = logging.getLogger("serve_minimal")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerSettings(model_name="")
    parser.add_argument("path", type=Path, nargs="?", default=None,
                        help=f"model dir or variant dir (fp16, GPTQ, AWQ, GGUF); default: ${ENV_PATH}")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--api-key", default=None,
                        help=f"require 'Authorization: Bearer KEY' (default: ${ENV_API_KEY}, else no key)")
    parser.add_argument("--max-concurrency", type=_positive_int, default=defaults.max_concurrency,
                        help=f"generations running at once (default: {defaults.max_concurrency})")
    parser.add_argument("--max-queue", type=_non_negative_int, default=defaults.max_queue,
                        help=f"requests waiting for a slot before new ones get 429 (default: {defaults.max_queue})")
    parser.add_argument("--queue-timeout", type=float, default=defaults.queue_timeout,
                        help=f"seconds a request may wait for a slot before 429 (default: {defaults.queue_timeout:g})")
    parser.add_argument("--max-body-bytes", type=_positive_int, default=defaults.max_body_bytes,
                        help=f"largest accepted request body (default: {defaults.max_body_bytes})")
    parser.add_argument("--body-timeout", type=_positive_float, default=defaults.body_timeout,
                        help=f"seconds a client may take to send its request body before 408 (default: {defaults.body_timeout:g})")
    parser.add_argument("--no-constrained", dest="constrained", action="store_false",
                        help="do not constrain function calls to their JSON Schema (a request can still ask)")
    parser.add_argument("--model-name", default=None, help="model id reported by the API (default: the path's name)")
    parser.add_argument("--runtime", default=None,
                        help=f"runtime to load with (default: by format; ${ENV_TYPE}; 'hf' means transformers)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default: cpu)")
    parser.add_argument("--verify", action="store_true",
                        help="refuse to serve when a file differs from its manifest.json (default: warn and serve)")


def serve(args: argparse.Namespace) -> int:
    """Load the model and run uvicorn until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = app_from_args(args)
    if api_key_of(args) is None and not _is_loopback(args.host):
        logger.warning("serving on %s without an API key: anyone who can reach it can use it", args.host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def app_from_args(args: argparse.Namespace):
    from invoker.runtimes import load_runtime
    from serve_minimal.app import create_app

    path = args.path or _env_path()
    api_key = api_key_of(args)  # a bad key fails before the model loads
    runtime_name = _runtime_name(args.runtime if args.runtime is not None else os.environ.get(ENV_TYPE))
    check_artifact(path, refuse=getattr(args, "verify", False), warn=logger.warning)  # what is served is what was verified
    runtime = load_runtime(path, device=args.device, runtime=runtime_name)
    settings = ServerSettings(
        model_name=args.model_name or model_name_of(path),
        api_key=api_key,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        queue_timeout=args.queue_timeout,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        constrained=args.constrained,
    )
    return create_app(runtime=runtime, settings=settings)


def app_from_env():
    """The app from environment variables alone (``uvicorn --factory serve_minimal.run:app_from_env``)."""
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return app_from_args(parser.parse_args([]))


def api_key_of(args: argparse.Namespace) -> str | None:
    """The key requests must carry: ``--api-key``, else ``$INVOKER_API_KEY``, else None (no key). An empty or
    blank key is refused — it would let an empty bearer token through."""
    from_option = args.api_key is not None
    key = args.api_key if from_option else os.environ.get(ENV_API_KEY)
    if key is not None and not key.strip():
        where = "--api-key" if from_option else f"${ENV_API_KEY}"
        raise ValueError(f"{where} is empty: give a real key, or leave it out (unset {ENV_API_KEY}) to serve without one")
    if key is not None and key != key.strip():
        where = "--api-key" if from_option else f"${ENV_API_KEY}"
        raise ValueError(f"{where} starts or ends with whitespace, which a bearer token cannot carry")
    return key


def model_name_of(path: Path) -> str:
    path = Path(path)
    return path.stem if file_format(path) is not None else path.resolve().name  # a single-file model: its stem


def _env_path() -> Path:
    value = os.environ.get(ENV_PATH)
    if not value:
        raise ValueError(f"no model path: give PATH or set {ENV_PATH}")
    return Path(value)


def _runtime_name(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    return MODEL_TYPE_ALIASES.get(value.lower(), value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_minimal",
                                     description="OpenAI-compatible server for an Invoker model.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"serve: error: {err}", file=sys.stderr)
        return 2
