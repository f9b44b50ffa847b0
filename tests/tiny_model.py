"""A tiny random Llama and a locally trained tokenizer, saved to a folder like any real model (no hub, no wheel).

``tiny_model_dir()`` builds it once per test process; tests load it through ``harness.models.load_model`` so they
exercise the same path as real backbones.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

CORPUS = [
    "Question: who wrote the origin of species?\nAnswer: Charles Darwin",
    "According to the previous relevant passages, please answer the following question. "
    "Only return the answer without any other words.",
    "[1] Paris Paris is the capital and most populous city of France.\n",
    "[2] Darwin Charles Darwin was an English naturalist, geologist and biologist.\n\n",
    "The quick brown fox jumps over the lazy dog. 0123456789 when where what which how many",
]


# A ChatML-like template with a default system turn, as SmolLM2-Instruct's (plain-text role markers, so the
# vocabulary, and with it the random model, stay as they were).
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<s>[system] You are helpful.\n{% endif %}"
    "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>[assistant] {% endif %}"
)


def build_tokenizer():
    """A byte-level BPE tokenizer (any text round-trips) with <s>, </s> and <pad>; BOS is added like Llama's; it
    has a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 4, trainer=trainer)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # Larger-than-default weights make the random logits peaked, so greedy choices are far from ties and
    # comparisons between mathematically equal computations are robust to float rounding.
    # Sharp attention (large q/k) and strong attention outputs make answers depend on the whole context.
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
        model.model.embed_tokens.weight.normal_(0, 1.0)
        for name, parameter in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                parameter.normal_(0, 0.5)
            elif name.endswith(("v_proj.weight", "o_proj.weight")):
                parameter.normal_(0, 0.3)
    return model


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@functools.cache
def tiny_model_dir() -> Path:
    """The tiny model folder for this test process (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="harness-tiny-model-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return save_tiny_model(root / "tiny-llama")


@functools.cache
def tiny_loaded():
    """The tiny model loaded through ``harness.models.load_model`` (fp32, CPU), shared by tests."""
    from harness.models import load_model

    return load_model(str(tiny_model_dir()), dtype="fp32", device="cpu")
