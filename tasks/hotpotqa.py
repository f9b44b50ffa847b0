"""HotpotQA (distractor dev questions, open-domain use).

Evaluation: ``hotpotqa/dev.jsonl`` (7,405, JSONL {question, answer:[str]}). Training pool:
``hotpotqa_train/train.jsonl`` (500 train questions with evidence sentences, JSONL {question, answer:str,
...}). Gold paragraphs for 500 dev questions ship in ``hotpotqa/dev_subsampled.jsonl`` (used by the corpus and
the oracle retriever, not here). Licence: CC BY-SA 4.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.corpus import clean, read_jsonl_source
from harness.formats import read_jsonl, require_answer, require_answers, require_text
from harness.task import HubSource, Task
from harness.types import Example


class HotpotQA(Task):
    name = "hotpotqa"
    title = "HotpotQA"
    eval_split = "dev"
    eval_count = 7_405
    train_count = 500
    eval_files = ("hotpotqa/dev.jsonl",)
    train_files = ("hotpotqa_train/train.jsonl",)
    hub = HubSource("hotpotqa", eval_split="dev", train_split="train")
    license = "CC BY-SA 4.0"
    passages_file = "hotpotqa/dev_subsampled.jsonl"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for line, record in read_jsonl(path):
            yield Example(
                f"hotpotqa/dev/{line}",
                require_text(record, "question", path, line),
                require_answers(record, "answer", path, line),
            )

    @classmethod
    def read_train(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.train_files[0]
        for line, record in read_jsonl(path):
            yield Example(
                f"hotpotqa/train/{line}",
                require_text(record, "question", path, line),
                [require_answer(record, "answer", path, line)],
                {"level": record.get("level"), "type": record.get("type")},
            )

    @classmethod
    def read_passages(cls, data_dir: Path, gold_only: bool = True) -> Iterator[tuple[tuple[str, ...], str, str]]:
        """The IRCoT dev subsample's paragraphs (the supporting ones when ``gold_only``), keyed by question."""
        for _line, record in read_jsonl_source(data_dir / cls.passages_file):
            for ctx in record.get("contexts", []):
                if ctx.get("is_supporting") or not gold_only:
                    yield (record["question_text"],), clean(ctx["title"]), clean(ctx["paragraph_text"])
