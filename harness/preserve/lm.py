"""The lm-eval model: ``HFLM`` over the already-loaded model, with optional virtual tokens (SPRING "plugged").

* **Methods** enter lm-eval as models: :class:`PluggedHFLM`, an ``HFLM`` built from the already-loaded model
  object. With ``virtual_tokens=None`` it *is* ``HFLM`` (every call is delegated unchanged); with a ``[k, d]``
  tensor it splices the k virtual-token embeddings into ``inputs_embeds`` right before the evaluated document's
  prompt (see the class docstring for the exact position).

This module imports lm-eval and torch at its top (seconds); :mod:`harness.preserve` imports it only when a
preservation run evaluates (or :class:`PluggedHFLM` is asked for), so the CLI stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM

# A virtual-token slot in a token-id list (never a vocabulary id); replaced by an embedding row in the forward.
VIRTUAL_TOKEN_ID = -1
CHUNK = 64  # requests per progress report (a multiple of 4 and 2: whole MMLU and BoolQ documents)


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
        # Set by the run: called with the fraction of a call's requests just answered (harness's progress bar,
        # in place of lm-eval's own per-call bar).
        self.report: Callable[[float], None] | None = None
        self.split_fallbacks = 0
        self._gen_questions: dict[str, str] | None = None
        self.virtual_tokens: torch.Tensor | None = None
        if virtual_tokens is not None:
            embedding = self.model.get_input_embeddings()
            if virtual_tokens.ndim != 2 or virtual_tokens.shape[1] != embedding.weight.shape[1]:
                raise ValueError(f"virtual_tokens must be [k, {embedding.weight.shape[1]}], got {tuple(virtual_tokens.shape)}")
            self.virtual_tokens = virtual_tokens.detach().to(embedding.weight.device, embedding.weight.dtype)

    @property
    def plugged(self) -> bool:
        return self.virtual_tokens is not None

    def _tokens(self) -> torch.Tensor:
        """The plugged virtual tokens (only called on the plugged path)."""
        if self.virtual_tokens is None:
            raise RuntimeError("PluggedHFLM has no virtual tokens: it runs unplugged")
        return self.virtual_tokens

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
        slots = [VIRTUAL_TOKEN_ID] * len(self._tokens())
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
        k = len(self._tokens())
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
        k = len(self._tokens())
        if bool(((counts != 0) & (counts != k)).any()):
            raise ValueError("the context was truncated into the virtual tokens; it exceeds max_length")
        rows = int((counts > 0).sum())
        if rows:
            embeds[slots] = self._tokens().repeat(rows, 1)
        return embeds

    # ---- loglikelihood ---------------------------------------------------------------------------------

    def _in_chunks(self, answer: Callable[..., list], requests: list, disable_tqdm: bool) -> list:
        """``answer(requests)`` in chunks of :data:`CHUNK` requests, reporting after each (with ``report`` set).

        Requests arrive in document order and a chunk holds whole documents' requests (4 per MMLU document, 2 per
        BoolQ one), so lm-eval's reuse of a context's logits across its continuations is kept; at batch size 1
        the scores are those of one call."""
        if self.report is None:
            return answer(requests, disable_tqdm=disable_tqdm)
        answers: list = []
        for start in range(0, len(requests), CHUNK):
            chunk = requests[start : start + CHUNK]
            answers.extend(answer(chunk, disable_tqdm=True))
            self.report(len(chunk) / len(requests))
        return answers

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self._in_chunks(self._loglikelihood, requests, disable_tqdm)

    def _loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
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
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            return self.model(inputs_embeds=self.embed(inps)).logits

    # ---- generation ------------------------------------------------------------------------------------

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        return self._in_chunks(self._generate_until, requests, disable_tqdm)

    def _generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
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
                ids[i, width - len(row) :], mask[i, width - len(row) :] = torch.tensor(row), 1
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
        return super()._model_generate(context.masked_fill(slots, pad), max_length, stop, inputs_embeds=embeds, **kwargs)
