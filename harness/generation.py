"""The generation engine: batches of segment lists -> greedy answers, identical for every method.

One path for all methods: embed each segment (token ids through the frozen input embedding, embedding rows as
they are), left-pad the batch, run one prefill with a KV cache, then decode greedily one token at a time.

* Batches are formed from inputs sorted by length (longest first), so padding stays small; results come back in
  input order and do not depend on the batch size (tested).
* Stop rules: EOS, or a newline once the answer has started (a newline before any visible text is skipped over,
  matching :func:`postprocess`, which strips before cutting at the first newline), or ``max_new_tokens``.
* Rows that finish are dropped from the batch and the cache, so one long answer does not slow the rest.
* Prefix reuse: :meth:`HFBackend.prefill` computes the KV cache of shared prefixes (the passages block) once;
  :meth:`HFBackend.generate` continues any number of suffixes from selected rows of it. Inputs that share a
  passages block can also be grouped automatically (``reuse_prefix=True``).

The :class:`Backend` protocol is the seam for other engines (e.g. vLLM with ``enable_prompt_embeds``): methods
only build segments and never touch the model.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from harness.models import LoadedModel, release_memory
from harness.segments import (
    CUT_VERSION,
    PASSAGE_RESERVE,
    EmbeddingSegment,
    Segment,
    TokenSegment,
    fit_input,
    input_length,
    split_after_passages,
    truncate,
)

# Bump when postprocess() or the stop rules change: it is part of every decoding spec.
POSTPROCESS_VERSION = 1
_LEADING_ANSWER = re.compile(r"^answer\s*:", flags=re.IGNORECASE)


def postprocess(text: str) -> str:
    """The answer in a raw generation: strip, cut at the first newline, drop a leading ``Answer:``, strip."""
    text = text.strip().split("\n", 1)[0]
    return _LEADING_ANSWER.sub("", text, count=1).strip()


@dataclass(frozen=True)
class DecodingConfig:
    """How answers are decoded. ``spec()`` goes into result keys; ``batch_size`` does not change results."""

    max_new_tokens: int = 32
    stop_at_newline: bool = True
    max_input_tokens: int | None = None  # None: the model's context length minus max_new_tokens
    batch_size: int = 8

    def spec(self) -> dict[str, Any]:
        return {
            "strategy": "greedy",
            "max_new_tokens": self.max_new_tokens,
            "stop_at_newline": self.stop_at_newline,
            "max_input_tokens": self.max_input_tokens,
            # Under a cut, the question's passages get max_input_tokens - passage_reserve tokens (segments.fit_input).
            **({"passage_reserve": PASSAGE_RESERVE, "cut_version": CUT_VERSION} if self.max_input_tokens else {}),
            "postprocess_version": POSTPROCESS_VERSION,
        }


@dataclass(frozen=True)
class Generation:
    """One decoded answer: ``prediction`` (post-processed, what is scored) and what produced it."""

    prediction: str
    raw: str
    token_ids: tuple[int, ...]
    input_tokens: int
    stop: str  # "eos" | "newline" | "length"


class Backend(Protocol):
    """What methods and runners need from an inference engine."""

    name: str

    def spec(self) -> dict[str, Any]: ...

    def generate(self, inputs: Sequence[Sequence[Segment]], config: DecodingConfig) -> list[Generation]: ...


@dataclass(frozen=True, eq=False)
class PrefixCache:
    """KV cache of ``B`` left-padded prefixes. ``select`` gives fresh copies, so one prefix serves many suffixes."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (keys, values): (B, heads, P, head_dim)
    attention_mask: torch.Tensor  # (B, P), 0 on left padding
    lengths: torch.Tensor  # (B,) real tokens per prefix = the next position id

    def __len__(self) -> int:
        return int(self.attention_mask.shape[0])

    def select(self, rows: Sequence[int]) -> PrefixCache:
        """The prefixes at ``rows`` (repeats allowed), e.g. ``[0, 0, 0]`` to continue three suffixes from row 0."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.attention_mask.device)
        layers = tuple((k.index_select(0, index), v.index_select(0, index)) for k, v in self.layers)
        return PrefixCache(layers, self.attention_mask.index_select(0, index), self.lengths.index_select(0, index))


class HFBackend:
    """Greedy batched decoding with a transformers causal LM, from segment embeddings."""

    name = "hf"

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        parameters = inspect.signature(self.model.forward).parameters
        # transformers 5 renamed past_key_values -> cache; accept both so >=4.57 keeps working.
        self._cache_kw = "cache" if "cache" in parameters else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in parameters
        self.eos_ids = _eos_ids(loaded)
        self._token_text: dict[int, str] = {}
        self._bf16_model: Any = None  # the bf16 copy that runs passages prefills under dtype mixed

    def spec(self) -> dict[str, Any]:
        return {"backend": self.name, **self.loaded.spec()}

    # ---- inputs -------------------------------------------------------------------------------------------------

    def context_length(self) -> int:
        config = self.model.config
        length = getattr(config, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", 2048)
        return int(length or 2048)

    def max_input_tokens(self, config: DecodingConfig) -> int:
        return config.max_input_tokens or self.context_length() - config.max_new_tokens

    def embed(self, segments: Sequence[Segment]) -> torch.Tensor:
        """``(length, hidden)`` input embeddings of one input; gradients flow through embedding segments."""
        table = self.model.get_input_embeddings()
        parts = []
        for segment in segments:
            if isinstance(segment, EmbeddingSegment):
                parts.append(segment.rows.to(device=table.weight.device, dtype=table.weight.dtype))
            elif len(segment):
                parts.append(table(torch.tensor(segment.ids, dtype=torch.long, device=table.weight.device)))
        return torch.cat(parts) if parts else table.weight.new_zeros(0, table.weight.shape[1])

    def collate(
        self, inputs: Sequence[Sequence[Segment]], start: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ``(embeds (B, L, H), attention_mask (B, L), position_ids (B, L))``.

        ``start`` (B,) offsets the position ids (the lengths of cached prefixes the inputs continue)."""
        rows = [self.embed(segments) for segments in inputs]
        width = max(r.shape[0] for r in rows)
        hidden = self.model.get_input_embeddings().weight
        embeds = hidden.new_zeros(len(rows), width, hidden.shape[1])
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=hidden.device)
        for i, row in enumerate(rows):
            if row.shape[0]:
                embeds[i, width - row.shape[0] :] = row
                mask[i, width - row.shape[0] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if start is not None:
            positions = positions + start.to(positions.device)[:, None]
        return embeds, mask, positions

    # ---- prefix reuse -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def prefill(self, prefixes: Sequence[Sequence[Segment]]) -> PrefixCache:
        """Run the prefixes once and keep their KV cache (no_grad, not inference mode: training may reuse it).

        Under ``mixed`` each prefix runs alone (no padding, no neighbours) on a bf16 copy of the model and
        its cache is cast to fp32, so a prefix's cache is the same whatever batch it arrives in."""
        if self.loaded.dtype == "mixed":
            return self._prefill_bf16(prefixes)
        embeds, mask, positions = self.collate(prefixes)
        cache = self.new_cache()
        self._forward(embeds, mask, positions, cache)
        layers = tuple((layer.keys, layer.values) for layer in cache.layers)
        return PrefixCache(layers, mask, mask.sum(-1))

    def _bf16(self) -> Any:
        """The bf16 copy of the model that ``mixed`` prefills and trains on (made on first use)."""
        if self._bf16_model is None:
            import copy

            self._bf16_model = copy.deepcopy(self.model).to(torch.bfloat16).eval()
            release_memory()  # the fp32 intermediate of the copy
        return self._bf16_model

    def _prefill_bf16(self, prefixes: Sequence[Sequence[Segment]]) -> PrefixCache:
        rows = []
        for segments in prefixes:
            embeds = self.embed(segments)[None].to(torch.bfloat16)
            length = embeds.shape[1]
            positions = torch.arange(length, device=embeds.device)[None]
            cache = self.new_cache()
            mask = torch.ones(1, length, dtype=torch.long, device=embeds.device)
            self._bf16()(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self._cache_kw: cache, **({"logits_to_keep": 1} if self._logits_to_keep else {})},
            )
            rows.append([(layer.keys.float(), layer.values.float()) for layer in cache.layers])
        lengths = [row[0][0].shape[2] for row in rows]
        width = max(lengths)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.model.device)
        for b, length in enumerate(lengths):
            mask[b, width - length :] = 1  # left padding, as collate() lays out a batch
        layers = []
        for layer in range(len(rows[0])):
            first = rows[0][layer][0]
            keys, values = (first.new_zeros(len(rows), first.shape[1], width, first.shape[3]) for _ in (0, 1))
            for b, (row, length) in enumerate(zip(rows, lengths, strict=True)):
                keys[b, :, width - length :], values[b, :, width - length :] = row[layer][0][0], row[layer][1][0]
            layers.append((keys, values))
        return PrefixCache(tuple(layers), mask, mask.sum(-1))

    def forward(
        self, inputs: Sequence[Sequence[Segment]], prefix: PrefixCache | None = None, logits_to_keep: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, L, vocab)`` at every position of the left-padded ``inputs`` and their mask ``(B, L)``.

        ``logits_to_keep=K`` computes logits for the last K positions only, ``(B, K, vocab)``: with left padding
        those are where right-aligned answers are predicted, so training skips the LM head everywhere else.

        Differentiable with respect to embedding segments (gradients are not disabled here), so training a
        method's virtual tokens is this call plus a loss on the answer positions. With ``prefix`` the inputs
        continue its rows (the passages block computed once, without gradient, before the trained tokens).
        Under ``mixed`` it runs on the bf16 copy: training batches are fixed by the training spec's seed, so
        bf16's batch-dependent rounding cannot make two runs of the same spec differ.
        """
        embeds, mask, positions = self.collate(inputs, prefix.lengths if prefix is not None else None)
        model = self.model
        if self.loaded.dtype == "mixed":
            model, embeds = self._bf16(), embeds.to(torch.bfloat16)
            if prefix is not None:
                prefix = PrefixCache(
                    tuple((k.to(torch.bfloat16), v.to(torch.bfloat16)) for k, v in prefix.layers),
                    prefix.attention_mask,
                    prefix.lengths,
                )
        kwargs: dict[str, Any] = {"use_cache": prefix is not None}
        if logits_to_keep is not None:
            if not self._logits_to_keep:
                raise RuntimeError(f"{type(self.model).__name__} does not support logits_to_keep")
            kwargs["logits_to_keep"] = logits_to_keep
        full_mask = mask
        if prefix is not None:
            kwargs[self._cache_kw] = self.new_cache(prefix)
            full_mask = torch.cat([prefix.attention_mask, mask], dim=1)
        out = model(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions, **kwargs)
        return out.logits, mask

    # ---- decoding -----------------------------------------------------------------------------------------------

    def generate(
        self,
        inputs: Sequence[Sequence[Segment]],
        config: DecodingConfig = DecodingConfig(),
        *,
        prefix: PrefixCache | None = None,
        reuse_prefix: bool = False,
    ) -> list[Generation]:
        """Greedy answers for ``inputs``, in input order.

        * plain: each input is a full segment list (truncated to the maximum input length first);
        * ``prefix=cache``: ``inputs[i]`` continues ``cache`` row ``i`` (use ``cache.select`` to map rows);
        * ``reuse_prefix=True``: inputs whose passages blocks are identical share one prefill.
        """
        if prefix is not None and reuse_prefix:
            raise ValueError("pass either prefix= or reuse_prefix=True, not both")
        if prefix is not None and len(prefix) != len(inputs):
            raise ValueError(f"{len(inputs)} suffixes for a prefix cache of {len(prefix)} rows")
        if prefix is None:
            limit = self.max_input_tokens(config)
            cut = fit_input if config.max_input_tokens else truncate  # an explicit cut: equal passage text
            inputs = [cut(segments, limit) for segments in inputs]
        if reuse_prefix:
            return self._generate_grouped([list(s) for s in inputs], config)
        lengths = [input_length(s) + (int(prefix.lengths[i]) if prefix is not None else 0) for i, s in enumerate(inputs)]
        order = sorted(range(len(inputs)), key=lambda i: -lengths[i])  # longest first: padding stays small
        results: list[Generation | None] = [None] * len(inputs)
        for begin in range(0, len(order), config.batch_size):
            chunk = order[begin : begin + config.batch_size]
            chunk_prefix = prefix.select(chunk) if prefix is not None else None
            for i, generation in zip(chunk, self._decode([inputs[i] for i in chunk], config, chunk_prefix), strict=True):
                results[i] = generation
        return results  # type: ignore[return-value]

    def _generate_grouped(self, inputs: list[list[Segment]], config: DecodingConfig) -> list[Generation]:
        """Prefill each distinct passages block once (batched), then continue every suffix from its block."""
        split = [split_after_passages(segments) for segments in inputs]
        results: list[Generation | None] = [None] * len(inputs)
        # Inputs with nothing to share (no passages, no BOS) take the plain path.
        plain = [i for i, (prefix, _) in enumerate(split) if not prefix]
        for i, generation in zip(plain, self.generate([inputs[i] for i in plain], config), strict=True):
            results[i] = generation
        keys = [_prefix_key(prefix) if prefix else None for prefix, _ in split]
        distinct = [key for key in dict.fromkeys(keys) if key is not None]
        row_of = {key: row for row, key in enumerate(distinct)}
        first = {key: split[keys.index(key)][0] for key in distinct}
        # Prefill batch_size distinct blocks at a time; every input reading one of them continues from its row.
        for begin in range(0, len(distinct), config.batch_size):
            group = set(distinct[begin : begin + config.batch_size])
            cache = self.prefill([first[key] for key in distinct[begin : begin + config.batch_size]])
            members = [i for i, key in enumerate(keys) if key in group]
            # Continue the members a batch at a time, longest first, each batch selecting its own cache rows: one
            # batch's copy of the cache at a time instead of a copy for every member (answers do not depend on
            # the batching, tested).
            members.sort(key=lambda i: -input_length(split[i][1]))
            for start in range(0, len(members), config.batch_size):
                batch = members[start : start + config.batch_size]
                rows = [row_of[keys[i]] - begin for i in batch]  # type: ignore[index]  # members' keys are set
                generations = self.generate([split[i][1] for i in batch], config, prefix=cache.select(rows))
                for i, generation in zip(batch, generations, strict=True):
                    results[i] = generation
            del cache
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _decode(
        self, inputs: Sequence[Sequence[Segment]], config: DecodingConfig, prefix: PrefixCache | None
    ) -> list[Generation]:
        if any(input_length(segments) == 0 for segments in inputs):
            raise ValueError("an input (or a suffix after a prefix) is empty: there is nothing to continue from")
        start = prefix.lengths if prefix is not None else None
        embeds, mask, positions = self.collate(inputs, start)
        input_tokens = mask.sum(-1) + (prefix.lengths if prefix is not None else 0)
        cache = self.new_cache(prefix)
        if prefix is not None:
            mask = torch.cat([prefix.attention_mask, mask], dim=1)
        logits = self._forward(embeds, mask, positions, cache)

        batch = len(inputs)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        stops = ["length"] * batch
        started = [False] * batch  # has the answer shown visible text yet?
        active = list(range(batch))  # original rows still decoding, in cache order
        next_position = positions[:, -1] + 1
        for step_index in range(config.max_new_tokens):
            chosen = logits.argmax(-1).tolist()
            keep: list[int] = []
            for slot, row in enumerate(active):
                token = chosen[slot]
                if token in self.eos_ids:
                    stops[row] = "eos"
                    continue
                tokens[row].append(token)
                if config.stop_at_newline and self._ends_answer(token, started[row]):
                    stops[row] = "newline"
                    continue
                started[row] = started[row] or bool(self._text(token).strip())
                keep.append(slot)
            if not keep or step_index == config.max_new_tokens - 1:
                break
            # Drop finished rows from the batch and the cache, then feed each survivor its chosen token.
            if len(keep) < len(active):
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, next_position = mask.index_select(0, index), next_position.index_select(0, index)
                active = [active[slot] for slot in keep]
            chosen = [chosen[slot] for slot in keep]
            step = torch.tensor(chosen, device=mask.device)[:, None]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            logits = self._forward(self.model.get_input_embeddings()(step), mask, next_position[:, None], cache)
            next_position = next_position + 1

        generations = []
        for row in range(batch):
            raw = self.tokenizer.decode(tokens[row], skip_special_tokens=True)
            generations.append(Generation(postprocess(raw), raw, tuple(tokens[row]), int(input_tokens[row]), stops[row]))
        return generations

    def _forward(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        """Last-position logits (B, vocab) in fp32; ``cache`` is extended in place."""
        kwargs: dict[str, Any] = {self._cache_kw: cache, "use_cache": True}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs)
        return out.logits[:, -1].float()

    def new_cache(self, prefix: PrefixCache | None = None) -> Any:
        """A fresh KV cache, holding a copy of ``prefix`` when given (what training continues from)."""
        from transformers import DynamicCache

        try:
            cache = DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            cache = DynamicCache()
        if prefix is not None:
            for layer, (keys, values) in enumerate(prefix.layers):
                cache.update(keys, values, layer)
        return cache

    def _text(self, token: int) -> str:
        if token not in self._token_text:
            self._token_text[token] = self.tokenizer.decode([token])
        return self._token_text[token]

    def _ends_answer(self, token: int, started: bool) -> bool:
        """A newline ends the answer once visible text has appeared (in an earlier token or before it)."""
        text = self._text(token)
        return "\n" in text and (started or bool(text.split("\n", 1)[0].strip()))


def _eos_ids(loaded: LoadedModel) -> frozenset[int]:
    ids: set[int] = set()
    for source in (
        loaded.tokenizer.eos_token_id,
        loaded.model.config.eos_token_id,
        getattr(loaded.model.generation_config, "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return frozenset(ids)


def _prefix_key(prefix: Sequence[Segment]) -> tuple:
    """Identity of a prefix: its token ids; an embedding segment makes it unique (never shared)."""
    parts: list[Any] = []
    for segment in prefix:
        parts.append(segment.ids if isinstance(segment, TokenSegment) else ("embedding", id(segment)))
    return tuple(parts)
