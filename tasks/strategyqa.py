"""StrategyQA: yes/no questions that need implicit multi-step reasoning.

Evaluation: the official train file ``strategyqa/strategyqa_train.json`` (2,290, JSON list [{qid, question,
answer:bool, facts, decomposition, ...}]), since the official test labels are hidden. Golds are "yes"/"no".
No training pool. Licence: MIT.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError
from harness.formats import read_json_records, require, require_text
from harness.task import Task
from harness.types import Example


class StrategyQA(Task):
    name = "strategyqa"
    title = "StrategyQA"
    eval_split = "train"
    eval_count = 2_290
    eval_files = ("strategyqa/strategyqa_train.json",)
    metrics = ("exact_match", "accuracy")
    license = "MIT"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for index, record in enumerate(read_json_records(path)):
            qid = require(record, "qid", path, f"record {index}")
            answer = require(record, "answer", path, qid)
            if not isinstance(answer, bool):
                raise HarnessError(f"{path}: record {qid}: 'answer' must be true or false")
            yield Example(f"strategyqa/{qid}", require_text(record, "question", path, qid), ["yes" if answer else "no"])
