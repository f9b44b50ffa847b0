"""A preservation run: (task, shots) -> cell spec -> lm-eval -> per-document rows in the result store.

* **Results** go to the same :class:`~harness.store.Store` as every other cell: one cell per (task, shots), one
  row per evaluated document (``id = "<lm-eval task>/<doc_id>"``), keyed by model, method (with its checkpoint /
  virtual-token hash), the task templates, the number of shots and the lm-eval version. A complete cell is never
  recomputed (``force`` redoes it). lm-eval's own sqlite response cache (``use_cache``) is off by default: its
  request key ignores which weights or virtual tokens produced a response, and the store already caches whole
  cells. When asked for (``lm_eval_cache``), its file name carries the hash of the model identity and the full
  method spec (checkpoint / virtual-token hash included), so responses of different methods never mix.

lm-eval (and, through :mod:`harness.preserve.lm`, torch) is imported only once a run evaluates.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.invocation import command_line
from harness.preserve.table import preservation_label
from harness.preserve.tasks import (
    FILTER_METRICS,
    PRESERVE_TASKS,
    PreserveTask,
    _lm_eval_name,
    lm_eval_version,
    parse_shots,
    parse_tasks,
    task_manager,
    template_hash,
)
from harness.spec import CellSpec, content_hash, example_ids_hash

# ---- hashes for the key, documents per cell, rows from lm-eval's samples --------------------------------------


def virtual_tokens_hash(virtual_tokens: Any) -> str:
    """sha256 over the dtype, shape and bytes of a virtual-token tensor."""
    import torch

    tensor = virtual_tokens.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def docs_hash(loaded: Mapping[str, Any], counts: Mapping[str, int]) -> str:
    """Hash of the evaluated documents' content, leaf by leaf: a data file corrected in place changes the key."""
    digest = hashlib.sha256()
    for leaf, count in counts.items():
        docs = loaded["tasks"][leaf].eval_docs
        for index in range(count):
            # default=str: documents may hold values JSON lacks (dates); their text form is stable.
            digest.update(
                json.dumps([leaf, docs[index]], sort_keys=True, ensure_ascii=False, default=str).encode("utf-8") + b"\n"
            )
    return digest.hexdigest()[:20]


def doc_counts(loaded: Mapping[str, Any], limit: int | None) -> dict[str, int]:
    """How many documents (a prefix of each leaf task's documents) to evaluate per leaf task, leaves in name order.

    ``limit`` is a total per preservation task: a single task evaluates its first ``limit`` documents (lm-eval's
    ``--limit``); a group (MMLU) spreads them round-robin over its subjects in name order (the first document of
    every subject, then the second, ...), so ``57 * m`` equals lm-eval's per-subject ``--limit m``.
    """
    sizes = {name: len(loaded["tasks"][name].eval_docs) for name in sorted(loaded["tasks"])}
    if limit is None:
        return sizes
    counts = dict.fromkeys(sizes, 0)
    remaining = limit
    while remaining > 0 and any(counts[name] < sizes[name] for name in sizes):
        for name in sizes:
            if remaining > 0 and counts[name] < sizes[name]:
                counts[name] += 1
                remaining -= 1
    return {name: count for name, count in counts.items() if count > 0}


