"""Preservation suites (SPRING Table 2) run through lm-evaluation-harness: MMLU, BoolQ, CommonsenseQA, GSM8K.

The paper's second claim is that SPRING keeps the backbone's general abilities (unplugged it *is* the base model)
while LoRA degrades them. These suites therefore run through lm-eval itself, not a re-implementation:

* :mod:`~harness.preserve.tasks`: the task catalogue (lm-eval task YAMLs in ``tasks/lm_eval/``), argument parsing,
  the run-time task configs and their template hash.
* :mod:`~harness.preserve.models`: method name -> (model for lm-eval, method spec, virtual tokens).
* :mod:`~harness.preserve.lm`: :class:`PluggedHFLM`, lm-eval's ``HFLM`` with optional virtual tokens.
* :mod:`~harness.preserve.run`: :func:`run_preservation`, one store cell per (task, shots).
* :mod:`~harness.preserve.table`: the Table 2 layout from the store.

Importing this package imports neither lm-eval nor torch; :mod:`~harness.preserve.lm` is loaded when a run
evaluates; import :class:`~harness.preserve.lm.PluggedHFLM` from there.
"""

from __future__ import annotations

from harness.preserve.models import require_method, resolve_preserve_model
from harness.preserve.run import doc_counts, docs_hash, run_preservation, virtual_tokens_hash
from harness.preserve.table import (
    preservation_cells,
    preservation_label,
    preservation_table,
    render_preservation,
    with_intervals_as_text,
)
from harness.preserve.tasks import (
    DATA_DIR_PLACEHOLDER,
    FILTER_METRICS,
    MMLU_SUBJECT_TEMPLATE,
    PRESERVE_TASKS,
    REQUIRED_FILES,
    SOURCES,
    TASK_ALIASES,
    TEMPLATE_DIR,
    PreserveTask,
    lm_eval_version,
    mmlu_subjects,
    parse_methods,
    parse_shots,
    parse_tasks,
    preserve_methods,
    task_manager,
    template_hash,
    write_task_configs,
)

__all__ = [
    "DATA_DIR_PLACEHOLDER",
    "FILTER_METRICS",
    "MMLU_SUBJECT_TEMPLATE",
    "PRESERVE_TASKS",
    "REQUIRED_FILES",
    "SOURCES",
    "TASK_ALIASES",
    "TEMPLATE_DIR",
    "PreserveTask",
    "doc_counts",
    "docs_hash",
    "lm_eval_version",
    "mmlu_subjects",
    "parse_methods",
    "parse_shots",
    "parse_tasks",
    "preservation_cells",
    "preservation_label",
    "preservation_table",
    "preserve_methods",
    "render_preservation",
    "require_method",
    "resolve_preserve_model",
    "run_preservation",
    "task_manager",
    "template_hash",
    "virtual_tokens_hash",
    "with_intervals_as_text",
    "write_task_configs",
]
