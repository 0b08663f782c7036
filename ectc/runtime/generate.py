"""Sampling completions from a trained model, behind a small backend interface.

`generate_texts` is the default (transformers) path: batched, left-padded, seeded, returning
only the newly generated text. `VLLMBackend` is an optional faster path for large runs; it is
used only when asked for by name and `vllm` is importable.

Prompts are either plain strings or chat messages (`[{"role": ..., "content": ...}, ...]`).
`encode_prompt` is the single place that turns a prompt into token ids, and SFT renders
training prompts the same way (`format_prompt`), so the model is sampled on exactly the
context it was trained on.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, Union

import torch

Messages = list[dict]
Prompt = Union[str, Messages]
Progress = Callable[[int, int], None]  # (prompts done, prompts total)


# --------------------------------------------------------------------------- prompts

def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, prompt: Prompt) -> Prompt:
    """The prompt as the trainer and the sampler both see it.

    Strings pass through. Chat messages stay messages when the tokenizer has a chat template;
    otherwise (tiny word-level tokenizers) they are flattened to "role: content" lines ending
    in an "assistant:" line, after which the completion follows.
    """
    if isinstance(prompt, str) or has_chat_template(tokenizer):
        return prompt
    lines = [f"{m['role']}: {m['content']}" for m in prompt]
    return "\n".join(lines) + "\nassistant:\n"


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids for `prompt`, tokenized as trl's SFTTrainer tokenizes training prompts
    (chat template with the generation prompt for messages; plain call for strings)."""
    prompt = format_prompt(tokenizer, prompt)
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    out = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                        return_dict=True)
    return list(out["input_ids"])


# --------------------------------------------------------------------------- transformers

def _left_pad(rows: list[list[int]], pad_id: int):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids, mask


def _eos_ids(model, tokenizer) -> list[int]:
    ids = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for x in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])) + [tokenizer.eos_token_id]:
        if x is not None and x not in ids:
            ids.append(x)
    return ids


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: Sequence[Prompt], temperature: float = 0.7,
                   max_new_tokens: int = 700, seed: int = 42, batch_size: int = 8,
                   progress: Progress | None = None, top_p: float = 1.0,
                   top_k: int = 0, options: dict | None = None) -> list[str]:
    """Sample one completion per prompt; returns only the new text, in prompt order.

    temperature 0 means greedy. Sampling is plain temperature sampling unless top_p/top_k are
    given: the model's own generation_config defaults (e.g. top_k=50, or a chat model's
    top_p) are deliberately not inherited, so what a spec says is all that applies. `options`
    are further GenerationConfig keywords (a profile's `generate { top_p 0.9 repetition_penalty
    1.1 }`), passed to model.generate over those. Output is a deterministic function of (model, prompts, seed,
    batch_size): prompts are grouped by length (less padding) and the RNG is seeded once per
    call inside a forked RNG state, so the caller's random streams are left untouched.
    Left padding with an attention mask makes a batched row equal to the same prompt alone
    (up to float rounding). Generation stops at EOS.
    """
    if not prompts:
        return []
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(model, tokenizer)
    device = getattr(model, "device", torch.device("cpu"))
    # Longest first: batches of similar length waste little on padding, and an OOM shows early.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[str | None] = [None] * len(prompts)

    was_training = model.training
    model.eval()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(seed)
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                ids, mask = _left_pad([encoded[i] for i in idx], pad_id)
                kwargs: dict[str, Any] = dict(
                    input_ids=ids.to(device), attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_ids,
                    use_cache=True,
                )
                if temperature and temperature > 0:
                    kwargs.update(do_sample=True, temperature=float(temperature), top_k=int(top_k),
                                  top_p=float(top_p))
                else:
                    kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
                kwargs.update(options or {})
                out = model.generate(**kwargs)
                new = out[:, ids.shape[1]:]
                for row, i in zip(new.tolist(), idx):
                    results[i] = tokenizer.decode(_until_eos(row, eos_ids), skip_special_tokens=True)
                if progress is not None:
                    progress(min(start + batch_size, len(order)), len(order))
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _until_eos(row: list[int], eos_ids: list[int]) -> list[int]:
    for j, t in enumerate(row):
        if t in eos_ids:
            return row[:j]
    return row


# --------------------------------------------------------------------------- backends