def _rows_from_samples(task: PreserveTask, samples: Mapping[str, list[dict]], loaded: Mapping[str, Any]) -> dict[str, dict]:
    """lm-eval's logged samples -> our per-document rows, by id."""
    rows: dict[str, dict] = {}
    for leaf, entries in samples.items():
        leaf_task = loaded["tasks"][leaf]
        for sample in entries:
            row_id = f"{leaf}/{sample['doc_id']}"
            doc = sample["doc"]
            if task.output_type == "multiple_choice":
                choices = leaf_task.doc_to_choice(doc)
                scores = [float(r[0]) for r in sample["filtered_resps"]]
                gold = sample["target"]
                rows[row_id] = {
                    "id": row_id,
                    "task": leaf,
                    "doc_id": int(sample["doc_id"]),
                    "row": doc.get("row"),
                    "prediction": choices[max(range(len(scores)), key=scores.__getitem__)],
                    "target": choices[gold] if isinstance(gold, int) else gold,
                    "loglikelihoods": scores,
                    "metrics": {"acc": float(sample["acc"])},
                }
            else:
                metric = FILTER_METRICS.get(sample.get("filter", ""))
                if metric is None:
                    continue
                row = rows.setdefault(
                    row_id,
                    {
                        "id": row_id,
                        "task": leaf,
                        "doc_id": int(sample["doc_id"]),
                        "row": doc.get("row"),
                        "generation": sample["resps"][0][0],
                        "target": str(sample["target"]).split("####")[-1].strip(),
                        "metrics": {},
                    },
                )
                if metric == "exact_match":
                    row["prediction"] = sample["filtered_resps"][0]
                else:
                    row["prediction_flexible"] = sample["filtered_resps"][0]
                row["metrics"][metric] = float(sample["exact_match"])
    return rows


# ---- the run --------------------------------------------------------------------------------------------------


