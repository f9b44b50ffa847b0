"""The generation engine: batches of segment lists -> greedy answers, identical for every method.

One path for all methods: embed each segment (token ids through the frozen input embedding, embedding rows as
they are), left-pad the batch, run one prefill with a KV cache, then decode greedily one token at a time.

* Batches are formed from inputs sorted by length (longest first), so padding stays small; results come back in
  input order and do not depend on the batch size (tested).
* Stop rules: EOS, or a newline once the answer has started (a newline before any visible text is skipped over,
  matching :func:`postprocess`, which strips before cutting at the first newline), or ``max_new_tokens``.
* Continuous batching: rows that finish are dropped from the batch and the cache, and once half the slots are
  free the next waiting inputs are prefilled and join the running batch, so a few long answers do not keep a
  mostly empty batch stepping. Caches grow into preallocated room instead of being re-concatenated every step.
* Prefix reuse: :meth:`HFBackend.prefill` computes the KV cache of shared prefixes (the passages block) once;
  :meth:`HFBackend.generate` continues any number of suffixes from selected rows of it. Inputs that share a
  passages block can also be grouped automatically (``reuse_prefix=True``): each block is prefilled when its
  first reader joins the batch and dropped after its last.

The :class:`Backend` protocol is the seam for other engines (:mod:`harness.vllm_backend`, vLLM with prompt
embeddings): methods only build segments and never touch the model, and every engine ends answers with the one
:class:`StopRule` and :func:`postprocess`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections import deque
from collections.abc import Callable, Sequence
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
# Prefixes per prefill forward (more are prefilled in chunks of this many and joined): a left-padded fp32 prefill of
# 330 tokens ran at 863 tokens/s with 8 rows and 794 with 16 (2-core Intel Xeon; benchmarks/README.md).
PREFILL_ROWS = 8
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
    # Another engine than the HF backend, as what of it changes answers (harness.vllm_backend.engine_spec); empty,
    # and then absent from the spec (the HF backend's keys are unchanged), for the HF backend.
    engine: tuple[tuple[str, Any], ...] = ()

    def spec(self) -> dict[str, Any]:
        return {
            **({"engine": dict(self.engine)} if self.engine else {}),
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


class StopRule:
    """When an answer ends, token by token, the same for every backend.

    EOS ends it (the EOS token is not part of the answer); with ``stop_at_newline``, a token holding a newline ends
    it (kept) once visible text has appeared, in an earlier token or before the newline in this one: a newline
    before any visible text is skipped over, matching :func:`postprocess`; else ``max_new_tokens`` does."""

    def __init__(self, eos_ids: frozenset[int], tokenizer: Any) -> None:
        self.eos_ids, self.tokenizer = eos_ids, tokenizer
        self._token_text: dict[int, str] = {}

    def text(self, token: int) -> str:
        if token not in self._token_text:
            self._token_text[token] = self.tokenizer.decode([token])
        return self._token_text[token]

    def step(self, token: int, started: bool, config: DecodingConfig) -> tuple[str | None, bool]:
        """(``"eos"``, ``"newline"`` or None: whether ``token`` ends the answer; has visible text started)."""
        if token in self.eos_ids:
            return "eos", started
        text = self.text(token)
        if config.stop_at_newline and "\n" in text and (started or bool(text.split("\n", 1)[0].strip())):
            return "newline", True
        return None, started or bool(text.strip())

    def cut(self, generated: Sequence[int], config: DecodingConfig, stopped_on_eos: bool = False) -> tuple[list[int], str]:
        """(the answer's tokens, why it stopped) of a continuation an engine generated past the newline rule;
        ``stopped_on_eos``: the engine ended it on an EOS id that it left out of ``generated``."""
        kept: list[int] = []
        started = False
        for token in generated[: config.max_new_tokens]:
            stop, started = self.step(token, started, config)
            if stop == "eos":
                return kept, "eos"
            kept.append(token)
            if stop == "newline":
                return kept, "newline"
        if len(kept) < config.max_new_tokens:
            if stopped_on_eos:
                return kept, "eos"
            raise ValueError(f"a continuation of {len(kept)} tokens ended before EOS, a newline or max_new_tokens")
        return kept, "length"


def fit_inputs(inputs: Sequence[Sequence[Segment]], config: DecodingConfig, limit: int) -> list[list[Segment]]:
    """Each input cut to ``limit`` tokens: passage text first under an explicit ``max_input_tokens`` (equal passage
    text for every method, :func:`harness.segments.fit_input`), else from the left (:func:`truncate`)."""
    cut = fit_input if config.max_input_tokens else truncate
    return [list(cut(segments, limit)) for segments in inputs]


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
        """The prefixes at ``rows`` (repeats allowed), e.g. ``[0, 0, 0]`` to continue three suffixes from row 0;
        left padding that none of them needs is dropped (a long prefix elsewhere in the cache costs them nothing)."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.attention_mask.device)
        lengths = self.lengths.index_select(0, index)
        start = int(self.attention_mask.shape[1]) - int(lengths.max())
        layers = tuple((k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:]) for k, v in self.layers)
        return PrefixCache(layers, self.attention_mask.index_select(0, index)[:, start:], lengths)

    @staticmethod
    def concat(parts: Sequence[PrefixCache]) -> PrefixCache:
        """The rows of ``parts`` in order, each part left-padded to the widest (masked, as collate() pads)."""
        if len(parts) == 1:
            return parts[0]
        width = max(int(part.attention_mask.shape[1]) for part in parts)

        def padded(tensor: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - tensor.shape[dim]
            if not missing:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        layers = tuple(
            (torch.cat([padded(p.layers[i][0], 2) for p in parts]), torch.cat([padded(p.layers[i][1], 2) for p in parts]))
            for i in range(len(parts[0].layers))
        )
        mask = torch.cat([padded(part.attention_mask, 1) for part in parts])
        return PrefixCache(layers, mask, torch.cat([part.lengths for part in parts]))


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
        self.stop_rule = StopRule(eos_ids(loaded.tokenizer, loaded.model.config, loaded.model.generation_config), self.tokenizer)
        self._bf16_model: Any = None  # the bf16 copy that runs passages prefills under dtype mixed

    def spec(self) -> dict[str, Any]:
        return {"backend": self.name, **self.loaded.spec()}

    @property
    def eos_ids(self) -> frozenset[int]:
        return self.stop_rule.eos_ids

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
        its cache is cast to fp32, so a prefix's cache is the same whatever batch it arrives in. Otherwise
        :data:`PREFILL_ROWS` prefixes run per forward."""
        if self.loaded.dtype == "mixed":
            return PrefixCache.concat([self._prefill_bf16(segments) for segments in prefixes])
        chunks = [prefixes[begin : begin + PREFILL_ROWS] for begin in range(0, len(prefixes), PREFILL_ROWS)]
        return PrefixCache.concat([self._prefill_rows(chunk) for chunk in chunks])

    def _prefill_rows(self, prefixes: Sequence[Sequence[Segment]]) -> PrefixCache:
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

    def drop_bf16_copy(self) -> bool:
        """Free the bf16 copy while nothing reads it (it is made again on first use); whether there was one."""
        had_copy, self._bf16_model = self._bf16_model is not None, None
        return had_copy

    def _prefill_bf16(self, segments: Sequence[Segment]) -> PrefixCache:
        """One prefix alone on the bf16 copy, its cache cast to fp32."""
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
        layers = tuple((layer.keys.float(), layer.values.float()) for layer in cache.layers)
        return PrefixCache(layers, mask, mask.sum(-1))

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
            inputs = fit_inputs(inputs, config, self.max_input_tokens(config))
        if reuse_prefix:
            return self._generate_grouped([list(s) for s in inputs], config)
        if prefix is None:
            return self._stream(inputs, config, [0] * len(inputs), None, list(range(len(inputs))))
        return self._stream(inputs, config, prefix.lengths.tolist(), lambda rows: [prefix.select(rows)], list(range(len(inputs))))

    def _generate_grouped(self, inputs: list[list[Segment]], config: DecodingConfig) -> list[Generation]:
        """Prefill each distinct passages block once, then continue every suffix from its block."""
        split = [split_after_passages(segments) for segments in inputs]
        results: list[Generation | None] = [None] * len(inputs)
        # Inputs with nothing to share (no passages, no BOS) take the plain path.
        plain = [i for i, (prefix, _) in enumerate(split) if not prefix]
        for i, generation in zip(plain, self.generate([inputs[i] for i in plain], config), strict=True):
            results[i] = generation
        keys = [prefix_key(prefix) if prefix else None for prefix, _ in split]
        distinct = [key for key in dict.fromkeys(keys) if key is not None]
        if distinct:
            block_of = {key: block for block, key in enumerate(distinct)}
            members = [i for i, key in enumerate(keys) if key is not None]
            blocks = _Blocks(self, [split[keys.index(key)][0] for key in distinct], [block_of[keys[i]] for i in members])  # type: ignore[index]
            lengths = [input_length(blocks.segments[block]) for block in blocks.readers]
            generations = self._stream([split[i][1] for i in members], config, lengths, blocks.rows, blocks.readers)
            for i, generation in zip(members, generations, strict=True):
                results[i] = generation
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _stream(
        self,
        inputs: Sequence[Sequence[Segment]],
        config: DecodingConfig,
        prefix_lengths: Sequence[int],
        prefixes: Callable[[list[int]], list[PrefixCache]] | None,
        rows: Sequence[int],
    ) -> list[Generation]:
        """Greedy answers of ``inputs``, input ``i`` continuing prefix row ``rows[i]`` (of ``prefix_lengths[i]``
        tokens; ``prefixes(rows)`` gives those rows' caches, in order), at most ``config.batch_size`` decoding at once,
        longest first, the readers of one prefix row together.

        Continuous batching: a finished row leaves the batch and its cache, and once half the slots are free the
        next waiting inputs are prefilled and join (their caches left-padded to the batch's width, as collate()
        pads), so a few long answers do not keep a mostly empty batch stepping. Each row keeps its own positions,
        mask and token count, so its answer does not depend on its neighbours (tested against batch size 1).
        """
        if any(input_length(segments) == 0 for segments in inputs):
            raise ValueError("an input (or a suffix after a prefix) is empty: there is nothing to continue from")

        def total_length(i: int) -> int:
            return input_length(inputs[i]) + prefix_lengths[i]

        # Longest first: joining rows of similar prefix and suffix lengths pad little (a block read by several
        # methods stays cached from its first reader's turn to its last's: at most one chunk of questions' blocks).
        waiting = deque(sorted(range(len(inputs)), key=lambda i: -total_length(i)))
        tokens: list[list[int]] = [[] for _ in inputs]
        stops = ["length"] * len(inputs)
        started = [False] * len(inputs)  # has the answer shown visible text yet?
        input_tokens = [total_length(i) for i in range(len(inputs))]
        batch: _Batch | None = None
        while waiting or batch is not None:
            free = config.batch_size - (len(batch.rows) if batch is not None else 0)
            if waiting and (batch is None or free >= max(1, config.batch_size // 2)):
                joining = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                selected = prefixes([rows[i] for i in joining]) if prefixes is not None else []
                joined = self._start([inputs[i] for i in joining], selected, joining, config.max_new_tokens)
                batch = self._join(batch, joined, config.max_new_tokens)
            assert batch is not None  # an empty batch was just filled: the loop runs while some input waits
            chosen = batch.logits.argmax(-1).tolist()
            keep: list[int] = []
            for slot, row in enumerate(batch.rows):
                token = chosen[slot]
                stop, started[row] = self.stop_rule.step(token, started[row], config)
                if stop == "eos":
                    stops[row] = "eos"
                    continue
                tokens[row].append(token)
                if stop == "newline":
                    stops[row] = "newline"
                    continue
                if len(tokens[row]) < config.max_new_tokens:
                    keep.append(slot)
            if not keep:
                batch = None
                continue
            if len(keep) < len(batch.rows):  # drop finished rows from the batch and the cache
                index = torch.tensor(keep, device=batch.mask.device)
                batch.cache.batch_select_indices(index)
                batch.mask, batch.next_position = batch.mask.index_select(0, index), batch.next_position.index_select(0, index)
                batch.rows = [batch.rows[slot] for slot in keep]
            step = torch.tensor([chosen[slot] for slot in keep], device=batch.mask.device)[:, None]
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(keep), 1)], dim=1)
            embeds = self.model.get_input_embeddings()(step)
            batch.logits = self._forward(embeds, batch.mask, batch.next_position[:, None], batch.cache)
            batch.next_position = batch.next_position + 1

        generations = []
        for row in range(len(inputs)):
            raw = self.tokenizer.decode(tokens[row], skip_special_tokens=True)
            generations.append(Generation(postprocess(raw), raw, tuple(tokens[row]), input_tokens[row], stops[row]))
        return generations

    def _start(
        self, inputs: Sequence[Sequence[Segment]], prefixes: Sequence[PrefixCache], rows: list[int], answer_tokens: int
    ) -> _Batch:
        """The prefilled batch of ``inputs`` (continuing the rows of ``prefixes`` in order, one each, or nothing):
        cache (with room for ``answer_tokens`` more) and first logits."""
        start = torch.cat([prefix.lengths for prefix in prefixes]) if prefixes else None
        embeds, mask, positions = self.collate(inputs, start)
        room = embeds.shape[1] + answer_tokens  # the suffixes, then the answers
        if prefixes:
            cache, prefix_mask = self._decoding_cache(prefixes, room)
            mask = torch.cat([prefix_mask, mask], dim=1)
        else:
            cache = self.new_cache(room=room)
        logits = self._forward(embeds, mask, positions, cache)
        return _Batch(cache, mask, positions[:, -1] + 1, rows, logits)

    def _join(self, batch: _Batch | None, joining: _Batch, answer_tokens: int) -> _Batch:
        """One batch of both: the narrower cache left-padded to the wider (masked), room for ``answer_tokens``."""
        if batch is None:
            return joining
        parts = [
            PrefixCache(tuple((layer.keys, layer.values) for layer in b.cache.layers), b.mask, b.next_position)
            for b in (batch, joining)
        ]
        cache, mask = self._decoding_cache(parts, answer_tokens)
        return _Batch(
            cache,
            mask,
            torch.cat([batch.next_position, joining.next_position]),
            [*batch.rows, *joining.rows],
            torch.cat([batch.logits, joining.logits]),
        )

    def _decoding_cache(self, parts: Sequence[PrefixCache], room: int) -> tuple[Any, torch.Tensor]:
        """(a cache holding the rows of ``parts`` in order, each left-padded to the widest, with room for ``room``
        more tokens; its attention mask), copying each part once into place."""
        width = max(int(part.attention_mask.shape[1]) for part in parts)
        cache = self.new_cache(room=room)
        roomy = _roomy_layer()[1]
        if not all(isinstance(layer, roomy) for layer in getattr(cache, "layers", ())):
            joined = PrefixCache.concat(parts)  # other layer kinds (sliding windows) or older transformers
            return self.new_cache(joined), joined.attention_mask
        for index, layer in enumerate(cache.layers):
            layer.fill([part.layers[index][0] for part in parts], [part.layers[index][1] for part in parts], width)
        mask = torch.zeros(sum(len(part) for part in parts), width, dtype=torch.long, device=parts[0].attention_mask.device)
        row = 0
        for part in parts:
            mask[row : row + len(part), width - part.attention_mask.shape[1] :] = part.attention_mask
            row += len(part)
        return cache, mask

    def _forward(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        """Last-position logits (B, vocab) in fp32; ``cache`` is extended in place."""
        kwargs: dict[str, Any] = {self._cache_kw: cache, "use_cache": True}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs)
        return out.logits[:, -1].float()

    def new_cache(self, prefix: PrefixCache | None = None, room: int = 0) -> Any:
        """A fresh KV cache, holding a copy of ``prefix`` when given (what training continues from).

        ``room``: decoding will append about this many tokens; its full-attention layers then write them into
        preallocated space instead of re-concatenating the whole cache at every step (see :func:`_roomy`)."""
        from transformers import DynamicCache

        try:
            cache = DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            cache = DynamicCache()
        if room:
            _roomy(cache, room)
        if prefix is not None:
            for layer, (keys, values) in enumerate(prefix.layers):
                cache.update(keys, values, layer)
        return cache


def _roomy(cache: Any, room: int) -> None:
    """Give ``cache``'s plain (full-attention) layers preallocated room for ``room`` more tokens.

    A transformers ``DynamicLayer`` concatenates its whole cache with each new token: 30% of a batch-16 decoding
    step of SmolLM2-135M on 2 CPU cores (torch.profiler). These layers write into spare room and hand out views
    of it; the values are the same. Sliding-window and other layer kinds are left as they are."""
    layers = getattr(cache, "layers", None)
    if layers is None or getattr(cache, "layer_class_to_replicate", None) is not None:
        return  # an older or lazily built cache: left as it is
    plain, roomy = _roomy_layer()
    for index, layer in enumerate(layers):
        if type(layer) is plain:
            layers[index] = roomy(room)


@functools.cache
def _roomy_layer() -> tuple[type, type]:
    """(transformers' DynamicLayer, its subclass that appends into preallocated room), made on first use."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        def __init__(self, room: int) -> None:
            super().__init__()
            self.room, self.length = room, 0
            self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            if self.buffers is None or self.length + new > self.buffers[0].shape[-2]:
                self.buffers = (self._grown(0, key_states, new), self._grown(1, value_states, new))
            keys, values = self.buffers
            keys[..., self.length : self.length + new, :] = key_states
            values[..., self.length : self.length + new, :] = value_states
            self.length += new
            self.keys, self.values = keys[..., : self.length, :], values[..., : self.length, :]
            return self.keys, self.values

        def _grown(self, which: int, states: torch.Tensor, new: int) -> torch.Tensor:
            """A buffer holding what is cached so far, with room for ``new`` + ``room`` more tokens."""
            spare = states.new_zeros(*states.shape[:2], new + self.room, states.shape[3])
            if self.buffers is None:
                return spare
            return torch.cat([self.buffers[which][..., : self.length, :], spare], dim=-2)

        def fill(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], width: int) -> None:
            """Hold these rows (each part left-padded to ``width``) and room for ``room`` more tokens."""
            first = keys[0]
            rows = sum(part.shape[0] for part in keys)
            self.buffers = (
                first.new_zeros(rows, first.shape[1], width + self.room, first.shape[3]),
                first.new_zeros(rows, first.shape[1], width + self.room, first.shape[3]),
            )
            row = 0
            for part_keys, part_values in zip(keys, values, strict=True):
                count, length = part_keys.shape[0], part_keys.shape[2]
                self.buffers[0][row : row + count, :, width - length : width] = part_keys
                self.buffers[1][row : row + count, :, width - length : width] = part_values
                row += count
            self.device, self.is_initialized, self.length = first.device, True, width
            self.keys, self.values = self.buffers[0][..., :width, :], self.buffers[1][..., :width, :]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.buffers is not None:
                self.buffers = (self.buffers[0][indices], self.buffers[1][indices])
                self.keys, self.values = self.buffers[0][..., : self.length, :], self.buffers[1][..., : self.length, :]

    return DynamicLayer, RoomyLayer


class _Blocks:
    """The distinct passages blocks of a grouped generate call, each prefilled when its first reader joins the
    decoding batch and dropped when its last has: a block's fp32 cache is ~46 kB a token for SmolLM2-135M (14 MB
    for 300 tokens), so the blocks of a whole call are not held at once."""

    def __init__(self, backend: HFBackend, segments: list[list[Segment]], readers: list[int]) -> None:
        self.backend, self.segments, self.readers = backend, segments, readers  # readers: each member's block
        self.unread = {block: readers.count(block) for block in set(readers)}
        self.caches: dict[int, PrefixCache] = {}

    def rows(self, blocks: list[int]) -> list[PrefixCache]:
        """The one-row caches of ``blocks`` (one per joining reader), prefilling the blocks not cached yet."""
        missing = [block for block in dict.fromkeys(blocks) if block not in self.caches]
        if missing:
            cache = self.backend.prefill([self.segments[block] for block in missing])
            self.caches.update({block: cache.select([row]) for row, block in enumerate(missing)})
        selected = [self.caches[block] for block in blocks]
        for block in blocks:
            self.unread[block] -= 1
            if not self.unread[block]:
                del self.caches[block]
        return selected


@dataclass(eq=False)
class _Batch:
    """The rows decoding together: their cache, attention mask, next position ids, input indexes, last logits."""

    cache: Any
    mask: torch.Tensor
    next_position: torch.Tensor
    rows: list[int]
    logits: torch.Tensor


def eos_ids(tokenizer: Any, config: Any, generation_config: Any = None) -> frozenset[int]:
    """The token ids that end an answer: the tokenizer's, the model config's and the generation config's EOS."""
    ids: set[int] = set()
    for source in (
        tokenizer.eos_token_id,
        getattr(config, "eos_token_id", None),
        getattr(generation_config, "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return frozenset(ids)


def prefix_key(prefix: Sequence[Segment]) -> tuple:
    """Identity of a prefix: its token ids; an embedding segment makes it unique (never shared)."""
    parts: list[Any] = []
    for segment in prefix:
        parts.append(segment.ids if isinstance(segment, TokenSegment) else ("embedding", id(segment)))
    return tuple(parts)
