"""Generation: seeded determinism, left padding (batched == one by one), only new text, stop
at EOS, chat prompts, and the backend switch (vLLM checked on a fake engine)."""

from types import SimpleNamespace

import pytest
import torch

from ectc.runtime import generate as gen
from ectc.runtime.generate import (TransformersBackend, VLLMBackend, encode_prompt, generate_texts,
                                   make_backend)
from ectc.runtime.models import build_tiny_llama, build_word_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "a b c d e f g h",
         "system user assistant : write an article about rain"]
PROMPTS = ["the fox", "a b c d e f g the quick brown fox", "lazy dog jumps",
           "write an article about the quick rain over a brown dog and a fox"]


@pytest.fixture(scope="module")
def tm():
    tok = build_word_tokenizer(TEXTS)
    model = build_tiny_llama(tok, layers=2, width=64, heads=4, seed=3)
    model.eval()
    return model, tok


def test_sampling_is_deterministic_for_a_seed(tm):
    model, tok = tm
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate_texts(model, tok, PROMPTS, temperature=0.7, max_new_tokens=12, seed=42, batch_size=2)
    b = generate_texts(model, tok, PROMPTS, temperature=0.7, max_new_tokens=12, seed=42, batch_size=2)
    c = generate_texts(model, tok, PROMPTS, temperature=0.7, max_new_tokens=12, seed=7, batch_size=2)
    assert a == b
    assert a != c
    assert torch.rand(1) == before  # the caller's RNG stream is not consumed


def _one_alone(model, tok, prompt, n):
    ids = torch.tensor([encode_prompt(tok, prompt)])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                         do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    new = out[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


def test_batched_greedy_equals_one_by_one(tm):
    model, tok = tm
    batched = generate_texts(model, tok, PROMPTS, temperature=0, max_new_tokens=10, seed=0,
                             batch_size=4)
    singles = [_one_alone(model, tok, p, 10) for p in PROMPTS]
    assert batched == singles  # left padding + mask: padding does not change any row
    assert all(s for s in singles)  # non-trivial: something was generated
    # only the new text comes back, never the prompt
    assert not any(b.startswith(p) for b, p in zip(batched, PROMPTS))
    # batch size does not matter for greedy
    assert generate_texts(model, tok, PROMPTS, temperature=0, max_new_tokens=10, seed=0,
                          batch_size=3) == batched


def test_stops_at_eos_and_reports_progress(tm):
    model, tok = tm
    calls = {"n": 0}

    def force_eos_after_two(module, args, output):
        calls["n"] += 1  # call 1 is the prefill; calls 2.. each add one token
        if calls["n"] == 3:
            output[..., tok.eos_token_id] += 1e4
        return output

    seen = []
    handle = model.lm_head.register_forward_hook(force_eos_after_two)
    try:
        out = generate_texts(model, tok, PROMPTS[:3], temperature=0, max_new_tokens=20, seed=1,
                             batch_size=3, progress=lambda d, t: seen.append((d, t)))
    finally:
        handle.remove()
    # Every row stopped after its first two tokens, though 20 were allowed.
    assert out == [_one_alone(model, tok, p, 2) for p in PROMPTS[:3]]
    assert out != [_one_alone(model, tok, p, 3) for p in PROMPTS[:3]]
    assert not any("<eos>" in o or "<pad>" in o for o in out)
    assert seen == [(3, 3)]


def test_chat_prompts(tm):
    model, tok = tm
    msgs = [{"role": "system", "content": "write"}, {"role": "user", "content": "the fox"}]
    # No chat template: flattened to role lines, the same text the trainer saw.
    assert tok.decode(encode_prompt(tok, msgs), skip_special_tokens=True) == \
        "system : write user : the fox assistant :"
    tok2 = build_word_tokenizer(TEXTS)
    tok2.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} "
                          "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")
    ids = encode_prompt(tok2, msgs)
    assert tok2.decode(ids) == "system : write user : the fox assistant :"
    out = generate_texts(model, tok2, [msgs, "the fox"], temperature=0, max_new_tokens=4, seed=0,
                         batch_size=2)
    assert len(out) == 2


class FakeParams:
    def __init__(self, **kw):
        self.kw = kw


class FakeEngine:
    """Mimics vllm.LLM.generate: a list of RequestOutput-like objects, in prompt order."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling_params, **kw):
        self.calls.append((prompts, sampling_params, kw))
        return [SimpleNamespace(outputs=[SimpleNamespace(text=f"out{len(p['prompt_token_ids'])}")])
                for p in prompts]


def test_vllm_backend_on_fake_engine(tm):
    _, tok = tm
    engine = FakeEngine()
    backend = make_backend("vllm", engine=engine, tokenizer=tok, sampling_params_cls=FakeParams)
    assert isinstance(backend, VLLMBackend) and backend.name == "vllm"
    seen = []
    out = backend.generate(PROMPTS, temperature=0.7, max_new_tokens=700, seed=42, batch_size=3,
                           progress=lambda d, t: seen.append((d, t)))
    expected_ids = [encode_prompt(tok, p) for p in PROMPTS]
    assert out == [f"out{len(i)}" for i in expected_ids]
    sent = [p["prompt_token_ids"] for call in engine.calls for p in call[0]]
    assert sent == expected_ids  # token ids, so vLLM cannot add a second BOS
    params = [sp.kw for call in engine.calls for sp in call[1]]
    assert params[0] == {"temperature": 0.7, "max_tokens": 700, "seed": 42, "top_p": 1.0, "top_k": -1}
    assert [p["seed"] for p in params] == [42, 43, 44, 45]  # one seed per prompt
    assert seen == [(3, 4), (4, 4)]


def test_backend_selection(tm, monkeypatch):
    model, tok = tm
    assert isinstance(make_backend(model=model, tokenizer=tok), TransformersBackend)
    monkeypatch.setattr(gen, "vllm_available", lambda: False)
    with pytest.raises(RuntimeError, match="vllm is not importable"):
        make_backend("vllm", model_path="x")
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_backend("tgi", model=model, tokenizer=tok)
    # The transformers backend is generate_texts behind the protocol.
    b = make_backend("transformers", model=model, tokenizer=tok)
    assert b.generate(PROMPTS[:2], temperature=0, max_new_tokens=5, seed=0) == \
        generate_texts(model, tok, PROMPTS[:2], temperature=0, max_new_tokens=5, seed=0)
