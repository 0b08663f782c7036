"""ectc.runtime.rl and warmup: the one-token fast path, the paper profile's NF4 code path,
determinism, and text GRPO through trl."""

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from ectc.runtime.models import (  # noqa: E402
    apply_lora, build_tiny_llama, build_word_tokenizer, load_hf_model, save_model_atomic,
)
from ectc.runtime.rl import (  # noqa: E402
    RLConfig, choice_distribution, train_choice_rl, train_text_grpo,
)
from ectc.runtime.warmup import supervised_warmup  # noqa: E402
from ectc.schema import trainer_kwargs  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core box: one intra-op thread is faster than two contending.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CHOICES = ["Yes", "No"]


def render(row):
    return f"x is {row['x']} Say Yes or No"


def sample_rows(step, n, rng):
    return [{"x": int(v)} for v in rng.integers(0, 10, n)]


def parity_reward(rows, answers):
    # Yes on even x, No on odd x: learnable only by reading the prompt.
    return [1.0 if (a == "Yes") == (r["x"] % 2 == 0) else 0.0 for r, a in zip(rows, answers)]


@pytest.fixture
def tok():
    return build_word_tokenizer(["x is 0 Say Yes or No", "Is it ?"], extra_tokens=CHOICES)


def test_fast_path_learns_a_rewardable_choice(tok):
    model = build_tiny_llama(tok, layers=2, width=32, heads=2, seed=0)
    cfg = RLConfig(steps=40, batch_size=64, minibatch_size=64, lr=3e-3, seed=0)
    hist = train_choice_rl(model, tok, sample_rows, render, CHOICES, parity_reward, cfg)
    assert np.mean([h["reward_mean"] for h in hist[:3]]) < 0.7
    assert np.mean([h["reward_mean"] for h in hist[-5:]]) > 0.95
    p = choice_distribution(model, tok, [render({"x": x}) for x in range(10)], CHOICES)
    assert p.shape == (10, 2) and np.allclose(p.sum(1), 1)
    assert ((p[:, 0] > 0.9) == (np.arange(10) % 2 == 0)).all()


def test_schedules_minibatches_kl_and_determinism(tok):
    cfg = RLConfig(steps=6, batch_size=16, minibatch_size=8, gradient_accumulation_steps=2, ppo_epochs=2,
                   lr=1e-3, entropy_start=2.0, entropy_end=0.01, temperature_start=1.9,
                   temperature_end=1.6, temperature_fraction=0.4, kl_coef=0.1, seed=7)

    def run():
        model = apply_lora(build_tiny_llama(tok, layers=1, width=32, heads=2, seed=1),
                           trainer_kwargs("lora", {"rank": 4, "alpha": 8, "dropout": 0.0, "targets": ["q", "v"]}))
        hist = train_choice_rl(model, tok, sample_rows, render, CHOICES, parity_reward, cfg)
        return hist, choice_distribution(model, tok, [render({"x": x}) for x in range(10)], CHOICES)

    (h1, p1), (h2, p2) = run(), run()
    assert [round(h["temperature"], 6) for h in h1] == [1.9, 1.775, 1.65, 1.6, 1.6, 1.6]  # 40% of 6 steps = 2.4
    assert h1[0]["entropy_coef"] == 2.0 and abs(h1[-1]["entropy_coef"] - 0.01) < 1e-9
    assert h1[-1]["kl"] > 0  # the adapter moved away from the reference (adapter disabled)
    strip = lambda h: [{k: v for k, v in s.items() if k != "seconds"} for s in h]  # noqa: E731
    assert strip(h1) == strip(h2) and np.array_equal(p1, p2)


def test_different_lengths_are_left_padded(tok):
    # The answer slot is the last position whatever the prompt length: a prompt scored alone
    # and inside a batch with a longer prompt gives the same distribution.
    model = build_tiny_llama(tok, layers=1, width=32, heads=2)
    short, long = "x is 1 Say", "x is 1 Say Yes or No x is 2 Say Yes or No"
    alone = choice_distribution(model, tok, [short], CHOICES)
    batched = choice_distribution(model, tok, [long, short], CHOICES)
    assert np.allclose(alone[0], batched[1], atol=1e-5)


def test_warmup_lowers_loss_on_targets_only(tok):
    model = build_tiny_llama(tok, layers=1, width=32, heads=2)
    pairs = lambda rng, n: [(render({"x": x}), "Yes" if x % 2 == 0 else "No")  # noqa: E731
                            for x in (rng.randint(0, 9) for _ in range(n))]
    hist = supervised_warmup(model, tok, pairs, steps=60, batch_size=32, lr=1e-2, seed=0)
    assert hist[-1] < 0.2 * hist[0]
    hist2 = supervised_warmup(model, tok, [("x is 1 Say", "No")] * 3, steps=2, batch_size=2, lr=1e-3)
    assert len(hist2) == 2


