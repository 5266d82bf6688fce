"""Where conversation rows come from: JSON Lines / JSON files, directories of them, Hub datasets.

``rows`` yields ``(where, default id, row)`` for every record of a source — ``where`` names the file
and line (or the dataset and row) for error messages; a malformed line is handed on as a ``DataError``
rather than raised, so a caller may skip it. ``invoker.data.loaders`` turns the rows into records.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class DataError(ValueError):
    """A conversation source is unusable; the message names where (file:line or dataset row) and the field."""

    def __init__(self, where: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        self.where = where
        self.field = field
        self.reason = message


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSON Lines file (blank lines skipped); ``DataError`` names file:line."""
    rows = []
    for _, _, row in _file_rows(Path(path)):
        if isinstance(row, DataError):
            raise row
        rows.append(row)
    return rows


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write ``records`` one JSON object per line, atomically (temp file renamed into place)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def rows(source: str | os.PathLike, *, split: str | None, limit: int | None) -> Iterator[tuple[str, str, Any]]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))
        if not files:
            raise DataError(str(path), "directory holds no .json or .jsonl files")
        for file in files:
            yield from _file_rows(file)
    elif path.is_file():
        yield from _file_rows(path)
    elif _looks_like_hub_id(str(source)):
        yield from _hub_rows(str(source), split=split, streaming=limit is not None)
    else:
        raise DataError(str(source), "no such file or directory")


def _looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.fullmatch(text)) and not text.endswith((".json", ".jsonl"))


def _file_rows(path: Path) -> Iterator[tuple[str, str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(str(path), f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise DataError(str(path), f"cannot read: {error.strerror or error}") from None
    text = text.removeprefix("\ufeff")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        yield from _json_array_rows(path, text)
        return
    if path.suffix == ".json":  # one object, or several in a row (JSON Lines named .json)
        yield from _json_sequence_rows(path, text)
        return
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:  # handed on, not raised, so on_error="skip" can go past it
            row = DataError(f"{path}:{number}", f"malformed JSON: {error.msg} (column {error.colno})")
        yield f"{path}:{number}", f"{path.stem}-{number:05d}", row


def _json_array_rows(path: Path, text: str) -> Iterator[tuple[str, str, Any]]:
    decoder = json.JSONDecoder()
    position = _skip_space(text, text.index("[") + 1)
    index = 0
    while True:
        if position >= len(text):
            raise DataError(f"{path}:{_line_of(text, position)}", "malformed JSON: the top-level array is not closed")
        if text[position] == "]":
            break
        line = _line_of(text, position)
        row, position = _decode_at(decoder, text, position, path=path)
        yield f"{path}:{line}", f"{path.stem}-{index:05d}", row
        index += 1
        position = _skip_space(text, position)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)
        elif position < len(text) and text[position] != "]":
            raise DataError(f"{path}:{_line_of(text, position)}", "malformed JSON: expected ',' or ']' between records")
    if text[position + 1 :].strip():
        raise DataError(f"{path}:{_line_of(text, position + 1)}", "malformed JSON: extra data after the array")


def _json_sequence_rows(path: Path, text: str) -> Iterator[tuple[str, str, Any]]:
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position >= len(text):
        raise DataError(str(path), "empty file")
    index = 0
    while position < len(text):
        line = _line_of(text, position)
        row, position = _decode_at(decoder, text, position, path=path)
        yield f"{path}:{line}", f"{path.stem}-{index:05d}", row
        index += 1
        position = _skip_space(text, position)


def _decode_at(decoder: json.JSONDecoder, text: str, position: int, *, path: Path) -> tuple[Any, int]:
    """The JSON value starting at ``position`` and the position after it; malformed JSON names the file:line."""
    try:
        return decoder.raw_decode(text, position)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}", f"malformed JSON: {error.msg} (column {error.colno})") from None


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def _hub_rows(dataset_id: str, *, split: str | None, streaming: bool) -> Iterator[tuple[str, str, Any]]:
    try:
        import datasets  # optional: only needed for Hub dataset ids
    except ImportError:
        raise DataError(
            dataset_id,
            "is not a local file or directory, so it was taken as a Hugging Face Hub dataset id; loading one "
            "needs the optional 'datasets' package: pip install datasets",
        ) from None
    hub_split = split or "train"
    where = f"{dataset_id}[{hub_split}]"
    try:
        dataset = datasets.load_dataset(dataset_id, split=hub_split, streaming=streaming)
    except Exception as error:  # datasets raises many types (network, missing config, missing split)
        raise DataError(where, f"could not load the dataset: {type(error).__name__}: {error}") from None
    name = dataset_id.rsplit("/", 1)[-1]
    rows = iter(dataset)
    index = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as error:
            raise DataError(f"{where} row {index}", f"could not read the row: {type(error).__name__}: {error}") from None
        yield f"{where} row {index}", f"{name}-{index:05d}", dict(row) if hasattr(row, "keys") else row
        index += 1
