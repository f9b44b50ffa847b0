"""CuratedTREC (DrQA/DPR 694-question test split); gold answers are regular expressions.

Evaluation: ``curatedtrec/large2180-test.tsv`` (TSV, no header: id, type, question, answer-regex). Scored with
``regex_match`` (DrQA semantics). No training pool here. Licence: TREC QA data (NIST), none stated.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError
from harness.formats import read_tsv
from harness.task import HubSource, Task
from harness.types import Example


class CuratedTREC(Task):
    name = "curatedtrec"
    title = "CuratedTREC"
    eval_split = "test"
    eval_count = 694
    eval_files = ("curatedtrec/large2180-test.tsv",)
    metrics = ("regex_match",)
    hub = HubSource("curatedtrec", eval_split="test", train_split="train")
    license = "none stated (TREC QA, NIST)"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for line, fields in read_tsv(path):
            if len(fields) != 4:
                raise HarnessError(f"{path}:{line}: expected 4 tab-separated fields (id, type, question, regex)")
            qid, _type, question, pattern = fields
            yield Example(f"curatedtrec/{qid}", question, [pattern], {"type": _type})
