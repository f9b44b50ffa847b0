"""Model inputs as ordered segments: token ids or embedding rows (virtual tokens are just another segment).

A method turns (example, passages) into ``list[Segment]``; the generation engine embeds each segment, concatenates
them and decodes. Keeping the pieces separate (instead of one tokenized string) buys two things:

* virtual tokens (SPRING) slot in anywhere as an :class:`EmbeddingSegment`;
* the passages block is tokenized on its own, so its token ids are identical whatever follows it. That is what
  lets the engine compute the block's KV cache once and continue several methods / token counts from it.

Each text piece is tokenized with ``add_special_tokens=False``; the tokenizer's own leading special tokens (BOS for
Llama/Mistral, none for SmolLM2) are one ``bos`` segment at the very start.

Passage block format (the paper): ``[i] {title} {text}\\n`` per passage, i from 1, then a blank line. It is two
segments: the passage lines (``passages``, truncatable) and the final ``\\n\\n`` (``passages-end``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.templates import PASSAGES, SHOTS, VIRTUAL, Template
from harness.types import Passage

BOS = "bos"
CHAT = "chat"
PASSAGE_LINES = "passages"
PASSAGES_END = "passages-end"
TEXT = "text"
VIRTUAL_TOKENS = "virtual"
SHOT = "shot"
SHOT_PASSAGE_LINES = "shot-passages"
SHOT_PASSAGES_END = "shot-passages-end"
PASSAGES_BLOCK_END = "\n\n"  # the last passage's newline plus the blank line
_BLOCK_ENDS = (PASSAGES_END, SHOT_PASSAGES_END)
_CHAT_SENTINEL = "\u2063HARNESS-CONTENT\u2063"


@dataclass(frozen=True)
class TokenSegment:
    """Token ids. Only ``truncatable`` segments (passage lines) are ever shortened, higher ``cut_priority`` first."""

    ids: tuple[int, ...]
    role: str = TEXT
    truncatable: bool = False
    cut_priority: int = 0  # few-shot examples' passages (1) are cut before the question's own passages (0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class EmbeddingSegment:
    """Embedding rows ``(k, hidden)`` fed to the model as they are (e.g. k trainable virtual tokens).

    ``reserve``: the length :func:`truncate` budgets for this segment when it is longer than ``k`` (SPRING
    reserves all n tokens, so every k of a token sweep reads the same, shareable passage text).
    """

    rows: Any  # torch.Tensor; typed loosely so this module imports without torch
    role: str = VIRTUAL_TOKENS
    reserve: int = 0

    def __post_init__(self) -> None:
        if self.rows.dim() != 2:
            raise ValueError(f"EmbeddingSegment rows must be (k, hidden), got shape {tuple(self.rows.shape)}")

    def __len__(self) -> int:
        return int(self.rows.shape[0])


Segment = TokenSegment | EmbeddingSegment


def format_passages(passages: Sequence[Passage]) -> str:
    """The paper's passages block: ``[i] {title} {text}\\n`` per passage, then a blank line ("" for none)."""
    if not passages:
        return ""
    return "".join(f"[{i}] {p.title} {p.text}\n" for i, p in enumerate(passages, start=1)) + "\n"


def tokenize(tokenizer: Any, text: str) -> tuple[int, ...]:
    """Token ids of ``text`` without any special tokens added."""
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


