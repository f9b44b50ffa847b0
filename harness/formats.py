"""Readers for the raw file formats the datasets ship in. Malformed input fails with the file and line."""

from __future__ import annotations

import ast
import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def _open_text(path: Path):
    if not path.is_file():
        raise HarnessError(f"missing data file {path}; pass --data-dir DIR pointing at the raw data folder")
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", newline="")


def _decoded(path: Path, rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """``rows`` of a text file; a decoding failure is one line naming the file and the first line with bad bytes."""
    try:
        yield from rows
    except UnicodeDecodeError as error:
        raise not_utf8(path, error) from None


def not_utf8(path: Path, error: UnicodeDecodeError) -> HarnessError:
    """The error for a file that is not UTF-8, at its first bad line (text is decoded in chunks, so the line
    being read when decoding failed says nothing; the raw bytes are scanned again instead)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
        line = next((n for n, raw in enumerate(handle, start=1) if not _is_utf8(raw)), 0)
    return HarnessError(f"{path}:{line}: not UTF-8 text ({error.reason}); restore the original file")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, record)`` for each non-empty line of a (possibly gzipped) JSON-lines file."""
    with _open_text(path) as handle:
        try:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield line_number, json.loads(line)
                    except json.JSONDecodeError as error:
                        raise HarnessError(f"{path}:{line_number}: not valid JSON ({error.msg})") from error
        except UnicodeDecodeError as error:
            raise not_utf8(path, error) from None


def read_json_records(path: Path) -> list[Any]:
    """A JSON file whose top level is the list of records (Bamboogle, Fermi, StrategyQA, WebQuestions)."""
    document = read_json(path)
    if not isinstance(document, list):
        raise HarnessError(f"{path}: the top level must be a JSON list of records, found {_found(document)}")
    return document


def read_json(path: Path) -> Any:
    with _open_text(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise HarnessError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
        except UnicodeDecodeError as error:
            raise not_utf8(path, error) from None


def read_dpr_qas(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line_number, question, answers)`` from DPR's qas TSV: question<TAB>python-literal answer list."""
    with _open_text(path) as handle:
        for line_number, row in _decoded(path, enumerate(csv.reader(handle, delimiter="\t"), start=1)):
            if not row:
                continue
            if len(row) != 2:
                raise HarnessError(f"{path}:{line_number}: expected 2 tab-separated fields, found {len(row)}")
            try:
                answers = ast.literal_eval(row[1])
            except (ValueError, SyntaxError) as error:
                raise HarnessError(f"{path}:{line_number}: answer list is not a Python literal") from error
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise HarnessError(f"{path}:{line_number}: answers must be a list of strings")
            yield line_number, row[0], answers


def read_tsv(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line_number, fields)`` for each row of a header-less TSV file (no quoting)."""
    with _open_text(path) as handle:
        for line_number, line in _decoded(path, enumerate(handle, start=1)):
            line = line.rstrip("\r\n")
            if line:
                yield line_number, line.split("\t")


def require(record: dict[str, Any], key: str, path: Path, where: int | str) -> Any:
    """``record[key]``, or a one-line error naming the file and record."""
    if not isinstance(record, dict):
        raise HarnessError(f"{path}:{where}: expected a JSON object with a {key!r} field, found {_found(record)}")
    if key not in record:
        raise HarnessError(f"{path}:{where}: record has no {key!r} field")
    return record[key]


def _found(value: Any) -> str:
    """How a wrong-typed JSON value reads in an error: its kind and a short excerpt."""
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return "null" if value is None else f"{kind.get(type(value), type(value).__name__)} {json.dumps(value, default=str)[:40]}"


def require_text(record: dict[str, Any], key: str, path: Path, where: int | str) -> str:
    """``record[key]`` as non-empty text (a question), or a one-line error naming the file, record and type."""
    value = require(record, key, path, where)
    if not isinstance(value, str) or not value.strip():
        raise HarnessError(f"{path}:{where}: {key!r} must be a non-empty string, found {_found(value)}")
    return value


def require_answer(record: dict[str, Any], key: str, path: Path, where: int | str, numbers: bool = False) -> str:
    """``record[key]`` as one answer string (``numbers``: a JSON number is read as its text, e.g. Fermi's)."""
    value = require(record, key, path, where)
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        wanted = "a number or a non-empty string" if numbers else "a non-empty answer string"
        raise HarnessError(f"{path}:{where}: {key!r} must be {wanted}, found {_found(value)}")
    return value


def require_answers(record: dict[str, Any], key: str, path: Path, where: int | str) -> list[str]:
    """``record[key]`` as a non-empty list of answer strings; a bare string is refused, not split into letters."""
    value = require(record, key, path, where)
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise HarnessError(f"{path}:{where}: {key!r} must be a non-empty list of answer strings, found {_found(value)}")
    return value
