"""MuSiQue-Ans (held out), dev split: 2,417 compositional multi-hop questions.

Evaluation: ``musique/dev.jsonl`` (JSONL {question, answer:[answer + aliases]}). Held out: never used for
training. Licence: CC BY 4.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.formats import read_jsonl, require_answers, require_text
from harness.task import HubSource, Task
from harness.types import Example


class MuSiQue(Task):
    name = "musique"
    title = "MuSiQue"
    eval_split = "dev"
    eval_count = 2_417
    eval_files = ("musique/dev.jsonl",)
    held_out = True
    hub = HubSource("musique", eval_split="dev")
    license = "CC BY 4.0"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for line, record in read_jsonl(path):
            yield Example(
                f"musique/dev/{line}", require_text(record, "question", path, line), require_answers(record, "answer", path, line)
            )