class Backend(Protocol):
    """Anything that samples completions for a list of prompts."""

    name: str

    def generate(self, prompts: Sequence[Prompt], *, temperature: float, max_new_tokens: int,
                 seed: int, batch_size: int = 8, progress: Progress | None = None,
                 top_p: float = 1.0, top_k: int = 0, options: dict | None = None) -> list[str]:
        ...


class TransformersBackend:
    name = "transformers"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, prompts, *, temperature, max_new_tokens, seed, batch_size=8, progress=None,
                 top_p=1.0, top_k=0, options=None):
        return generate_texts(self.model, self.tokenizer, prompts, temperature=temperature,
                              max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                              progress=progress, top_p=top_p, top_k=top_k, options=options)


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return False
    return True


class VLLMBackend:
    """Generation through a vLLM engine (`vllm.LLM` or anything with the same `generate`).

    Prompts go in as token ids (`{"prompt_token_ids": ...}`) encoded by `encode_prompt`, so the
    context is token-for-token the one the transformers path and the trainer use (passing a
    chat-templated string would let vLLM add a second BOS). The seed is set per request
    (seed + prompt index), so a prompt's sample does not depend on which other prompts share
    its batch. vLLM schedules
    batches itself: `batch_size` only sets how often `progress` is called.
    """

    name = "vllm"

    def __init__(self, engine, tokenizer, sampling_params_cls=None, lora_request=None):
        self.engine, self.tokenizer = engine, tokenizer
        if sampling_params_cls is None:
            from vllm import SamplingParams as sampling_params_cls  # only when really using vLLM
        self.sampling_params_cls = sampling_params_cls
        self.lora_request = lora_request

    @classmethod
    def load(cls, model_path: str, adapter_path: str | None = None, revision: str | None = None,
             **engine_kwargs):
        """A vLLM engine on `model_path` at `revision` (hub branch, tag or commit; None: default),
        with the LoRA adapter at `adapter_path` if given."""
        from transformers import AutoTokenizer
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        engine = LLM(model=model_path, revision=revision, tokenizer_revision=revision,
                     enable_lora=adapter_path is not None, **engine_kwargs)
        lora = LoRARequest("adapter", 1, adapter_path) if adapter_path else None
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=revision,
                                                  trust_remote_code=engine_kwargs.get("trust_remote_code", False))
        return cls(engine, tokenizer, lora_request=lora)

    def generate(self, prompts, *, temperature, max_new_tokens, seed, batch_size=8, progress=None,
                 top_p=1.0, top_k=0, options=None):
        options = dict(options or {})
        top_p, top_k = options.pop("top_p", top_p), options.pop("top_k", top_k)

        def params(i):
            # One seed per prompt (seed + its index): samples are independent of one another and
            # of batching. vLLM spells "no top-k" as -1 (0 is rejected in recent versions). Other
            # GenerationConfig keywords go by the same name (repetition_penalty, min_p, ...).
            return self.sampling_params_cls(temperature=float(temperature), max_tokens=max_new_tokens,
                                            seed=seed + i, top_p=float(top_p), top_k=int(top_k) or -1, **options)

        texts: list[str] = []
        step = max(len(prompts), 1) if progress is None else max(batch_size, 1)
        for start in range(0, len(prompts), step):
            chunk = [{"prompt_token_ids": encode_prompt(self.tokenizer, p)}
                     for p in prompts[start:start + step]]
            kwargs = {"lora_request": self.lora_request} if self.lora_request is not None else {}
            outputs = self.engine.generate(
                chunk, [params(i) for i in range(start, start + len(chunk))], **kwargs)
            texts.extend(o.outputs[0].text for o in outputs)
            if progress is not None:
                progress(len(texts), len(prompts))
        return texts


def make_backend(kind: str = "transformers", *, model=None, tokenizer=None, engine=None,
                 **kwargs) -> Backend:
    """The named backend. vLLM is never picked implicitly: asking for it without vllm
    installed (and without an engine object) is an error, not a silent fallback."""
    if kind == "transformers":
        if model is None or tokenizer is None:
            raise ValueError("the transformers backend needs a model and a tokenizer")
        return TransformersBackend(model, tokenizer)
    if kind == "vllm":
        if engine is not None:
            return VLLMBackend(engine, tokenizer, **kwargs)
        if not vllm_available():
            raise RuntimeError("backend 'vllm' was requested but vllm is not importable; "
                               "install vllm or use backend 'transformers'")
        return VLLMBackend.load(**kwargs)
    raise ValueError(f"unknown generation backend {kind!r}; expected 'transformers' or 'vllm'")
