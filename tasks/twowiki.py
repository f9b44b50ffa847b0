"""2WikiMultihopQA, dev split.

Evaluation: ``2wikimultihopqa/dev.jsonl`` (12,576, JSONL {question, answer:[str]}). No training-side file ships
here, so one tenth of the dev questions (chosen by a hash of the normalised question) is carved out as the
training pool and removed from evaluation. Paragraphs for a 1,000-question sample ship in
``hipporag_2wiki_corpus/`` (corpus). Licence: Apache-2.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.formats import read_jsonl, require_answers, require_text
from harness.task import HubSource, Task
from harness.types import Example


class TwoWikiMultihopQA(Task):
    name = "2wiki"
    title = "2WikiMultihopQA"
    eval_split = "dev"
    eval_count = 11_310
    train_count = 1_266
    eval_files = ("2wikimultihopqa/dev.jsonl",)
    carve_modulus = 10
    hub = HubSource("2wikimultihopqa", eval_split="dev", train_split="train")
    license = "Apache-2.0"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for line, record in read_jsonl(path):
            yield Example(
                f"2wiki/dev/{line}", require_text(record, "question", path, line), require_answers(record, "answer", path, line)
            )
