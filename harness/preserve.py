"""Preservation suites (SPRING Table 2) run through lm-evaluation-harness: MMLU, BoolQ, CommonsenseQA, GSM8K.

The paper's second claim is that SPRING keeps the backbone's general abilities (unplugged it *is* the base model)
while LoRA degrades them. These suites therefore run through lm-eval itself, not a re-implementation:

* **Tasks** are lm-eval task YAMLs shipped in ``tasks/lm_eval/`` (``harness_mmlu`` (a group of 57 subject
  tasks), ``harness_boolq``, ``harness_csqa``, ``harness_gsm8k``) that read the local raw files with
  ``dataset_path: json``/``csv``. lm-eval needs concrete ``data_files`` paths, so :func:`write_task_configs`
  copies the templates into a temporary include folder with ``__DATA_DIR__`` replaced by the resolved data folder
  (see ``tasks/lm_eval/utils.py`` for the few-shot carve-outs). With ``source="hub"`` the stock lm-eval tasks
  (``mmlu``, ``boolq``, ``commonsense_qa``, ``gsm8k``) are used instead; they need the hub.
* **Methods** enter lm-eval as models: :class:`PluggedHFLM`, an ``HFLM`` built from the already-loaded model
  object. With ``virtual_tokens=None`` it *is* ``HFLM`` (every call is delegated unchanged); with a ``[k, d]``
  tensor it splices the k virtual-token embeddings into ``inputs_embeds`` right before the evaluated document's
  prompt (see the class docstring for the exact position).
* **Results** go to the same :class:`~harness.store.Store` as every other cell: one cell per (task, shots), one
  row per evaluated document (``id = "<lm-eval task>/<doc_id>"``), keyed by model, method (with its checkpoint /
  virtual-token hash), the task templates, the number of shots and the lm-eval version. A complete cell is never
  recomputed (``force`` redoes it). lm-eval's own sqlite response cache (``use_cache``) is off by default: its
  request key ignores which weights or virtual tokens produced a response, and the store already caches whole
  cells. When asked for (``lm_eval_cache``), its file name carries the hash of the model identity and the full
  method spec (checkpoint / virtual-token hash included), so responses of different methods never mix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, NotAvailableOffline
from harness.paths import PROJECT_ROOT, data_dir as resolve_data_dir
from harness.spec import CellSpec, content_hash, example_ids_hash

TEMPLATE_DIR = PROJECT_ROOT / "tasks" / "lm_eval"
DATA_DIR_PLACEHOLDER = "__DATA_DIR__"
MMLU_SUBJECT_TEMPLATE = "_harness_mmlu_subject.yaml.tmpl"
# A virtual-token slot in a token-id list (never a vocabulary id); replaced by an embedding row in the forward.
VIRTUAL_TOKEN_ID = -1
METHODS = ("base", "lora", "spring")
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
        PreserveTask("mmlu", "harness_mmlu", "mmlu", ("harness_mmlu.yaml", MMLU_SUBJECT_TEMPLATE), (0, 5), 5,
                     "multiple_choice", ("acc",)),
        PreserveTask("boolq", "harness_boolq", "boolq", ("harness_boolq.yaml",), (0,), 10, "multiple_choice", ("acc",)),
        PreserveTask("csqa", "harness_csqa", "commonsense_qa", ("harness_csqa.yaml",), (0, 4), 10,
                     "multiple_choice", ("acc",)),
        PreserveTask("gsm8k", "harness_gsm8k", "gsm8k", ("harness_gsm8k.yaml",), (8,), 10, "generate_until",
                     ("exact_match", "exact_match_flexible")),
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
        raise HarnessError(f"no method given; choose from {', '.join(METHODS)}")
    for name in names:
        if name not in METHODS:
            raise _unknown("preservation method", name, METHODS)
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
                name, _, values = part.partition("=")
                name = TASK_ALIASES.get(name.strip().lower(), name.strip().lower())
                if name not in PRESERVE_TASKS:
                    raise _unknown("preservation task", name, PRESERVE_TASKS)
                if name not in shots:
                    raise HarnessError(f"--shots names {name!r}, which is not in --tasks ({', '.join(tasks)})")
                shots[name] = _int_list(values)
        else:
            values = _int_list(text)
            shots = {t: values for t in tasks}
    for name, values in shots.items():
        for value in values:
            if not 0 <= value <= PRESERVE_TASKS[name].max_shots:
                raise HarnessError(
                    f"{name} takes 0-{PRESERVE_TASKS[name].max_shots} shots (its few-shot pool), not {value}"
                )
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
# The lm-eval model: HFLM with optional virtual tokens.


def _hflm_class():
    from lm_eval.models.huggingface import HFLM

    return HFLM


def _make_plugged_class():
    import torch

    HFLM = _hflm_class()

    class PluggedHFLM(HFLM):
        """``HFLM`` over an already-loaded model, optionally with k virtual tokens (SPRING "plugged").

        ``virtual_tokens=None``: every call goes to ``HFLM`` unchanged, so scores are bit-identical to a plain
        ``HFLM(pretrained=model, tokenizer=tokenizer)`` ("unplugged" is the base model).

        ``virtual_tokens`` of shape ``[k, d]`` (d = the model's embedding width): the k rows are inserted as input
        embeddings at the start of the **final question segment**. lm-eval builds every context as
        ``description + exemplar_1 + "\\n\\n" + ... + exemplar_n + "\\n\\n" + doc_to_text(doc)``; the final question
        segment is the evaluated document's ``doc_to_text(doc)`` (its last occurrence in the context). So the
        virtual tokens sit after the task description and the few-shot exemplars (after BOS at 0-shot) and right
        before the evaluated document's own text, as SPRING places them between the retrieved passages and the
        question. Token-wise: the context is tokenized exactly as ``HFLM`` does, and the k slots go in at the
        token boundary at the question's first character, found with the tokenizer's character offsets (the
        ``"\\n\\n"`` before it may be split differently than the prefix alone would be, so the prefix is not
        re-tokenized). Where a token straddles that character (or the tokenizer has no offsets) the two segments
        are tokenized separately instead (counted in ``split_fallbacks``). Continuation tokens are unchanged and
        the virtual positions are never scored. A context longer than the window loses prefix tokens first (then
        the question's start), never the virtual tokens. Generation (GSM8K) passes ``inputs_embeds`` with the
        same splice to ``generate``.

        ``question_of(instance) -> str`` gives the evaluated document's prompt text; :meth:`bind_tasks` sets it
        from the lm-eval task objects (``task.doc_to_text(instance.doc)``).
        """

        def __init__(
            self,
            pretrained: Any,
            tokenizer: Any = None,
            virtual_tokens: torch.Tensor | None = None,
            question_of: Callable[[Any], str] | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(pretrained=pretrained, tokenizer=tokenizer, **kwargs)
            self.question_of = question_of
            self.split_fallbacks = 0
            self._gen_questions: dict[str, str] | None = None
            self.virtual_tokens = None
            if virtual_tokens is not None:
                embedding = self.model.get_input_embeddings()
                if virtual_tokens.ndim != 2 or virtual_tokens.shape[1] != embedding.weight.shape[1]:
                    raise ValueError(
                        f"virtual_tokens must be [k, {embedding.weight.shape[1]}], got {tuple(virtual_tokens.shape)}"
                    )
                self.virtual_tokens = virtual_tokens.detach().to(embedding.weight.device, embedding.weight.dtype)

        @property
        def plugged(self) -> bool:
            return self.virtual_tokens is not None

        def bind_tasks(self, tasks: Mapping[str, Any]) -> None:
            """Find each request's question through its lm-eval task object (``task.doc_to_text(doc)``)."""
            self.question_of = lambda instance: tasks[instance.task_name].doc_to_text(instance.doc)

        # ---- where the virtual tokens go ------------------------------------------------------------------

        def _question(self, instance: Any) -> str:
            if self.question_of is None:
                raise RuntimeError("PluggedHFLM with virtual tokens needs question_of (or bind_tasks) to be set")
            question = self.question_of(instance)
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"task {instance.task_name}: doc_to_text gave no question text ({question!r})")
            return question

        def plug(self, text: str, text_enc: list[int], question: str) -> list[int]:
            """``text_enc`` (the tokens of ``text``) with k ``VIRTUAL_TOKEN_ID`` slots inserted at the token
            boundary where the last occurrence of ``question`` starts (found through the tokenizer's character
            offsets; where no token boundary falls there, the two segments are tokenized separately)."""
            start = text.rfind(question.rstrip())
            if start < 0:
                raise ValueError(f"the question text does not occur in the context: {question[:80]!r}")
            slots = [VIRTUAL_TOKEN_ID] * len(self.virtual_tokens)
            n = self._boundary(text, text_enc, start)
            if n is not None:
                return text_enc[:n] + slots + text_enc[n:]
            self.split_fallbacks += 1
            return self.tok_encode(text[:start]) + slots + self.tok_encode(text[start:], add_special_tokens=False)

        def _boundary(self, text: str, text_enc: list[int], start: int) -> int | None:
            """Number of tokens of ``text_enc`` that end at or before character ``start`` (None: a token straddles
            it, or the tokenizer gives no offsets)."""
            try:
                encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            except (NotImplementedError, ValueError, TypeError):
                return None
            ids, offsets = list(encoding["input_ids"]), encoding["offset_mapping"]
            head = len(text_enc) - len(ids)  # special tokens (BOS) that tok_encode added in front
            if head < 0 or text_enc[head:] != ids:
                return None
            before = sum(1 for _, end in offsets if end <= start)
            if any(begin < start < end for begin, end in offsets) or any(end > start for _, end in offsets[:before]):
                return None
            return head + before

        def fit(self, tokens: list[int], budget: int) -> list[int]:
            """Left-truncate plugged ``tokens`` to ``budget`` without cutting the virtual slots: drop prefix
            tokens first, then the start of the question (lm-eval itself would cut the slots at 0-shot)."""
            drop = len(tokens) - budget
            if drop <= 0:
                return tokens
            start = tokens.index(VIRTUAL_TOKEN_ID)
            k = len(self.virtual_tokens)
            before, after = tokens[:start], tokens[start + k :]
            cut = min(drop, len(before))
            if drop - cut >= len(after):
                raise ValueError(f"max_length {self.max_length} leaves no room for the question after {k} virtual tokens")
            return before[cut:] + tokens[start : start + k] + after[drop - cut :]

        def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
            """Input embeddings of ``input_ids`` with each row's k virtual slots replaced by the k vectors."""
            slots = input_ids == VIRTUAL_TOKEN_ID
            embeds = self.model.get_input_embeddings()(input_ids.masked_fill(slots, 0))
            counts = slots.sum(dim=1)
            k = len(self.virtual_tokens)
            if bool(((counts != 0) & (counts != k)).any()):
                raise ValueError("the context was truncated into the virtual tokens; it exceeds max_length")
            rows = int((counts > 0).sum())
            if rows:
                embeds[slots] = self.virtual_tokens.repeat(rows, 1)
            return embeds

        # ---- loglikelihood ---------------------------------------------------------------------------------

        def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            if not self.plugged:
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
            new_requests = []
            for request in requests:
                context, continuation = request.args
                if context == "":
                    raise ValueError("plugged evaluation needs a non-empty context")
                context_enc, continuation_enc = self._encode_pair(context, continuation)
                context_enc = self.plug(context.rstrip(), context_enc, self._question(request))
                context_enc = self.fit(context_enc, self.max_length + 1 - len(continuation_enc))
                new_requests.append(((context, continuation), context_enc, continuation_enc))
            return self._loglikelihood_tokens(new_requests, disable_tqdm=disable_tqdm)

        def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
            if self.plugged:
                raise NotImplementedError("rolling loglikelihood (perplexity tasks) has no question to plug before")
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

        def _model_call(self, inps: torch.Tensor, attn_mask: Any = None, labels: Any = None) -> torch.Tensor:
            if not self.plugged or attn_mask is not None or not bool((inps == VIRTUAL_TOKEN_ID).any()):
                return super()._model_call(inps, attn_mask, labels)
            with torch.no_grad(), torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ):
                return self.model(inputs_embeds=self.embed(inps)).logits

        # ---- generation ------------------------------------------------------------------------------------

        def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
            if not self.plugged:
                return super().generate_until(requests, disable_tqdm=disable_tqdm)
            self._gen_questions = {request.args[0]: self._question(request) for request in requests}
            try:
                return super().generate_until(requests, disable_tqdm=disable_tqdm)
            finally:
                self._gen_questions = None

        def tok_batch_encode(
            self,
            strings: list[str],
            padding_side: str = "left",
            left_truncate_len: int | None = None,
            truncation: bool = False,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if self._gen_questions is None:
                return super().tok_batch_encode(strings, padding_side, left_truncate_len, truncation)
            rows = []
            for string in strings:
                encoded = self.plug(string, self.tok_encode(string), self._gen_questions[string])
                rows.append(self.fit(encoded, left_truncate_len) if left_truncate_len else encoded)
            width = max(map(len, rows))
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                if padding_side == "left":
                    ids[i, width - len(row):], mask[i, width - len(row):] = torch.tensor(row), 1
                else:
                    ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
            return ids, mask

        def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **kwargs: Any) -> Any:
            slots = context == VIRTUAL_TOKEN_ID
            if not self.plugged or not bool(slots.any()):
                return super()._model_generate(context, max_length, stop, **kwargs)
            with torch.no_grad():
                embeds = self.embed(context)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
            # generate() uses inputs_embeds for the prompt and returns input_ids + the new tokens, so lm-eval's
            # slicing of the continuation (by the context width) stays right.
            return super()._model_generate(
                context.masked_fill(slots, pad), max_length, stop, inputs_embeds=embeds, **kwargs
            )

    return PluggedHFLM