def run_preservation(
    loaded_model: Any,
    method_spec: Mapping[str, Any],
    tasks: Sequence[str],
    shots: Mapping[str, Sequence[int]] | Sequence[int] | None,
    limit: int | None,
    store: Any,
    virtual_tokens: Any = None,
    force: bool = False,
    *,
    model: Any = None,
    batch_size: int | str = 1,
    data_dir: str | Path | None = None,
    source: str = "local",
    progress: Callable[[str], None] | None = None,
    lm_eval_cache: str | Path | None = None,
    tracker: Any = None,
    quiet: bool = False,
) -> list[Any]:
    """Run lm-eval once per (task, shots) and store one cell each; complete cells are read back, not re-run.

    ``loaded_model`` is a :class:`harness.models.LoadedModel` (identity, tokenizer, and the model unless
    ``model`` overrides it, e.g. a merged LoRA model). ``method_spec`` goes into the cell key as it is, plus the
    hash of ``virtual_tokens`` when given. ``shots``: a mapping task -> shots, one list for all tasks, or ``None``
    for the paper's defaults. ``limit``: N documents per task in total (MMLU: spread round-robin over its
    subjects, see :func:`doc_counts`).
    ``batch_size`` is not part of the key. ``lm_eval_cache``: a folder for lm-eval's sqlite response cache
    (off by default; the store already skips finished cells); its file name carries the hash of the model identity
    and the method spec, so responses of different weights / checkpoints / virtual tokens never mix.
    ``tracker``: an object with ``start(label, documents)``, ``advance(documents)`` and ``finish()`` that follows
    each evaluated cell; ``quiet`` silences the datasets and lm-eval progress bars (the tracker replaces them).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise HarnessError(f"--limit must be a positive integer, not {limit!r}")
    tasks = parse_tasks(list(tasks))
    shots_of = _shots_of(tasks, shots)
    method = _method_key(method_spec, virtual_tokens)

    from harness.store import Store

    store = store if isinstance(store, Store) else Store(store)
    say = progress or (lambda _message: None)
    version = lm_eval_version()
    model_identity = {"id": loaded_model.model_id, "weights_hash": loaded_model.weights_hash, "dtype": loaded_model.dtype}
    lm = None
    records = []
    lm_eval_logger = logging.getLogger("lm_eval")
    level = lm_eval_logger.level
    lm_eval_logger.setLevel(logging.ERROR)  # its per-task warnings (num_fewshot overrides, ...) are noise here
    with _restore_level(lm_eval_logger, level), _third_party_bars(off=quiet), task_manager(tasks, data_dir, source) as manager:
        for name in tasks:
            task = PRESERVE_TASKS[name]
            for n_shots in shots_of[name]:
                loaded = manager.load([_lm_eval_name(task, source)])
                counts = doc_counts(loaded, limit)
                ids = [f"{leaf}/{doc_id}" for leaf, count in counts.items() for doc_id in range(count)]
                spec = _cell_spec(task, n_shots, source, loaded, counts, ids, model_identity, method, version)
                provenance = _provenance(name, limit, batch_size, version)
                if store.is_complete(spec.key()) and not force:
                    say(f"{name} {n_shots}-shot {method['name']}: complete in the store ({len(ids)} docs), skipped")
                    records.append(store.load(spec.key()))
                    continue
                with store.writing(spec, provenance, force=force) as writer:
                    if writer is None:
                        records.append(store.load(spec.key()))
                        continue
                    if lm is None:
                        lm = _build_lm(
                            model if model is not None else loaded_model.model, loaded_model.tokenizer, virtual_tokens, batch_size
                        )
                    if getattr(lm, "plugged", False):
                        lm.bind_tasks(loaded["tasks"])
                    say(f"{name} {n_shots}-shot {method['name']}: evaluating {len(ids)} docs with lm-eval {version}")
                    if tracker is not None:
                        tracker.start(f"{name} {n_shots}-shot {preservation_label(method)}", len(ids))
                        lm.report = lambda fraction, n=len(ids): tracker.advance(fraction * n)
                    samples = _evaluate(
                        lm,
                        manager,
                        task,
                        source,
                        loaded,
                        counts,
                        limit,
                        n_shots,
                        _cache_path(lm_eval_cache, model_identity, method),
                    )
                    if tracker is not None:
                        tracker.finish()
                    rows = _rows_from_samples(task, samples, loaded)
                    if sorted(rows) != sorted(ids):
                        raise RuntimeError(f"{name}: lm-eval returned {len(rows)} documents, expected {len(ids)}")
                    done = set(writer.done_ids)
                    writer.append([rows[i] for i in ids if i not in done])
                    records.append(store.finish(spec, ids))
    return records


# ---- the steps of a run ---------------------------------------------------------------------------------------


def _shots_of(tasks: Sequence[str], shots: Mapping[str, Sequence[int]] | Sequence[int] | None) -> dict[str, tuple[int, ...]]:
    """``run_preservation``'s ``shots`` argument as shots per task, each checked against the task's few-shot pool."""
    if shots is None:
        shots_of = {t: PRESERVE_TASKS[t].default_shots for t in tasks}
    elif isinstance(shots, Mapping):
        shots_of = {t: tuple(shots.get(t, PRESERVE_TASKS[t].default_shots)) for t in tasks}
    else:
        shots_of = {t: tuple(shots) for t in tasks}
    parse_shots(";".join(f"{t}={','.join(map(str, v))}" for t, v in shots_of.items()), tasks)  # validates ranges
    return shots_of


def _method_key(method_spec: Mapping[str, Any], virtual_tokens: Any) -> dict[str, Any]:
    """The method part of the cell key: ``method_spec`` plus, with virtual tokens, ``plugged``, ``tokens`` and
    their hash (a spec that contradicts the tensor is refused)."""
    method = dict(method_spec)
    if "name" not in method:
        raise ValueError("method_spec needs a 'name'")
    if virtual_tokens is not None:
        method.setdefault("plugged", True)
        method.setdefault("tokens", int(virtual_tokens.shape[0]))
        method["virtual_tokens_hash"] = virtual_tokens_hash(virtual_tokens)
        if method["tokens"] != int(virtual_tokens.shape[0]) or method["plugged"] is not True:
            raise ValueError(f"method_spec {method_spec} does not match virtual tokens of shape {tuple(virtual_tokens.shape)}")
    return method


def _cell_spec(
    task: PreserveTask,
    n_shots: int,
    source: str,
    loaded: Mapping[str, Any],
    counts: Mapping[str, int],
    ids: Sequence[str],
    model_identity: Mapping[str, Any],
    method: Mapping[str, Any],
    version: str,
) -> CellSpec:
    """The key of one (task, shots) cell: the documents (ids and content), model, method, templates and lm-eval."""
    subjects = sorted(loaded["tasks"]) if task.name == "mmlu" else []
    first = loaded["tasks"][next(iter(counts))] if counts else next(iter(loaded["tasks"].values()))
    return CellSpec(
        dataset=_lm_eval_name(task, source),
        split=first.config.test_split or first.config.validation_split or "test",
        example_ids_hash=example_ids_hash(ids),
        examples_hash=docs_hash(loaded, counts),
        n_examples=len(ids),
        retriever={"name": "none"},
        passages=0,
        model=model_identity,
        method=method,
        template_hash=template_hash(task, n_shots, source, subjects),
        decoding={
            "harness": "lm-eval",
            "num_fewshot": n_shots,
            "fewshot_sampler": "first_n" if source == "local" else "lm-eval default",
            "source": source,
        },
        scorer_version=f"lm-eval/{version}",
        metrics=task.metrics,
    )


def _provenance(name: str, limit: int | None, batch_size: int | str, version: str) -> dict[str, Any]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "limit": limit,
        "batch_size": batch_size,
        "preserve_task": name,
        "lm_eval": version,
        "command": command_line(),
    }


def _evaluate(
    lm: Any,
    manager: Any,
    task: PreserveTask,
    source: str,
    loaded: Mapping[str, Any],
    counts: Mapping[str, int],
    limit: int | None,
    n_shots: int,
    use_cache: str | None,
) -> Mapping[str, list[dict]]:
    """One ``lm_eval.simple_evaluate`` call for one cell; lm-eval's logged samples per leaf task."""
    import lm_eval

    if limit is None:  # the whole task (or group), as lm-eval would run it
        lm_eval_name = _lm_eval_name(task, source)
        groups = loaded["groups"]
        evaluated = [groups[lm_eval_name] if lm_eval_name in groups else loaded["tasks"][lm_eval_name]]
        samples = None
    else:  # the chosen prefix of each leaf task (lm-eval's `samples`; doc ids stay the same)
        evaluated = [loaded["tasks"][leaf] for leaf in counts]
        samples = {leaf: list(range(count)) for leaf, count in counts.items()}
    results = lm_eval.simple_evaluate(
        model=lm,
        use_cache=use_cache,
        tasks=evaluated,
        num_fewshot=n_shots,
        samples=samples,
        log_samples=True,
        bootstrap_iters=0,
        task_manager=manager,
    )
    return results["samples"]


