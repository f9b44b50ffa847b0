"""Input assembly from segments: exact text, BOS, truncation, prefix split, chat wrapping."""

import pytest
import torch
from tiny_model import build_tokenizer

from harness.errors import HarnessError
from harness.segments import (
    BOS,
    PASSAGE_LINES,
    PASSAGES_END,
    EmbeddingSegment,
    TokenSegment,
    build_segments,
    input_length,
    leading_special_ids,
    render_segments,
    split_after_passages,
    tokenize,
    truncate,
)
from harness.templates import CLOSED_BOOK, CONCAT, PROMPT, SPRING
from harness.types import Passage

PASSAGES = [
    Passage("a", "Paris", "Paris is the capital and most populous city of France."),
    Passage("b", "Darwin", "Charles Darwin was an English naturalist."),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _text(segments, tokenizer):
    return tokenizer.decode([i for s in segments for i in s.ids])


@pytest.mark.parametrize("template", [CLOSED_BOOK, CONCAT, PROMPT])
def test_segments_decode_to_the_exact_rendered_template(tokenizer, template):
    from harness.segments import format_passages

    segments = build_segments(template, "who was darwin?", PASSAGES, tokenizer)
    assert segments[0] == TokenSegment((tokenizer.bos_token_id,), BOS)  # the tokenizer adds BOS like Llama's
    passages = format_passages(PASSAGES) if "passages" in template.slots else ""
    assert _text(segments, tokenizer) == "<s>" + template.render(q="who was darwin?", passages=passages)


def test_passages_block_is_lines_then_blank_line(tokenizer):
    segments = build_segments(CONCAT, "q?", PASSAGES, tokenizer)
    assert [s.role for s in segments] == [BOS, PASSAGE_LINES, PASSAGES_END, "text"]
    assert segments[1].truncatable and not segments[2].truncatable
    assert tokenizer.decode(segments[2].ids) == "\n\n"
    # the block's tokens do not depend on what follows it (what makes prefix reuse possible)
    other = build_segments(PROMPT, "another question", PASSAGES, tokenizer)
    assert other[:3] == segments[:3]


def test_no_passages_no_block(tokenizer):
    segments = build_segments(CONCAT, "q?", [], tokenizer)
    assert [s.role for s in segments] == [BOS, "text"]


def test_virtual_tokens_are_a_segment(tokenizer):
    rows = torch.zeros(5, 8)
    segments = build_segments(SPRING, "q?", PASSAGES, tokenizer, virtual=EmbeddingSegment(rows))
    assert [s.role for s in segments] == [BOS, PASSAGE_LINES, PASSAGES_END, "virtual", "text"]
    assert len(segments[3]) == 5
    assert render_segments(segments, tokenizer).endswith("\n\n<T×5>Question: q?\nAnswer:")
    with pytest.raises(ValueError):
        build_segments(SPRING, "q?", PASSAGES, tokenizer)  # SPRING needs its virtual tokens
    with pytest.raises(ValueError):
        build_segments(PROMPT, "q?", PASSAGES, tokenizer, virtual=EmbeddingSegment(rows))


def test_truncation_cuts_the_end_of_the_last_passage_first(tokenizer):
    segments = build_segments(PROMPT, "who was darwin?", PASSAGES, tokenizer)
    full = input_length(segments)
    cut = truncate(segments, full - 3)
    assert input_length(cut) == full - 3
    assert cut[1].ids == segments[1].ids[:-3]  # passage lines lose their last tokens
    assert cut[2:] == segments[2:]  # blank line, instruction and question untouched
    assert truncate(segments, full) == segments


def test_reserved_virtual_tokens_make_the_passages_independent_of_k(tokenizer):
    """SPRING reserves n positions: k = 2 and k = 5 read exactly the same (cut) passages."""
    full = build_segments(SPRING, "q?", PASSAGES, tokenizer, virtual=EmbeddingSegment(torch.zeros(5, 8)))
    limit = input_length(full) - 4
    cut = {
        k: truncate(
            build_segments(SPRING, "q?", PASSAGES, tokenizer, virtual=EmbeddingSegment(torch.zeros(k, 8), reserve=5)), limit
        )
        for k in (2, 5)
    }
    assert cut[2][1].ids == cut[5][1].ids == full[1].ids[:-4]
    assert input_length(cut[2]) == limit - 3 and input_length(cut[5]) == limit
    # Without the reserve, k = 2 keeps 3 more passage tokens than k = 5.
    plain = truncate(build_segments(SPRING, "q?", PASSAGES, tokenizer, virtual=EmbeddingSegment(torch.zeros(2, 8))), limit)
    assert plain[1].ids == full[1].ids[:-1]


def test_truncation_drops_passages_entirely_then_refuses(tokenizer):
    segments = build_segments(PROMPT, "who was darwin?", PASSAGES, tokenizer)
    without = input_length(segments) - len(segments[1]) - len(segments[2])
    cut = truncate(segments, without)
    assert [s.role for s in cut] == [BOS, "text"]
    assert _text(cut, tokenizer).endswith("Question: who was darwin?\nAnswer:")
    with pytest.raises(HarnessError, match="never truncated"):
        truncate(segments, without - 1)


def test_split_after_passages(tokenizer):
    segments = build_segments(PROMPT, "q?", PASSAGES, tokenizer)
    prefix, suffix = split_after_passages(segments)
    assert [s.role for s in prefix] == [BOS, PASSAGE_LINES, PASSAGES_END]
    assert prefix + suffix == segments
    closed = build_segments(CLOSED_BOOK, "q?", [], tokenizer)
    assert split_after_passages(closed) == (closed[:1], closed[1:])


def test_leading_special_ids(tokenizer):
    assert leading_special_ids(tokenizer) == (tokenizer.bos_token_id,)
    assert tokenize(tokenizer, "") == ()


def test_chat_template_mode_wraps_the_whole_template(tokenizer):
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<s>[user] {{ m['content'] }}{% endfor %}[bot]"
    segments = build_segments(PROMPT, "q?", PASSAGES, tokenizer, chat_template=True)
    assert [s.role for s in segments][0] == "chat" and segments[-1].role == "chat"
    from harness.segments import format_passages

    assert _text(segments, tokenizer) == "<s>[user] " + PROMPT.render(q="q?", passages=format_passages(PASSAGES)) + "[bot]"
    prefix, _ = split_after_passages(segments)
    assert prefix[-1].role == PASSAGES_END
    tokenizer.chat_template = None
    with pytest.raises(HarnessError, match="no chat template"):
        build_segments(PROMPT, "q?", PASSAGES, tokenizer, chat_template=True)
