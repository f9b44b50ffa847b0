"""The exact input templates of the paper (SPRING, arXiv 2405.19670), one place, each with a content hash.

Placeholders: ``{passages}`` (the retrieved-passages block, see :func:`harness.segments.format_passages`),
``{T}`` (the virtual tokens; SPRING only), ``{shots}`` (solved examples; few-shot only) and ``{q}`` (the question). Nothing else in a template is a
placeholder, and the question text is never re-interpreted, so braces inside a question are safe.

A template's ``spec()`` (name, version, sha256 of the exact text) goes into every result key: editing a string
changes the hash, so stale results can never be mistaken for new ones.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from harness.registry import unknown_name

PASSAGES = "passages"
VIRTUAL = "T"
QUESTION = "q"
SHOTS = "shots"
_PLACEHOLDER = re.compile(r"\{(passages|T|q|shots)\}")


@dataclass(frozen=True)
class Template:
    """An exact template string. ``pieces()`` splits it into literal text and slots, in order."""

    name: str
    text: str
    version: int = 1

    def __post_init__(self) -> None:
        slots = _PLACEHOLDER.findall(self.text)
        if slots.count(QUESTION) != 1 or len(slots) != len(set(slots)):
            raise ValueError(f"template {self.name!r} needs exactly one {{q}} and no repeated placeholder")

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.text))

    def spec(self) -> dict[str, str | int]:
        return {"name": self.name, "version": self.version, "hash": self.hash}

    def render(self, *, q: str, passages: str = "", T: str = "", shots: str = "") -> str:
        """The full input as text (virtual tokens rendered as ``T``); used for display and exact-string tests."""
        values = {PASSAGES: passages, VIRTUAL: T, QUESTION: q, SHOTS: shots}
        return _PLACEHOLDER.sub(lambda match: values[match.group(1)], self.text)

    def pieces(self, q: str) -> list[tuple[str, str]]:
        """``[(kind, value)]`` in order: ``("text", literal-with-question-filled)``, ``("passages", "")``,
        ``("T", "")`` or ``("shots", "")``. Adjacent literal text (and the question) is merged into one text piece."""
        pieces: list[tuple[str, str]] = []
        for index, part in enumerate(_PLACEHOLDER.split(self.text)):  # slot names sit at odd positions
            if index % 2 and part in (PASSAGES, VIRTUAL, SHOTS):
                pieces.append((part, ""))
                continue
            text = q if index % 2 else part
            if not text:
                continue
            if pieces and pieces[-1][0] == "text":
                pieces[-1] = ("text", pieces[-1][1] + text)
            else:
                pieces.append(("text", text))
        return pieces


CLOSED_BOOK = Template("closed-book", "Question: {q}\nAnswer:")
CONCAT = Template("concat", "{passages}{q}")
# The paper's manual instruction P1 (also SPRING's token initialisation text).
INSTRUCTION = (
    "According to the previous relevant passages, please answer the following question. "
    "Only return the answer without any other words."
)
PROMPT = Template("prompt", "{passages}" + INSTRUCTION + "\nQuestion: {q}\nAnswer:")
# P1 as the user turn of a chat template: the assistant turn that follows is the answer, so no "Answer:".
PROMPT_CHAT = Template("prompt-chat", "{passages}" + INSTRUCTION + "\nQuestion: {q}")
# P1 after solved examples; each example is P1 with its own passages, question and answer, then a blank line.
PROMPT_FEWSHOT = Template("prompt-fewshot", "{shots}" + PROMPT.text)
SHOT_ANSWER = " {answer}\n\n"  # what follows a solved example's "Answer:" (the example is PROMPT itself)
SPRING = Template("spring", "{passages}{T}Question: {q}\nAnswer:")

TEMPLATES: dict[str, Template] = {t.name: t for t in (CLOSED_BOOK, CONCAT, PROMPT, PROMPT_CHAT, PROMPT_FEWSHOT, SPRING)}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise unknown_name("template", name, TEMPLATES)
    return TEMPLATES[name]
