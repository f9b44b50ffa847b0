"""Document processing for the harness's local lm-eval preservation tasks (``harness_*``).

lm-eval loads this file by path (``!function utils.<name>`` in the task YAMLs), so it must not import the harness.

Few-shot carve-outs. MMLU has its own dev files (5 exemplars per subject). BoolQ, CommonsenseQA and GSM8K ship
one file each here, so the first ``FEWSHOT_POOL`` rows of that file are the few-shot pool (``process_*_fewshot``)
and are never evaluated (``process_*``): the evaluated documents are rows ``FEWSHOT_POOL..end`` of the file,
whatever the number of shots, so 0-shot and k-shot scores cover the same documents. The exemplars are taken with
lm-eval's ``first_n`` sampler, i.e. rows 0..k-1 of the file, identical for every evaluated document.

Every document gets ``row``: its 0-based row index in the raw file (the lm-eval ``doc_id`` is the index among
evaluated documents, so ``row = doc_id + FEWSHOT_POOL`` for the carved files and ``row = doc_id`` for MMLU).
"""

from __future__ import annotations

FEWSHOT_POOL = 10  # rows 0..9 of the BoolQ / CSQA / GSM8K files: few-shot exemplars, never evaluated
MMLU_LETTERS = ("A", "B", "C", "D")


def _with_rows(dataset, start, stop=None):
    stop = len(dataset) if stop is None else min(stop, len(dataset))
    return dataset.select(range(start, stop)).map(
        lambda batch, indices: {"row": [start + i for i in indices]}, with_indices=True, batched=True
    )


# ---- MMLU: test file evaluated, dev file = few-shot (lm-eval's own mmlu protocol) ---------------------------------


def process_mmlu(dataset):
    """CSV rows {question, choice0..3, answer} -> {question, choices: [4 str], answer: int, row}."""

    def convert(batch, indices):
        return {
            "question": [str(q) for q in batch["question"]],
            "choices": [[str(c) for c in choices] for choices in zip(*(batch[f"choice{i}"] for i in range(4)))],
            "answer": [int(a) for a in batch["answer"]],
            "row": list(indices),
        }

    return dataset.map(convert, with_indices=True, batched=True, remove_columns=dataset.column_names)


# ---- BoolQ: {query: "Passage: ...\nQuestion: ...?", choices: ["no", "yes"], gold} ------------------------------------


def process_boolq(dataset):
    return _with_rows(dataset, FEWSHOT_POOL)


def process_boolq_fewshot(dataset):
    return _with_rows(dataset, 0, FEWSHOT_POOL)


# ---- CommonsenseQA: {question, choices: {label, text}, answerKey} ------------------------------------------------------


def _csqa(dataset, start, stop=None):
    dataset = _with_rows(dataset, start, stop)
    return dataset.map(
        lambda batch: {
            "gold": [c["label"].index(key.strip()) for c, key in zip(batch["choices"], batch["answerKey"])]
        },
        batched=True,
    )


def process_csqa(dataset):
    return _csqa(dataset, FEWSHOT_POOL)


def process_csqa_fewshot(dataset):
    return _csqa(dataset, 0, FEWSHOT_POOL)


# ---- GSM8K: {question, answer: "...#### <number>"} --------------------------------------------------------------------


def process_gsm8k(dataset):
    return _with_rows(dataset, FEWSHOT_POOL)


def process_gsm8k_fewshot(dataset):
    return _with_rows(dataset, 0, FEWSHOT_POOL)
