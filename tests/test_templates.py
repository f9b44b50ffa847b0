"""The paper's templates, compared as exact strings."""

import hashlib

import pytest

from harness.errors import UnknownNameError
from harness.segments import format_passages
from harness.templates import CLOSED_BOOK, CONCAT, PROMPT, SPRING, TEMPLATES, Template, get_template
from harness.types import Passage

PASSAGES = [
    Passage("a", "Paris", "Paris is the capital of France."),
    Passage("b", "France", "France is a country in Europe."),
]
BLOCK = "[1] Paris Paris is the capital of France.\n[2] France France is a country in Europe.\n\n"
Q = "what is the capital of france?"


def test_passages_block_format():
    assert format_passages(PASSAGES) == BLOCK
    assert format_passages([]) == ""


def test_closed_book_exact():
    assert CLOSED_BOOK.render(q=Q) == "Question: what is the capital of france?\nAnswer:"


def test_concat_exact():
    assert CONCAT.render(q=Q, passages=BLOCK) == BLOCK + "what is the capital of france?"


def test_prompt_exact():
    expected = (
        BLOCK + "According to the previous relevant passages, please answer the following question. Only return the "
        "answer without any other words.\nQuestion: what is the capital of france?\nAnswer:"
    )
    assert PROMPT.render(q=Q, passages=BLOCK) == expected


def test_spring_exact():
    assert SPRING.render(q=Q, passages=BLOCK, T="<T>") == BLOCK + "<T>Question: what is the capital of france?\nAnswer:"
    assert SPRING.slots == ("passages", "T", "q")


def test_pieces_split_slots_and_fill_question():
    assert SPRING.pieces("who?") == [("passages", ""), ("T", ""), ("text", "Question: who?\nAnswer:")]
    assert CONCAT.pieces("who?") == [("passages", ""), ("text", "who?")]
    assert CLOSED_BOOK.pieces("who?") == [("text", "Question: who?\nAnswer:")]


def test_question_text_is_never_interpreted():
    tricky = "what is {passages} and {T} and {q}?"
    assert CLOSED_BOOK.render(q=tricky) == f"Question: {tricky}\nAnswer:"
    assert CLOSED_BOOK.pieces(tricky) == [("text", f"Question: {tricky}\nAnswer:")]


def test_hash_is_sha256_of_exact_text_and_in_spec():
    for template in TEMPLATES.values():
        assert template.hash == hashlib.sha256(template.text.encode()).hexdigest()[:16]
        assert template.spec() == {"name": template.name, "version": 1, "hash": template.hash}
    assert len({t.hash for t in TEMPLATES.values()}) == len(TEMPLATES)


def test_bad_templates_and_names():
    with pytest.raises(ValueError):
        Template("x", "{passages} no question")
    with pytest.raises(ValueError):
        Template("x", "{q}{q}")
    with pytest.raises(UnknownNameError, match="Did you mean 'prompt'"):
        get_template("promt")