_PLUGGED_CLASS = None


def __getattr__(name: str) -> Any:  # PluggedHFLM is built lazily: importing lm-eval and torch takes seconds
    global _PLUGGED_CLASS
    if name == "PluggedHFLM":
        if _PLUGGED_CLASS is None:
            _PLUGGED_CLASS = _make_plugged_class()
        return _PLUGGED_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def virtual_tokens_hash(virtual_tokens: Any) -> str:
    """sha256 over the dtype, shape and bytes of a virtual-token tensor."""
    import torch

    tensor = virtual_tokens.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}|".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Methods: base now; LoRA and SPRING plug in through PRESERVE_MODEL_HOOKS.

# method name -> hook(loaded_model, store, **options) -> (model_for_lmeval, method_spec, virtual_tokens | None).
# ``options`` carry ``checkpoint`` (the --checkpoint path, when given) and, for spring, ``plugged``: the CLI calls
# the spring hook twice (plugged=False, then True). Expected returns: lora -> (merged model, {"name": "lora", ...,
# "checkpoint_hash": h}, None); spring plugged -> (loaded.model, {"name": "spring", "plugged": True, "tokens": k,
# "checkpoint_hash": h}, tensor [k, d]); spring unplugged -> (loaded.model, {"name": "spring", "plugged": False,
# "tokens": k, "checkpoint_hash": h}, None).
PreserveModelHook = Callable[..., tuple[Any, dict[str, Any], Any]]
def _spring_hook(loaded: Any, store: Any, **options: Any) -> tuple[Any, dict[str, Any], Any]:
    from harness.methods.trained import preserve_spring

    return preserve_spring(loaded, store, **options)


