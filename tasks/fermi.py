"""Fermi problems (held out), SynthFP test: FlashRAG's 1,000-question ``fermi`` test split.

Evaluation: ``fermi/test_synthfp.json`` (JSON list [{question, answer:str, context, program, ...}]); the answer
is a number with an optional unit, scored as text like the other datasets. Held out: never used for training
(RealFP train/val files exist but are not used). Licence: see allenai/fermi.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.formats import read_json_records, require_answer, require_text
from harness.task import HubSource, Task
from harness.types import Example


class Fermi(Task):
    name = "fermi"
    title = "Fermi (SynthFP)"
    eval_split = "test"
    eval_count = 1_000
    eval_files = ("fermi/test_synthfp.json",)
    held_out = True
    hub = HubSource("fermi", eval_split="test")
    license = "no licence file (allenai/fermi; cite Kalyan et al. 2021)"

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        path = data_dir / cls.eval_files[0]
        for index, record in enumerate(read_json_records(path)):
            where = f"record {index}"
            yield Example(
                f"fermi/test/{index}",
                require_text(record, "question", path, where),
                [require_answer(record, "answer", path, where, numbers=True)],
                {"hop": record.get("hop")},
            )
