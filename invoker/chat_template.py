"""Invoker's chat template (``chat_template.jinja``) and writing it into a tokenizer directory."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")
CHAT_TEMPLATE: str = TEMPLATE_PATH.read_text(encoding="utf-8").rstrip("\n")


def write_chat_template(tokenizer_dir: str | Path) -> None:
    """Put CHAT_TEMPLATE into tokenizer_config.json ("chat_template") and chat_template.jinja."""
    directory = Path(tokenizer_dir)
    config_path = directory / "tokenizer_config.json"
    config = _read_json(config_path)
    config["chat_template"] = CHAT_TEMPLATE
    _write_atomic(config_path, text=json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    _write_atomic(directory / "chat_template.jinja", text=CHAT_TEMPLATE)


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _write_atomic(path: Path, *, text: str) -> None:
    """Write via a temp file in the same directory, then os.replace, so readers never see half a file."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as temp_file:
            temp_file.write(text)
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