def _lora_hook(loaded: Any, store: Any, **options: Any) -> tuple[Any, dict[str, Any], Any]:
    from harness.methods.trained import preserve_lora

    return preserve_lora(loaded, store, **options)


PRESERVE_MODEL_HOOKS: dict[str, PreserveModelHook] = {"spring": _spring_hook, "lora": _lora_hook}


def require_method(method_name: str) -> None:
    """Raise the user error for a method ``harness preserve`` cannot evaluate (yet): unknown, or no hook."""
    if method_name not in METHODS:
        raise _unknown("preservation method", method_name, METHODS)
    if method_name != "base" and method_name not in PRESERVE_MODEL_HOOKS:
        raise HarnessError(
            f"method {method_name} for preserve needs a trained checkpoint; run `harness run --method {method_name}` first"
        )


def resolve_preserve_model(
    method_name: str, loaded_model: Any, store: Any = None, **options: Any
) -> tuple[Any, dict[str, Any], Any]:
    """(model object for lm-eval, method spec for the cell key, virtual tokens ``[k, d]`` or ``None``)."""
    require_method(method_name)
    if method_name == "base":
        return loaded_model.model, {"name": "base"}, None
    return PRESERVE_MODEL_HOOKS[method_name](loaded_model, store, **options)


# --------------------------------------------------------------------------------------------------------------
# Running lm-eval and writing cells.


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


