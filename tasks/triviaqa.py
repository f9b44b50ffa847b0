"""TriviaQA (open-domain, unfiltered), DPR's test split.

Source: DPR qas files via castorini/anserini-tools (``dpr_qas/``). Evaluation: ``topics.dpr.trivia.test.txt``
(11,313; TriviaQA unfiltered dev). Training pool: ``topics.dpr.trivia.dev.txt`` (8,837, held out from TriviaQA
train, no exact overlap with test). Format: TSV question<TAB>python-literal answer aliases. Licence: DPR
CC-BY-NC 4.0, TriviaQA Apache-2.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.formats import read_dpr_qas
from harness.task import HubSource, Task
from harness.types import Example


class TriviaQA(Task):
    name = "triviaqa"
    title = "TriviaQA"
    eval_split = "test"
    eval_count = 11_313
    train_count = 8_829
    eval_files = ("dpr_qas/topics.dpr.trivia.test.txt",)
    train_files = ("dpr_qas/topics.dpr.trivia.dev.txt",)
    hub = HubSource("triviaqa", eval_split="test", train_split="train")
    license = "Apache-2.0 (TriviaQA); DPR qas CC-BY-NC 4.0"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        for line, question, answers in read_dpr_qas(data_dir / cls.eval_files[0]):
            yield Example(f"triviaqa/test/{line}", question, answers)

    @classmethod
    def read_train(cls, data_dir: Path) -> Iterator[Example]:
        for line, question, answers in read_dpr_qas(data_dir / cls.train_files[0]):
            yield Example(f"triviaqa/train/{line}", question, answers)
