"""PopQA (held out): 14,267 long-tail entity questions with answer aliases.

Evaluation: ``popqa/test.jsonl`` (JSONL {question, answer:[aliases]}; no popularity metadata in this copy).
Held out: never used for training. Licence: MIT.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.formats import read_jsonl, require_answers, require_text
from harness.task import HubSource, Task
from harness.types import Example


class PopQA(Task):
    name = "popqa"
    title = "PopQA"
    eval_split = "test"
    eval_count = 14_267
    eval_files = ("popqa/test.jsonl",)
    held_out = True
    hub = HubSource("popqa", eval_split="test")
    license = "MIT"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for line, record in read_jsonl(path):
            yield Example(
                f"popqa/test/{line}", require_text(record, "question", path, line), require_answers(record, "answer", path, line)
            )
