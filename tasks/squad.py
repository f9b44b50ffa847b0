"""SQuAD v1.1 dev as an open-domain test set (DPR's squad test, questions only).

Evaluation: ``dpr_qas/topics.dpr.squad.test.txt`` (10,570; JSON lines {question, answer:[str]} despite the
.txt name; repeated annotator answers are kept once). Training pool: ``squad_train_subset/train.jsonl`` (500
SQuAD train questions, JSONL {query, passage, answer}). Paragraphs for the dev questions ship in
``bigbench/squad_shifts/squaddev_v1.1.json`` (corpus and oracle). Licence: CC BY-SA 4.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.corpus import clean, read_json_source
from harness.formats import read_jsonl, require_answer, require_answers, require_text
from harness.task import HubSource, Task
from harness.types import Example


class SQuAD(Task):
    name = "squad"
    title = "SQuAD v1.1"
    eval_split = "dev"
    eval_count = 10_570
    train_count = 500
    eval_files = ("dpr_qas/topics.dpr.squad.test.txt",)
    train_files = ("squad_train_subset/train.jsonl",)
    hub = HubSource("squad", eval_split="dev", train_split="train")
    license = "CC BY-SA 4.0"
    passages_file = "bigbench/squad_shifts/squaddev_v1.1.json"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for line, record in read_jsonl(path):
            answers = list(dict.fromkeys(require_answers(record, "answer", path, line)))  # de-duplicate, keep order
            yield Example(f"squad/dev/{line}", require_text(record, "question", path, line), answers)

    @classmethod
    def read_train(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.train_files[0]
        for line, record in read_jsonl(path):
            yield Example(
                f"squad/train/{line}", require_text(record, "query", path, line), [require_answer(record, "answer", path, line)]
            )

    @classmethod
    def read_passages(cls, data_dir: Path, gold_only: bool = True) -> Iterator[tuple[tuple[str, ...], str, str]]:
        """SQuAD v1.1 dev paragraphs (each gold for the questions asked about it), keyed by those questions."""
        document = read_json_source(data_dir / cls.passages_file)
        for article in document["data"]:
            title = clean(article["title"].replace("_", " "))
            for paragraph in article["paragraphs"]:
                questions = tuple(qa["question"] for qa in paragraph.get("qas", []))
                yield questions, title, clean(paragraph["context"])
