"""The preservation task catalogue: which lm-eval tasks the suites are, their shots and metrics, and their configs.

* **Tasks** are lm-eval task YAMLs shipped in ``tasks/lm_eval/`` (``harness_mmlu`` (a group of 57 subject
  tasks), ``harness_boolq``, ``harness_csqa``, ``harness_gsm8k``) that read the local raw files with
  ``dataset_path: json``/``csv``. lm-eval needs concrete ``data_files`` paths, so :func:`write_task_configs`
  copies the templates into a temporary include folder with ``__DATA_DIR__`` replaced by the resolved data folder
  (see ``tasks/lm_eval/utils.py`` for the few-shot carve-outs). With ``source="hub"`` the stock lm-eval tasks
  (``mmlu``, ``boolq``, ``commonsense_qa``, ``gsm8k``) are used instead; they need the hub.

Also here: the CLI's argument parsing (tasks, methods, shots), :func:`template_hash` (what defines the prompts, for
the cell key) and :func:`task_manager` (an lm-eval ``TaskManager`` over the run-time configs).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, NotAvailableOffline
from harness.paths import PROJECT_ROOT
from harness.paths import data_dir as resolve_data_dir
from harness.spec import content_hash

TEMPLATE_DIR = PROJECT_ROOT / "tasks" / "lm_eval"
DATA_DIR_PLACEHOLDER = "__DATA_DIR__"
MMLU_SUBJECT_TEMPLATE = "_harness_mmlu_subject.yaml.tmpl"


def preserve_methods() -> tuple[str, ...]:
    """``base`` (the untouched backbone) and every registered method that builds a preservation model
    (``Method.preserves``), so a new method joins `harness preserve` by declaring it, not by a list here."""
    from harness.plugins import METHODS as REGISTRY

    return ("base", *sorted(name for name in REGISTRY.names() if REGISTRY.get(name).preserves))


SOURCES = ("local", "hub")


@dataclass(frozen=True)
class PreserveTask:
    """One preservation suite: its lm-eval task names, the paper's shot settings and the metrics it reports."""

    name: str  # the CLI name: mmlu, boolq, csqa, gsm8k
    local_task: str  # the harness's lm-eval task (or group) name
    stock_task: str  # lm-eval's own task, used with source="hub"
    templates: tuple[str, ...]  # files in tasks/lm_eval/ that define the local task
    default_shots: tuple[int, ...]  # the paper's Table 2 settings
    max_shots: int  # size of the few-shot pool (MMLU dev: 5 per subject; carved pools: 10 rows)
    output_type: str  # multiple_choice | generate_until
    metrics: tuple[str, ...]  # per-document metrics stored in the cell; the first one is the reported score

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


PRESERVE_TASKS: dict[str, PreserveTask] = {
    t.name: t
    for t in (
        PreserveTask(
            "mmlu", "harness_mmlu", "mmlu", ("harness_mmlu.yaml", MMLU_SUBJECT_TEMPLATE), (0, 5), 5, "multiple_choice", ("acc",)
        ),
        PreserveTask("boolq", "harness_boolq", "boolq", ("harness_boolq.yaml",), (0,), 10, "multiple_choice", ("acc",)),
        PreserveTask("csqa", "harness_csqa", "commonsense_qa", ("harness_csqa.yaml",), (0, 4), 10, "multiple_choice", ("acc",)),
        PreserveTask(
            "gsm8k",
            "harness_gsm8k",
            "gsm8k",
            ("harness_gsm8k.yaml",),
            (8,),
            10,
            "generate_until",
            ("exact_match", "exact_match_flexible"),
        ),
    )
}
TASK_ALIASES = {"commonsenseqa": "csqa", "commonsense_qa": "csqa", "gsm": "gsm8k"}
# lm-eval filter name -> our per-document metric name (generate_until tasks).
FILTER_METRICS = {"strict-match": "exact_match", "flexible-extract": "exact_match_flexible"}


def lm_eval_version() -> str:
    return importlib.metadata.version("lm_eval")


# --------------------------------------------------------------------------------------------------------------
# Argument parsing (shared by the CLI and callers).


def _unknown(kind: str, name: str, choices: Iterable[str]) -> HarnessError:
    from harness.registry import unknown_name

    return unknown_name(kind, name, choices)


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    """``"mmlu,boolq"`` -> ``["mmlu", "boolq"]`` (aliases resolved, duplicates dropped, unknown names rejected)."""
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if not names:
        raise HarnessError(f"no preservation task given; choose from {', '.join(PRESERVE_TASKS)}")
    out: list[str] = []
    for name in names:
        name = TASK_ALIASES.get(name, name)
        if name not in PRESERVE_TASKS:
            raise _unknown("preservation task", name, PRESERVE_TASKS)
        if name not in out:
            out.append(name)
    return out


def parse_methods(text: str | Sequence[str]) -> list[str]:
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    if not names:
        raise HarnessError(f"no method given; choose from {', '.join(preserve_methods())}")
    for name in names:
        if name not in preserve_methods():
            raise _unknown("preservation method", name, preserve_methods())
    return list(dict.fromkeys(names))