def docs_hash(loaded: Mapping[str, Any], counts: Mapping[str, int]) -> str:
    """Hash of the evaluated documents' content, leaf by leaf: a data file corrected in place changes the key."""
    digest = hashlib.sha256()
    for leaf, count in counts.items():
        docs = loaded["tasks"][leaf].eval_docs
        for index in range(count):
            # default=str: documents may hold values JSON lacks (dates); their text form is stable.
            digest.update(json.dumps([leaf, docs[index]], sort_keys=True, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
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
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise HarnessError(f"--limit must be a positive integer, not {limit!r}")
    tasks = parse_tasks(list(tasks))
    if shots is None:
        shots_of = {t: PRESERVE_TASKS[t].default_shots for t in tasks}
    elif isinstance(shots, Mapping):
        shots_of = {t: tuple(shots.get(t, PRESERVE_TASKS[t].default_shots)) for t in tasks}
    else:
        shots_of = {t: tuple(shots) for t in tasks}
    parse_shots(";".join(f"{t}={','.join(map(str, v))}" for t, v in shots_of.items()), tasks)  # validates ranges
    method = dict(method_spec)
    if "name" not in method:
        raise ValueError("method_spec needs a 'name'")
    if virtual_tokens is not None:
        method.setdefault("plugged", True)
        method.setdefault("tokens", int(virtual_tokens.shape[0]))
        method["virtual_tokens_hash"] = virtual_tokens_hash(virtual_tokens)
        if method["tokens"] != int(virtual_tokens.shape[0]) or method["plugged"] is not True:
            raise ValueError(
                f"method_spec {method_spec} does not match virtual tokens of shape {tuple(virtual_tokens.shape)}"
            )

    import logging

    import lm_eval


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
    with _restore_level(lm_eval_logger, level), task_manager(tasks, data_dir, source) as manager:
        for name in tasks:
            task = PRESERVE_TASKS[name]
            for n_shots in shots_of[name]:
                loaded = manager.load([_lm_eval_name(task, source)])
                counts = doc_counts(loaded, limit)
                ids = [f"{leaf}/{doc_id}" for leaf, count in counts.items() for doc_id in range(count)]
                subjects = sorted(loaded["tasks"]) if name == "mmlu" else []
                first = loaded["tasks"][next(iter(counts))] if counts else next(iter(loaded["tasks"].values()))
                spec = CellSpec(
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
                    decoding={"harness": "lm-eval", "num_fewshot": n_shots, "fewshot_sampler": "first_n"
                              if source == "local" else "lm-eval default", "source": source},
                    scorer_version=f"lm-eval/{version}",
                    metrics=task.metrics,
                )
                provenance = {
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "limit": limit,
                    "batch_size": batch_size,
                    "preserve_task": name,
                    "lm_eval": version,
                }
                if store.is_complete(spec.key()) and not force:
                    say(f"{name} {n_shots}-shot {method['name']}: complete in the store ({len(ids)} docs), skipped")
                    records.append(store.load(spec.key()))
                    continue
                with store.writing(spec, provenance, force=force) as writer:
                    if writer is None:
                        records.append(store.load(spec.key()))
                        continue
                    if lm is None:
                        lm = _build_lm(model if model is not None else loaded_model.model, loaded_model.tokenizer,
                                       virtual_tokens, batch_size)
                    if getattr(lm, "plugged", False):
                        lm.bind_tasks(loaded["tasks"])
                    say(f"{name} {n_shots}-shot {method['name']}: evaluating {len(ids)} docs with lm-eval {version}")
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
                        use_cache=_cache_path(lm_eval_cache, model_identity, method),
                        tasks=evaluated,
                        num_fewshot=n_shots,
                        samples=samples,
                        log_samples=True,
                        bootstrap_iters=0,
                        task_manager=manager,
                    )
                    rows = _rows_from_samples(task, results["samples"], loaded)
                    if sorted(rows) != sorted(ids):
                        raise RuntimeError(f"{name}: lm-eval returned {len(rows)} documents, expected {len(ids)}")
                    done = set(writer.done_ids)
                    writer.append([rows[i] for i in ids if i not in done])
                    records.append(store.finish(spec, ids))
    return records


def _cache_path(folder: str | Path | None, model_identity: Mapping[str, Any], method: Mapping[str, Any]) -> str | None:
    """lm-eval's ``use_cache`` prefix (it appends ``_rank<r>.db``), keyed by model identity and method spec."""
    if folder is None:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return str(Path(folder) / f"lm-eval-{content_hash({'model': dict(model_identity), 'method': dict(method)})}")


@contextmanager
def _restore_level(logger: Any, level: int):
    try:
        yield
    finally:
        logger.setLevel(level)


def _build_lm(model: Any, tokenizer: Any, virtual_tokens: Any, batch_size: int | str) -> Any:
    import harness.preserve as this

    return this.PluggedHFLM(pretrained=model, tokenizer=tokenizer, virtual_tokens=virtual_tokens, batch_size=batch_size)


# --------------------------------------------------------------------------------------------------------------
# The Table 2 layout.


def preservation_label(method: Mapping[str, Any]) -> str:
    """``base``, ``lora``, ``spring (unplugged)``, ``spring (plugged, k=5)``."""
    label = str(method["name"])
    if "plugged" in method:
        if method["plugged"]:
            tokens = method.get("tokens")
            label += f" (plugged, k={tokens})" if tokens is not None else " (plugged)"
        else:
            label += " (unplugged)"
    return label


def _method_rank(label: str) -> tuple[int, str]:
    for i, prefix in enumerate(("base", "lora", "spring (unplugged)", "spring")):
        if label.startswith(prefix):
            return i, label
    return len(METHODS) + 1, label


def preservation_cells(store: Any, model: str | None = None) -> list[Any]:
    """The store's complete preservation cells (one backbone: ``model`` or the only one present)."""
    datasets = {t.local_task: t for t in PRESERVE_TASKS.values()} | {t.stock_task: t for t in PRESERVE_TASKS.values()}
    cells = [c for c in store.cells() if c.spec.dataset in datasets and c.spec.decoding.get("harness") == "lm-eval"]
    if model is not None:
        cells = [c for c in cells if c.spec.model.get("id") == model]
    if not cells:
        raise HarnessError("the result store holds no preservation cell" + (f" for model {model}" if model else "")
                           + "; run `harness preserve` first")
    models = sorted({c.spec.model.get("id", "?") for c in cells})
    if len(models) > 1:
        raise HarnessError(
            f"the store holds preservation cells of several backbones ({', '.join(models)}); pick one with --model"
        )
    return cells


def preservation_table(store: Any, model: str | None = None) -> Any:
    """Table 2 layout: rows ``<task> <k>-shot``, columns each method's score (x100) and, for every method but base,
    ``Δ <method>`` = method - base on the same documents. Per (task, shots) the document slice (example ids) held
    by most methods is shown (the larger one on a tie); cells of other slices are left out. ``n`` = documents."""
    import pandas as pd

    cells = preservation_cells(store, model)
    by_row: dict[tuple[str, int], dict[str, list[Any]]] = {}
    for cell in cells:
        name = next(t.name for t in PRESERVE_TASKS.values() if cell.spec.dataset in (t.local_task, t.stock_task))
        key = (name, int(cell.spec.decoding.get("num_fewshot", 0)))
        by_row.setdefault(key, {}).setdefault(cell.spec.example_ids_hash, []).append(cell)
    task_order = list(PRESERVE_TASKS)
    table: dict[str, dict[str, float]] = {}
    labels: set[str] = set()
    n_docs: dict[str, int] = {}
    for (name, n_shots) in sorted(by_row, key=lambda k: (task_order.index(k[0]), k[1])):
        slices = by_row[(name, n_shots)]
        chosen = max(slices.values(), key=lambda group: (len({preservation_label(c.spec.method) for c in group}),
                                                         group[0].spec.n_examples))
        row_label = f"{name} {n_shots}-shot"
        metric = PRESERVE_TASKS[name].primary_metric
        row: dict[str, float] = {}
        for cell in sorted(chosen, key=lambda c: c.provenance.get("created", "")):  # newest wins on duplicates
            label = preservation_label(cell.spec.method)
            row[label] = 100.0 * cell.metrics["metrics"][metric]["mean"]
            labels.add(label)
        table[row_label] = row
        n_docs[row_label] = chosen[0].spec.n_examples
    methods = sorted(labels, key=_method_rank)
    columns: list[str] = []
    for label in methods:
        columns.append(label)
        if label != "base" and "base" in labels:
            columns.append(f"Δ {label}")
    frame = pd.DataFrame(index=list(table), columns=["n", *columns], dtype=float)
    frame.index.name = "task"
    for row_label, row in table.items():
        frame.loc[row_label, "n"] = n_docs[row_label]
        for label, value in row.items():
            frame.loc[row_label, label] = value
            if label != "base" and "base" in row:
                frame.loc[row_label, f"Δ {label}"] = value - row["base"]
    frame["n"] = frame["n"].astype(int)
    return frame


def render_preservation(frame: Any, fmt: str = "md") -> str:
    """The table as ``md``, ``csv`` or ``json`` text."""
    if fmt == "md":
        shown = frame.astype(object).where(frame.notna(), None)
        floatfmt = ("", *(".0f" if c == "n" else ("+.2f" if str(c).startswith("Δ") else ".2f") for c in frame.columns))
        return shown.to_markdown(floatfmt=floatfmt, missingval="-") + "\n"
    if fmt == "csv":
        return frame.to_csv(float_format="%.4f")
    if fmt == "json":
        return frame.reset_index().to_json(orient="records", indent=2, force_ascii=False) + "\n"
    raise HarnessError(f"unknown format {fmt!r}; use table, md, csv or json")


__all__ = [
    "PRESERVE_MODEL_HOOKS",
    "PRESERVE_TASKS",
    "PluggedHFLM",
    "parse_methods",
    "parse_shots",
    "parse_tasks",
    "preservation_table",
    "render_preservation",
    "resolve_preserve_model",
    "run_preservation",
    "write_task_configs",
]
