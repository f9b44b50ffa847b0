"""Corpus readers, prepared stores, fingerprints, bad input and the wiki-offline build."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from harness.corpus import (
    DEFAULT_CORPUS,
    build_default_corpus,
    fingerprint,
    open_corpus,
    passage_id,
    prepare_corpus,
    read_passages,
)
from harness.errors import HarnessError
from harness.types import Passage

PASSAGES = [
    Passage("p1", "Aardvark", "The aardvark is a burrowing mammal native to Africa."),
    Passage("p2", "Zebra", 'Zebras are African equines with "black and white" stripes.'),
    Passage("p3", "", "A passage without a title."),
]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_three_formats_read_the_same_passages_and_fingerprint(tmp_path):
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"id": p.id, "title": p.title, "text": p.text} for p in PASSAGES])
    flashrag = write_jsonl(
        tmp_path / "flash.jsonl",
        [
            {"id": "p1", "contents": '"Aardvark"\n' + PASSAGES[0].text},
            {"id": "p2", "contents": "Zebra\n" + PASSAGES[1].text},
            {"id": "p3", "contents": "\n" + PASSAGES[2].text},
        ],
    )
    tsv = tmp_path / "psgs_w100.tsv.gz"
    with gzip.open(tsv, "wt", encoding="utf-8") as handle:
        handle.write("id\ttext\ttitle\n")
        handle.write(f"p1\t{PASSAGES[0].text}\tAardvark\n")
        handle.write('p2\t"Zebras are African equines with ""black and white"" stripes."\tZebra\n')
        handle.write(f"p3\t{PASSAGES[2].text}\t\n")
    for path in (plain, flashrag, tsv):
        assert [p for _line, p in read_passages(path)] == PASSAGES, path.name
    expected = fingerprint(PASSAGES)
    assert len(expected) == 64
    assert {prepare_corpus(path).fingerprint for path in (plain, flashrag, tsv)} == {expected}


def test_prepared_store_gives_random_access_in_file_order(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": p.id, "title": p.title, "text": p.text} for p in PASSAGES])
    corpus = prepare_corpus(path)
    assert len(corpus) == 3
    assert list(corpus) == PASSAGES
    assert corpus.passage("p2") == PASSAGES[1]
    assert corpus.passage_at(2) == PASSAGES[2]
    assert corpus.ids_at([2, 0, 2]) == ["p3", "p1", "p3"]
    assert [len(b) for b in corpus.batches(2)] == [2, 1]
    with pytest.raises(HarnessError, match="'nope' is not in corpus"):
        corpus.passage("nope")
    # The second open is found through the pointer, not re-read: same store folder.
    assert prepare_corpus(path).directory == corpus.directory
    # Editing the file makes a new store with a new fingerprint.
    write_jsonl(path, [{"id": "p1", "title": "Aardvark", "text": "changed"}])
    changed = prepare_corpus(path)
    assert changed.fingerprint != corpus.fingerprint and len(changed) == 1


def test_reading_is_a_stream(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "a", "text": "first"}\n{"id": "b", "text": "second"}\n\xff\xfe broken\n')
    stream = read_passages(path)
    assert next(stream) == (1, Passage("a", "", "first"))  # yielded before the bad line is ever read
    assert next(stream)[1].id == "b"
    with pytest.raises(HarnessError, match=r"c\.jsonl:3: line is not UTF-8"):
        next(stream)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"bad\.jsonl: corpus is empty"),
        (b"\n\n", r"bad\.jsonl: corpus is empty"),
        (
            b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}\n',
            r"bad\.jsonl:3: duplicate passage id 'a'",
        ),
        (b'{"id": "a", "text": "x"}\n{"id": "b", "title": "t"}\n', r"bad\.jsonl:2: passage has no text"),
        (b'{"id": "a", "text": "   "}\n', r"bad\.jsonl:1: passage a has no text"),
        (b'{"title": "t", "text": "x"}\n', r"bad\.jsonl:1: passage has no id"),
        (b'{"id": "a", "text": "x"}\n{"id": "b", "text": "caf\xe9"}\n', r"bad\.jsonl:2: line is not UTF-8"),
        (b'{"id": "a", "text": "x"}\nnot json\n', r"bad\.jsonl:2: not valid JSON"),
    ],
)
def test_bad_corpus_is_one_line_error_and_leaves_nothing(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(HarnessError, match=message) as error:
        prepare_corpus(path)
    assert "\n" not in str(error.value)
    stores = tmp_path / "cache" / "corpora" / "stores"
    assert not stores.exists() or list(stores.iterdir()) == []


def test_duplicate_id_in_a_later_batch_is_found(tmp_path):
    records = [{"id": f"p{i}", "text": f"passage {i}"} for i in range(5000)] + [{"id": "p7", "text": "again"}]
    with pytest.raises(HarnessError, match=r"big\.jsonl:5001: duplicate passage id 'p7'"):
        prepare_corpus(write_jsonl(tmp_path / "big.jsonl", records))


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(HarnessError, match="unknown corpus format"):
        prepare_corpus(write_jsonl(tmp_path / "c.csv", [{"id": "a", "text": "x"}]))
    with pytest.raises(HarnessError, match="neither 'wiki-offline' nor an existing passage file"):
        open_corpus(tmp_path / "absent.jsonl")


def test_wiki_offline_must_be_built_first():
    with pytest.raises(HarnessError, match="run `harness corpus build` first"):
        open_corpus(DEFAULT_CORPUS)


def test_build_wiki_offline_from_real_data(real_data_dir, capsys):
    from harness.cli import main

    assert main(["corpus", "build", "--data-dir", str(real_data_dir)]) == 0
    out = capsys.readouterr().out
    assert "wiki-offline built in" in out and "vital-articles" in out and "fingerprint sha256:" in out
    report = build_default_corpus(real_data_dir)
    corpus = open_corpus(DEFAULT_CORPUS)
    assert corpus.fingerprint == report.corpus.fingerprint
    # Sizes of the real sources after de-duplication (MANIFEST.md lists the raw counts).
    assert report.kept["vital-articles"] == 10033
    assert report.kept["2wiki"] == 6119
    assert report.kept["squad"] == 2067
    assert len(corpus) == sum(report.kept.values()) > 27000
    assert report.duplicates > 0
    # The NQ gold passage for the manifest's example question is in, under its content id.
    nobel = [p for p in corpus.batches(4000).__next__() if p.title == "List of Nobel laureates in Physics"]
    assert nobel and "Wilhelm Conrad Röntgen" in nobel[0].text
    assert nobel[0].id == passage_id(nobel[0].title, nobel[0].text)
    # The canonical jsonl beside the store reads back to the same fingerprint.
    assert fingerprint(p for _line, p in read_passages(corpus.directory / "passages.jsonl")) == corpus.fingerprint
    # A second build reuses it.
    assert not report.rebuilt
    assert main(["corpus", "build", "--data-dir", str(real_data_dir)]) == 0
    assert "already built" in capsys.readouterr().out