def leading_special_ids(tokenizer: Any) -> tuple[int, ...]:
    """The special tokens the tokenizer puts before any text by default (BOS for Llama-2, none for SmolLM2)."""
    plain = tokenize(tokenizer, "a")
    full = tuple(tokenizer("a")["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return ()


def passage_segments(tokenizer: Any, passages: Sequence[Passage], *, shot: bool = False) -> list[TokenSegment]:
    """The passages block as ``[passage lines (truncatable), "\\n\\n"]`` ([] when there are no passages).

    ``shot``: the block of a solved few-shot example (its own roles, cut before the question's passages)."""
    block = format_passages(passages)
    if not block:
        return []
    lines = block.removesuffix(PASSAGES_BLOCK_END)
    return [
        TokenSegment(
            tokenize(tokenizer, lines), SHOT_PASSAGE_LINES if shot else PASSAGE_LINES, truncatable=True, cut_priority=int(shot)
        ),
        TokenSegment(tokenize(tokenizer, PASSAGES_BLOCK_END), SHOT_PASSAGES_END if shot else PASSAGES_END),
    ]


def build_segments(
    template: Template,
    question: str,
    passages: Sequence[Passage],
    tokenizer: Any,
    *,
    virtual: EmbeddingSegment | None = None,
    shots: Sequence[Segment] | None = None,
    chat_template: bool = False,
) -> list[Segment]:
    """The segments for ``template`` filled with ``question``, ``passages``, and ``virtual`` tokens or solved
    example ``shots`` where the template has those slots.

    With ``chat_template`` the whole rendered template becomes the user turn of the tokenizer's chat template
    (off by default: the paper feeds the raw template).
    """
    if (VIRTUAL in template.slots) != (virtual is not None):
        raise ValueError(f"template {template.name!r} and the virtual-token segment do not match")
    if (SHOTS in template.slots) != (shots is not None):
        raise ValueError(f"template {template.name!r} and the few-shot segments do not match")
    body: list[Segment] = []
    for kind, value in template.pieces(question):
        if kind == PASSAGES:
            body.extend(passage_segments(tokenizer, passages))
        elif kind == VIRTUAL and virtual is not None:  # the template check above makes it present
            body.append(virtual)
        elif kind == SHOTS and shots is not None:
            body.extend(shots)
        else:
            body.append(TokenSegment(tokenize(tokenizer, value), TEXT))
    if not chat_template:
        bos = leading_special_ids(tokenizer)
        return [TokenSegment(bos, BOS), *body] if bos else body
    before, after = chat_wrapper(tokenizer)
    return [TokenSegment(tokenize(tokenizer, before), CHAT), *body, TokenSegment(tokenize(tokenizer, after), CHAT)]


def chat_wrapper(tokenizer: Any) -> tuple[str, str]:
    """(text before, text after) the user message in the tokenizer's chat template, generation prompt included."""
    if not getattr(tokenizer, "chat_template", None):
        raise HarnessError("this model's tokenizer has no chat template; run without --chat-template")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": _CHAT_SENTINEL}], tokenize=False, add_generation_prompt=True
    )
    before, found, after = rendered.partition(_CHAT_SENTINEL)
    if not found:
        raise HarnessError("the tokenizer's chat template does not echo the user message; run without --chat-template")
    return before, after


def input_length(segments: Sequence[Segment]) -> int:
    return sum(len(s) for s in segments)


def budget_length(segments: Sequence[Segment]) -> int:
    """The length :func:`truncate` fits into the maximum: :func:`input_length` with reserved virtual tokens."""
    return sum(max(len(s), s.reserve) if isinstance(s, EmbeddingSegment) else len(s) for s in segments)


def truncate(segments: Sequence[Segment], max_tokens: int) -> list[Segment]:
    """Fit ``segments`` into ``max_tokens`` by cutting passage text from the end of the last passage backwards.

    Few-shot examples' passages go first (``cut_priority``), then the question's own. The question, the
    instruction, virtual tokens and the blocks' closing blank lines are never cut; virtual tokens count with their
    ``reserve``. A passages segment cut to nothing is dropped together with its closing blank line.
    """
    segments = list(segments)
    excess = budget_length(segments) - max_tokens
    tokens = {i: s for i, s in enumerate(segments) if isinstance(s, TokenSegment) and s.truncatable}
    cut_order = sorted(tokens, key=lambda i: (-tokens[i].cut_priority, -i))
    for index in cut_order:
        if excess <= 0:
            break
        segment = tokens[index]
        keep = max(len(segment) - excess, 0)
        excess -= len(segment) - keep
        if not keep and index + 1 < len(segments) and segments[index + 1].role in _BLOCK_ENDS:
            excess -= len(segments[index + 1])  # an emptied block goes with its closing blank line
        segments[index] = TokenSegment(segment.ids[:keep], segment.role, truncatable=True, cut_priority=segment.cut_priority)
    emptied = {i for i in cut_order if not len(segments[i])}
    segments = [s for i, s in enumerate(segments) if i not in emptied and not (s.role in _BLOCK_ENDS and i - 1 in emptied)]
    if excess > 0:
        raise HarnessError(
            f"input needs {budget_length(segments)} tokens without passage text, more than the maximum input "
            f"length {max_tokens}; the question and instruction are never truncated: raise --max-input-tokens"
        )
    return segments


# Under an explicit input cut (--max-input-tokens L), the evaluated question's own passage text is cut to
# L - PASSAGE_RESERVE tokens for every method alike, so all methods compared in a run read the same passages and
# share one prefill of them. 96 tokens hold the longest non-passage part of the single-example inputs seen on
# the offline datasets (question + P1 instruction + chat wrapper, or question + 50 virtual tokens: at most 93).
PASSAGE_RESERVE = 96
CUT_VERSION = 2  # bump when fit_input's rule changes (it is part of every decoding and training spec)


def fit_input(segments: Sequence[Segment], max_tokens: int) -> list[Segment]:
    """The input under an explicit cut of ``max_tokens``: the question's own passage text cut to
    ``max_tokens - PASSAGE_RESERVE`` tokens (the same text for every method), then :func:`truncate`.

    Solved few-shot examples do not take the question's passage budget: the limit grows by their non-passage
    text (questions, instructions, answers) and their own passages are cut first to fit it."""
    budget = max(max_tokens - PASSAGE_RESERVE, 0)
    fitted: list[Segment] = []
    for segment in segments:
        if isinstance(segment, TokenSegment) and segment.role == PASSAGE_LINES and len(segment) > budget:
            segment = TokenSegment(segment.ids[:budget], segment.role, truncatable=True, cut_priority=segment.cut_priority)
        fitted.append(segment)
    shots_text = sum(len(s) for s in fitted if s.role in (SHOT, SHOT_PASSAGES_END))
    return truncate(fitted, max_tokens + shots_text)


def split_after_passages(segments: Sequence[Segment]) -> tuple[list[Segment], list[Segment]]:
    """(prefix ending with the passages block, the rest): the shared part for KV-cache prefix reuse.

    Without a passages block the prefix is the leading BOS/chat segments only.
    """
    cut = 0
    for index, segment in enumerate(segments):
        if segment.role in (BOS, CHAT) and index == cut:
            cut = index + 1
        if segment.role == PASSAGES_END:
            cut = index + 1
            break
    return list(segments[:cut]), list(segments[cut:])


def render_segments(segments: Sequence[Segment], tokenizer: Any) -> str:
    """Human-readable text of an input (virtual tokens shown as ``<T×k>``), for display and debugging."""
    parts = []
    for segment in segments:
        if isinstance(segment, EmbeddingSegment):
            parts.append(f"<T×{len(segment)}>")
        else:
            parts.append(tokenizer.decode(list(segment.ids)))
    return "".join(parts)
