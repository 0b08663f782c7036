"""Models for the runtime: tiny from-config Llamas for CPU runs, HF models (optionally NF4) for
real runs, LoRA, and a content-addressed cache so a warmed-up tiny base is built once.

Nothing here knows about any experiment: tokenizers are built from whatever texts the caller
passes, and cached models are keyed by whatever recipe dict the caller passes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

from .. import jsonio
from ..plan.stages import recipe_hash  # the base-model stage's folder name: one formula

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


# --------------------------------------------------------------------------- tokenizer

def _pre_tokenizer(split_digits: bool = True):
    from tokenizers import pre_tokenizers

    # Whitespace first, then punctuation as separate tokens, then every digit on its own.
    # Digits are split individually so that any number (73, 100, 8) is spelled from ten shared
    # tokens: a tiny model can then learn place value and compare numbers it never saw whole,
    # and the vocabulary does not depend on which numbers happened to occur in the texts.
    steps = [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    if split_digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    return pre_tokenizers.Sequence(steps)


def build_word_tokenizer(texts: Iterable[str], extra_tokens: Iterable[str] = (), split_digits: bool = True):
    """A word-level tokenizer over `texts` (plus `extra_tokens`), as a PreTrainedTokenizerFast.

    Vocabulary order is deterministic: specials (<pad>, <bos>, <eos>, <unk>), then the ten
    digits, then `extra_tokens` in the given order, then every other word sorted. Encoding adds
    <bos> in front (a causal LM needs a first position that is not a prompt word). Padding is
    on the left so that the last position of every row in a batch is the answer slot.
    split_digits=False keeps numbers whole (then every number used must be in the texts or
    extra_tokens, else it is <unk>).
    Decoding joins tokens with single spaces (word-level: the original spacing is not kept).
    """
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    pre = _pre_tokenizer(split_digits)
    vocab: dict[str, int] = {}
    for tok in [PAD, BOS, EOS, UNK, *"0123456789", *extra_tokens]:
        vocab.setdefault(tok, len(vocab))
    words = set()
    for text in texts:
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    for w in sorted(words):
        vocab.setdefault(w, len(vocab))

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        padding_side="left",
    )
    return fast


# --------------------------------------------------------------------------- models

def build_tiny_llama(tokenizer, layers: int = 2, width: int = 96, heads: int = 4, seed: int = 0,
                     intermediate: int | None = None, max_positions: int = 256):
    """A randomly initialised LlamaForCausalLM sized for CPU; module names match real Llamas,
    so LoRA targets (q_proj ... gate_proj) and the PEFT code paths are the same."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=intermediate or 4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _dtype(name: str | None):
    if name is None or name == "auto":
        return "auto" if name == "auto" else torch.float32
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


def load_hf_model(name_or_path: str, quantize: dict | None = None, dtype: str = "bfloat16",
                  gradient_checkpointing: bool = False, revision: str | None = None,
                  trust_remote_code: bool = False, attn_implementation: str | None = None):
    """Load a causal LM and its tokenizer at `revision` (a hub branch, tag or commit; None: the
    default branch; a local folder has no revisions and ignores it). `quantize`, BitsAndBytesConfig's
    keyword arguments as a generated config holds them (e.g. {"load_in_4bit": True,
    "bnb_4bit_quant_type": "nf4", ...}), loads it through bitsandbytes and prepares it for k-bit
    training (norms in fp32, input grads on). `trust_remote_code` and `attn_implementation` go to
    from_pretrained as `model hf { ... }` gives them (None: transformers picks the attention)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    kwargs = {"dtype": _dtype(dtype), "revision": revision, "trust_remote_code": trust_remote_code}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(**quantize)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    if quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def convert_gguf(path: str | os.PathLike, dtype: str = "float32"):
    """A GGUF file as a plain float causal LM and its tokenizer (chat template included), through
    transformers' own GGUF support (the `gguf` package de-quantizes the tensors). transformers
    refuses to save a model loaded from GGUF, so the weights move into a fresh model of the same
    config, which saves and reloads like any other."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None  # de-quantized: nothing left for a loader to undo
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    model.to(_dtype(dtype))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def apply_lora(model, lora: dict):
    """Wrap `model` in a LoRA PeftModel; `lora` is LoraConfig's keyword arguments (as a generated
    config holds them, or schema.trainer_kwargs("lora", ...) makes them from short names)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(**lora)
    return get_peft_model(model, config)


# --------------------------------------------------------------------------- cache

def cached_model_dir(cache_root: str | os.PathLike, recipe: dict) -> Path:
    """Where the model built from `recipe` lives (whether or not it exists yet)."""
    return Path(cache_root) / recipe_hash(recipe)[:20]


def save_model_atomic(model, tokenizer, directory: str | os.PathLike, recipe: dict | None = None) -> Path:
    """save_pretrained into a temp dir beside `directory`, then rename: a killed run never
    leaves a half-written model where a later run would load it."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if recipe is not None:
            (tmp / "recipe.json").write_text(jsonio.dumps(recipe, sort_keys=True, indent=1, default=str))
        try:
            os.rename(tmp, directory)
        except OSError:
            if not directory.exists():
                raise
            shutil.rmtree(tmp)  # another process finished the same recipe first; keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_cached_model(directory: str | os.PathLike):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return model, tokenizer


def get_or_build(cache_root: str | os.PathLike, recipe: dict, build: Callable[[], tuple]):
    """Return (model, tokenizer, hit) for `recipe`, calling `build()` and caching on a miss."""
    directory = cached_model_dir(cache_root, recipe)
    if directory.exists():
        model, tokenizer = load_cached_model(directory)
        return model, tokenizer, True
    model, tokenizer = build()
    save_model_atomic(model, tokenizer, directory, recipe)
    return model, tokenizer, False
