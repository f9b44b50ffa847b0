"""Natural Questions (open), the ORQA/DPR test split = NQ-open dev.

Source: google-research-datasets/natural-questions ``nq_open/``. Evaluation: ``NQ-open.dev.jsonl`` (3,610;
the same questions as DPR's nq test, untokenised). Training pool: ORQA's held-out ``dpr_qas/topics.nq.dev.txt``
(8,757) plus EfficientQA dev (1,800), neither overlapping the test questions. Format: JSONL {question,
answer:[str]} and DPR TSV. Licence: CC BY-SA 3.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.corpus import clean, read_jsonl_source
from harness.formats import read_dpr_qas, read_jsonl, require_answers, require_text
from harness.task import HubSource, Task
from harness.types import Example


class NaturalQuestions(Task):
    name = "nq"
    title = "Natural Questions (open)"
    eval_split = "test"
    eval_count = 3_610
    train_count = 10_549
    eval_files = ("nq_open/NQ-open.dev.jsonl",)
    train_files = ("dpr_qas/topics.nq.dev.txt", "nq_open/NQ-open.efficientqa.dev.1.1.jsonl")
    hub = HubSource("nq", eval_split="test", train_split="train")
    license = "CC BY-SA 3.0"
    passages_file = "nq_open_oracle/nq-open-oracle.jsonl.gz"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for line, record in read_jsonl(path):
            yield Example(
                f"nq/test/{line}", require_text(record, "question", path, line), require_answers(record, "answer", path, line)
            )

    @classmethod
    def read_train(cls, data_dir: Path) -> Iterator[Example]:
        for line, question, answers in read_dpr_qas(data_dir / cls.train_files[0]):
            yield Example(f"nq/train-orqa-dev/{line}", question, answers)
        path = data_dir / cls.train_files[1]
        for line, record in read_jsonl(path):
            yield Example(
                f"nq/train-efficientqa-dev/{line}",
                require_text(record, "question", path, line),
                require_answers(record, "answer", path, line),
            )

    @classmethod
    def read_passages(cls, data_dir: Path, gold_only: bool = True) -> Iterator[tuple[tuple[str, ...], str, str]]:
        """NQ-open's gold DPR passages (``isgold`` contexts, the only ones kept either way), keyed by question."""
        for _line, record in read_jsonl_source(data_dir / cls.passages_file):
            for ctx in record.get("ctxs", []):
                if ctx.get("isgold"):
                    yield (record["question"],), clean(ctx["title"]), clean(ctx["text"])