def _build_lm(model: Any, tokenizer: Any, virtual_tokens: Any, batch_size: int | str) -> Any:
    from harness.preserve.lm import PluggedHFLM  # lm-eval and torch: only once a cell is evaluated

    return PluggedHFLM(pretrained=model, tokenizer=tokenizer, virtual_tokens=virtual_tokens, batch_size=batch_size)


def _cache_path(folder: str | Path | None, model_identity: Mapping[str, Any], method: Mapping[str, Any]) -> str | None:
    """lm-eval's ``use_cache`` prefix (it appends ``_rank<r>.db``), keyed by model identity and method spec."""
    if folder is None:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return str(Path(folder) / f"lm-eval-{content_hash({'model': dict(model_identity), 'method': dict(method)})}")


@contextmanager
def _third_party_bars(off: bool):
    """With ``off``: no `datasets` bars ("Generating split", "Map"), no lm-eval request-building bar and no git
    error from lm-eval's commit lookup."""
    if not off:
        yield
        return
    import datasets
    import lm_eval.api.task as lm_eval_task
    import lm_eval.evaluator as lm_eval_evaluator

    were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    bar = lm_eval_task.tqdm
    lm_eval_task.tqdm = lambda iterable, *args, **kwargs: iterable  # the loop over documents
    # lm-eval runs `git describe` in the working folder for a results field harness does not keep; outside a git
    # checkout its "fatal: not a git repository" would reach the terminal.
    git_hash = lm_eval_evaluator.get_git_commit_hash
    lm_eval_evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        lm_eval_evaluator.get_git_commit_hash = git_hash
        lm_eval_task.tqdm = bar
        if were_on:
            datasets.enable_progress_bars()


@contextmanager
def _restore_level(logger: Any, level: int):
    try:
        yield
    finally:
        logger.setLevel(level)
