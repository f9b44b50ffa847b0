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
            raise HarnessError(f"{path}: not UTF-8 text ({error.reason})") from error


def read_json(path: Path) -> Any:
    with _open_text(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise HarnessError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
        except UnicodeDecodeError as error:
            raise HarnessError(f"{path}: not UTF-8 text ({error.reason})") from error


def read_dpr_qas(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line_number, question, answers)`` from DPR's qas TSV: question<TAB>python-literal answer list."""
    with _open_text(path) as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
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
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line:
                yield line_number, line.split("\t")


def require(record: dict[str, Any], key: str, path: Path, where: int | str) -> Any:
    """``record[key]``, or a one-line error naming the file and record."""
    if key not in record:
        raise HarnessError(f"{path}:{where}: record has no {key!r} field")
    return record[key]