def test_warmup_sequence_loss_scores_the_prompt_too(tok):
    from ectc.runtime.warmup import encode_pairs

    pairs = [("x is 1 Say", "No"), ("x is 22 Say Yes or", "Yes")]
    ids, mask, target_only = encode_pairs(tok, pairs)
    _, _, sequence = encode_pairs(tok, pairs, loss_on="sequence")
    for row in range(2):
        real = ids[row][mask[row].bool()].tolist()
        assert real[0] == tok.bos_token_id
        # target only: just the answer token is scored
        assert [t for t in target_only[row].tolist() if t != -100] == tok(pairs[row][1], add_special_tokens=False)["input_ids"]
        # sequence: every real token but the leading <bos>
        assert [t for t in sequence[row].tolist() if t != -100] == real[1:]


def test_paper_profile_path_nf4_lora512_paged_adamw(tok, tmp_path):
    """The paper profile's code path on a tiny Llama: save -> load_hf_model with NF4 double
    quant -> LoRA rank 512 on all seven projections -> PagedAdamW8bit PPO steps with the
    schedules. (Width 128: bitsandbytes' CPU 4-bit kernels want in_features % 64 == 0.)"""
    save_model_atomic(build_tiny_llama(tok, layers=2, width=128, heads=4), tok, tmp_path / "base")
    quant = trainer_kwargs("quantize", {"bits": 4, "type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"})
    model, tok2 = load_hf_model(str(tmp_path / "base"), quantize=quant, dtype="float32")
    import bitsandbytes as bnb

    assert isinstance(model.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    model = apply_lora(model, trainer_kwargs("lora", {"rank": 512, "alpha": 1024, "dropout": 0.05,
                                                    "targets": ["q", "k", "v", "o", "up", "down", "gate"]}))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert len(before) == 14
    cfg = RLConfig(steps=3, batch_size=16, minibatch_size=8, ppo_epochs=2, lr=2e-4, clip_range=0.2,
                   whiten_rewards=True, max_grad_norm=1.0, entropy_start=2.0, entropy_end=0.01,
                   temperature_start=1.9, temperature_end=1.6, temperature_fraction=0.4,
                   optimizer="paged_adamw_8bit", seed=0)
    hist = train_choice_rl(model, tok2, sample_rows, render, CHOICES, parity_reward, cfg)
    assert len(hist) == 3 and all(np.isfinite(h["pg_loss"]) for h in hist)
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert len(moved) == 14


def test_text_grpo_two_steps(tok, tmp_path):
    model = build_tiny_llama(tok, layers=1, width=32, heads=2)
    prompts = [render({"x": x}) for x in range(8)]
    seen = []

    def says_yes(indices, completions):
        seen.append((indices[0], completions[0]))
        return [1.0 if "Yes" in c else 0.0 for c in completions]

    rl = {"steps": 2, "batch": 4, "grad_accum": 1, "lr": 1e-4, "schedule": "constant", "warmup_steps": 0,
          "clip": 0.25, "kl": 0.0, "ppo_epochs": 1, "whiten": False, "max_grad_norm": 1.0,
          "temperature": {"start": 1.0, "end": 1.0, "fraction": 1.0},
          "entropy": {"start": 0.01, "end": 0.01, "fraction": 1.0}, "num_generations": 2, "optimizer": "adamw"}
    args = {**trainer_kwargs("grpo", rl), "max_completion_length": 4}
    assert (args["epsilon"], args["scale_rewards"], args["entropy_coef"], args["optim"]) == (
        0.25, "none", 0.01, "adamw_torch")
    logs, used = train_text_grpo(model, tok, prompts, says_yes, args, str(tmp_path / "grpo"))
    assert seen and seen[0][0] in range(8) and isinstance(seen[0][1], str)
    assert [e["step"] for e in logs if "loss" in e] == [1, 2]
    assert used.epsilon == 0.25 and used.entropy_coef == 0.01 and used.max_steps == 2


def test_grpo_kwargs_refuse_a_varying_schedule():
    rl = {"temperature": {"start": 1.2, "end": 0.8, "fraction": 0.5}}
    with pytest.raises(ValueError, match="constant"):
        trainer_kwargs("grpo", {**{k: 1 for k in ("steps", "batch", "grad_accum", "lr", "schedule", "warmup_steps", "clip",
                                      "kl", "ppo_epochs", "max_grad_norm", "num_generations")},
                                "whiten": True, "optimizer": "adamw", "entropy": 0.0, **rl})