def parse_shots(text: str | None, tasks: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Shots per task: ``None`` -> the paper's defaults; ``"0,5"`` -> for every task; ``"mmlu=0,5;csqa=4"`` ->
    per task (tasks not named keep their defaults). Each value must fit the task's few-shot pool."""
    shots = {t: PRESERVE_TASKS[t].default_shots for t in tasks}
    if text is not None and text.strip():
        if "=" in text:
            for part in text.split(";"):
                if not part.strip():
                    continue
                name, _, listed = part.partition("=")
                name = TASK_ALIASES.get(name.strip().lower(), name.strip().lower())
                if name not in PRESERVE_TASKS:
                    raise _unknown("preservation task", name, PRESERVE_TASKS)
                if name not in shots:
                    raise HarnessError(f"--shots names {name!r}, which is not in --tasks ({', '.join(tasks)})")
                shots[name] = _int_list(listed)
        else:
            every = _int_list(text)
            shots = {t: every for t in tasks}
    for name, counts in shots.items():
        for value in counts:
            if not 0 <= value <= PRESERVE_TASKS[name].max_shots:
                raise HarnessError(f"{name} takes 0-{PRESERVE_TASKS[name].max_shots} shots (its few-shot pool), not {value}")
    return shots


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(dict.fromkeys(int(v) for v in text.replace("+", ",").split(",") if v.strip()))
    except ValueError:
        raise HarnessError(f"--shots takes comma-separated integers (or task=0,5;task=4), not {text!r}") from None
    if not values:
        raise HarnessError(f"--shots {text!r} names no number of shots")
    return values


# --------------------------------------------------------------------------------------------------------------
# Task configs: the shipped templates with the data folder filled in.


def mmlu_subjects(data: Path) -> list[str]:
    """The MMLU subjects present in ``data/mmlu/test`` (each must have its dev file)."""
    test_dir = data / "mmlu" / "test"
    subjects = sorted(p.name.removesuffix("_test.csv") for p in test_dir.glob("*_test.csv"))
    if not subjects:
        raise HarnessError(f"no MMLU test files (mmlu/test/<subject>_test.csv) under {data}; see MANIFEST.md")
    missing = [s for s in subjects if not (data / "mmlu" / "dev" / f"{s}_dev.csv").is_file()]
    if missing:
        raise HarnessError(f"MMLU dev files missing for {', '.join(missing)} under {data / 'mmlu' / 'dev'}")
    return subjects


REQUIRED_FILES = {
    "boolq": "boolq/boolq.jsonl",
    "csqa": "commonsenseqa/dev_rand_split.jsonl",
    "gsm8k": "gsm8k/test.jsonl",
}


def _yaml_path_text(path: Path) -> str:
    """``path`` escaped for a double-quoted YAML string."""
    return str(path).replace("\\", "\\\\").replace('"', '\\"')


def write_task_configs(target: Path, data: Path, tasks: Sequence[str] | None = None) -> Path:
    """Write the run-time task folder: utils.py plus each task's YAML(s) with ``__DATA_DIR__`` filled in."""
    tasks = list(tasks or PRESERVE_TASKS)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATE_DIR / "utils.py", target / "utils.py")
    root = _yaml_path_text(data)
    for name in tasks:
        task = PRESERVE_TASKS[name]
        if name == "mmlu":
            template = (TEMPLATE_DIR / MMLU_SUBJECT_TEMPLATE).read_text(encoding="utf-8")
            for subject in mmlu_subjects(data):
                text = (
                    template.replace("__SUBJECT_WORDS__", subject.replace("_", " "))
                    .replace("__SUBJECT__", subject)
                    .replace(DATA_DIR_PLACEHOLDER, root)
                )
                (target / f"harness_mmlu_{subject}.yaml").write_text(text, encoding="utf-8")
            shutil.copyfile(TEMPLATE_DIR / "harness_mmlu.yaml", target / "harness_mmlu.yaml")
            continue
        required = data / REQUIRED_FILES[name]
        if not required.is_file():
            raise HarnessError(f"{name} needs {required}, which does not exist; see MANIFEST.md in {data}")
        for template in task.templates:
            text = (TEMPLATE_DIR / template).read_text(encoding="utf-8").replace(DATA_DIR_PLACEHOLDER, root)
            (target / template).write_text(text, encoding="utf-8")
    return target


def template_hash(task: PreserveTask, shots: int, source: str = "local", subjects: Sequence[str] = ()) -> str:
    """Content hash of what defines the prompts: the template texts (not the machine-specific paths written into
    the run-time copies), utils.py, the MMLU subject list, the number of shots and the lm-eval version."""
    if source == "local":
        files = {name: (TEMPLATE_DIR / name).read_text(encoding="utf-8") for name in (*task.templates, "utils.py")}
    else:
        files = {"stock_task": task.stock_task}
    return content_hash(
        {"files": files, "subjects": list(subjects), "num_fewshot": shots, "lm_eval": lm_eval_version(), "source": source}
    )


# --------------------------------------------------------------------------------------------------------------
# The lm-eval TaskManager over the run-time configs.


@contextmanager
def task_manager(tasks: Sequence[str], data_dir: str | Path | None = None, source: str = "local"):
    """An lm-eval ``TaskManager`` for ``tasks`` (local: a temporary include folder with resolved paths)."""
    from lm_eval.tasks import TaskManager

    if source not in SOURCES:
        raise _unknown("task source", source, SOURCES)
    if source == "hub":
        from harness.hub import hub_online

        if not hub_online():
            raise NotAvailableOffline(
                "the stock lm-eval tasks download their datasets from the hub, which is unreachable; "
                "use the local tasks (--source local)"
            )
        yield TaskManager()
        return
    data = resolve_data_dir(data_dir)
    folder = Path(tempfile.mkdtemp(prefix="harness-lm-eval-tasks-"))
    try:
        write_task_configs(folder, data, tasks)
        yield TaskManager(include_path=str(folder), include_defaults=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _lm_eval_name(task: PreserveTask, source: str) -> str:
    return task.local_task if source == "local" else task.stock_task
