"""CoQA, first-round questions (the only ones that stand alone without conversation history).

Source: the official CoQA *test* set as shipped in BIG-bench (``bigbench/coqa_conversational_question_answering/
coqa.test.json``; the dev set the paper uses is not available here). Evaluation: the 500 first-round questions
of the five in-domain sources (race, mctest, cnn, wikipedia, gutenberg), the size of the paper's dev subset.
Training pool: the 200 first-round questions of the out-of-domain stories (reddit, science), disjoint by story.
Golds: the main free-form answer plus the three additional annotators' answers. Licence: per CoQA domain
(CC BY-SA 4.0, MSR-LA, RACE, Apache-2.0); BIG-bench Apache-2.0.
"""

from collections.abc import Iterator
from pathlib import Path

from harness.corpus import clean, read_json_source
from harness.errors import HarnessError
from harness.formats import read_json
from harness.task import Task
from harness.types import Example

IN_DOMAIN_SOURCES = frozenset({"race", "mctest", "cnn", "wikipedia", "gutenberg"})
FILE = "bigbench/coqa_conversational_question_answering/coqa.test.json"


def _first_round(data_dir: Path, in_domain: bool) -> Iterator[Example]:
    path = data_dir / FILE
    document = read_json(path)
    if not isinstance(document, dict) or "data" not in document:
        raise HarnessError(f"{path}: expected the official CoQA JSON layout with a 'data' list")
    for story in document["data"]:
        if (story["source"] in IN_DOMAIN_SOURCES) != in_domain:
            continue
        question = next(q for q in story["questions"] if q["turn_id"] == 1)
        answers = [a["input_text"] for a in story["answers"] if a["turn_id"] == 1]
        for annotator in story.get("additional_answers", {}).values():
            answers += [a["input_text"] for a in annotator if a["turn_id"] == 1]
        yield Example(
            f"coqa/{story['id']}/1",
            question["input_text"],
            list(dict.fromkeys(a.strip() for a in answers if a.strip())),
            {"source": story["source"], "story_id": story["id"]},
        )


class CoQA(Task):
    name = "coqa"
    title = "CoQA (first-round questions)"
    eval_split = "test"
    eval_count = 500
    train_count = 200
    eval_files = (FILE,)
    train_files = (FILE,)
    license = "per domain (CC BY-SA 4.0 / MSR-LA / RACE / Apache-2.0)"
    passages_file = FILE

    @classmethod
    def read_eval(cls, data_dir: Path) -> Iterator[Example]:
        yield from _first_round(data_dir, in_domain=True)

    @classmethod
    def read_train(cls, data_dir: Path) -> Iterator[Example]:
        yield from _first_round(data_dir, in_domain=False)

    @classmethod
    def read_passages(cls, data_dir: Path, gold_only: bool = True) -> Iterator[tuple[tuple[str, ...], str, str]]:
        """The stories (one passage each, gold for its questions), keyed by story id and first-round question."""
        document = read_json_source(data_dir / cls.passages_file)
        for story in document["data"]:
            title = clean(str(story.get("name") or story.get("filename") or "").rsplit(".", 1)[0])
            first = next((q["input_text"] for q in story["questions"] if q["turn_id"] == 1), "")
            yield (story["id"], first), title, clean(story["story"])
