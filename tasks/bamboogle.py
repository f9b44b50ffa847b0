"""Bamboogle (held out): 125 two-hop questions that search engines answer badly (Press et al. 2022).

Evaluation: ``bamboogle/bamboogle_test_questions_and_answers.json`` (JSON list [{question, answer:str}];
answers lower-cased in this copy, which the normalised metrics ignore). Held out: never used for training.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.formats import read_json_records, require_answer, require_text
from harness.task import HubSource, Task
from harness.types import Example


class Bamboogle(Task):
    name = "bamboogle"
    title = "Bamboogle"
    eval_split = "test"
    eval_count = 125
    eval_files = ("bamboogle/bamboogle_test_questions_and_answers.json",)
    held_out = True
    hub = HubSource("bamboogle", eval_split="test")
    license = "no licence stated (ofirpress/self-ask)"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for index, record in enumerate(read_json_records(path)):
            where = f"record {index}"
            yield Example(
                f"bamboogle/test/{index}",
                require_text(record, "question", path, where),
                [require_answer(record, "answer", path, where)],
            )
