"""WebQuestions (Berant et al. 2013), test split.

Evaluation: ``webquestions/test.json`` (2,032, JSON list [{qId, qText, answers}]; the same questions as DPR's wq
test). Training pool: the original 3,778 train questions, split by the source repository into
``trainmodel.json`` + ``val.json`` + ``devtest.json``. Licence: CC-BY 4.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.formats import read_json_records, require, require_answers, require_text
from harness.task import HubSource, Task
from harness.types import Example


class WebQuestions(Task):
    name = "webq"
    title = "WebQuestions"
    eval_split = "test"
    eval_count = 2_032
    train_count = 3_771
    eval_files = ("webquestions/test.json",)
    train_files = ("webquestions/trainmodel.json", "webquestions/val.json", "webquestions/devtest.json")
    hub = HubSource("web_questions", eval_split="test", train_split="train")
    license = "CC-BY 4.0"

    @staticmethod
    def _read(path: Path) -> Iterator[Example]:
        for index, record in enumerate(read_json_records(path)):
            qid = require(record, "qId", path, f"record {index}")
            yield Example(f"webq/{qid}", require_text(record, "qText", path, qid), require_answers(record, "answers", path, qid))

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        yield from cls._read(data_dir / cls.eval_files[0])

    @classmethod
    def read_train(cls, data_dir: Path) -> Iterator[Example]:
        for file in cls.train_files:
            yield from cls._read(data_dir / file)
