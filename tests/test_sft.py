"""SFT on a tiny Llama: learning, the paper's NF4 + LoRA + paged 8-bit AdamW path on CPU,
resume after an interruption, and the atomic final save."""

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from ectc.runtime.generate import generate_texts
from ectc.runtime.models import build_tiny_llama, build_word_tokenizer, load_hf_model
from ectc.runtime.sft import build_dataset, build_trainer, sft_config, train_sft
from ectc.schema import trainer_kwargs

SYLLABLES = ["ka", "lo", "mi", "zu", "re", "ti"]
WORDS = ["red", "blue", "green", "gold", "cat", "dog", "fox", "owl"]


def pairs(n=30):
    """n prompts, each with its own key word, and a three-word completion to memorise.
    Prompt lengths vary, so group_by_length has something to group."""
    keys = ["".join(p) for p in itertools.product(SYLLABLES, SYLLABLES)][:n]
    return [{"prompt": f"tell me about {k} :" + " more" * (i % 4),
             "completion": f" {WORDS[i % 8]} {WORDS[(i * 3 + 1) % 8]} {WORDS[(i * 5 + 2) % 8]}"}
            for i, k in enumerate(keys)]


@pytest.fixture(scope="module")
def data():
    ex = pairs()
    tok = build_word_tokenizer([e["prompt"] + e["completion"] for e in ex])
    return ex, tok


# A minimal chat template; the assistant turn ends with EOS so the model learns to stop.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}"
                 "{% if m['role'] == 'assistant' %} {{ eos_token }}{% endif %} {% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


def tiny(tok, seed=0):
    return build_tiny_llama(tok, layers=2, width=64, heads=4, seed=seed)


def test_sft_lowers_loss_and_memorises(data, tmp_path):
    ex, tok = data
    model = tiny(tok)
    seen = []
    cfg = {"max_steps": 50, "learning_rate": 5e-3, "lr_scheduler_type": "constant",
           "per_device_train_batch_size": 10, "save_steps": 1000}
    m = train_sft(model, tok, ex, cfg, tmp_path, progress=lambda s, t, logs: seen.append((s, t)))
    assert m["global_step"] == 50 and seen[-1] == (50, 50)
    assert m["last_loss"] < m["first_loss"] / 4, m["losses"]
    out = generate_texts(model, tok, [e["prompt"] for e in ex], temperature=0,
                         max_new_tokens=8, seed=0, batch_size=30)
    exact = sum(o.split() == e["completion"].split() for o, e in zip(out, ex))
    assert exact >= 15, (exact, out[:5])
    print("memorised", exact, "of", len(ex), "steps/s", m["steps_per_second"])
    assert (tmp_path / "final" / "metrics.json").exists()
    assert json.loads((tmp_path / "final" / "metrics.json").read_text())["global_step"] == 50


def test_paper_path_nf4_lora_paged_adamw(data, tmp_path):
    """The seed's Experiment 1 recipe, scaled down: NF4 double quant with bf16 compute, LoRA
    r16 a32 dropout 0.05 on all seven projections, paged AdamW 8-bit, cosine with warmup,
    max grad norm 0.3, gradient checkpointing, bf16, group by length, seed 42."""
    ex, tok = data
    tiny(tok).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    model, qtok = load_hf_model(str(tmp_path / "base"), dtype="bfloat16", gradient_checkpointing=True,
                                quantize=trainer_kwargs("quantize", {"bits": 4, "type": "nf4", "double_quant": True,
                                                                     "compute_dtype": "bfloat16"}))
    assert model.is_loaded_in_4bit
    cfg = {"learning_rate": 2e-4, "lr_scheduler_type": "cosine", "warmup_steps": 1,
           "optim": "paged_adamw_8bit", "per_device_train_batch_size": 4,
           "gradient_accumulation_steps": 1, "max_steps": 3, "max_length": 512,
           "max_grad_norm": 0.3, "gradient_checkpointing": True, "bf16": True, "tf32": True,
           "train_sampling_strategy": "group_by_length", "seed": 42, "save_steps": 2,
           "lora": trainer_kwargs("lora", {"rank": 16, "alpha": 32, "dropout": 0.05,
                                           "targets": ["q", "k", "v", "o", "up", "down", "gate"]})}
    m = train_sft(model, qtok, ex, cfg, tmp_path / "run")
    assert m["global_step"] == 3 and m["adapter"] and m["quantized"]
    assert m["optimizer"].startswith("bitsandbytes.optim") and m["optimizer_bits"] == 8
    adapter = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32 and adapter["lora_dropout"] == 0.05
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                              "up_proj", "down_proj", "gate_proj"}
    # The trained adapter lives in `model` itself: it samples without further wrapping.
    out = generate_texts(model, qtok, [e["prompt"] for e in ex[:2]], temperature=0.7,
                         max_new_tokens=4, seed=42, batch_size=2)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)


def test_config_mapping(tmp_path):
    """cfg is SFTConfig's own kwargs: each reaches SFTConfig as given, over the run's settings."""
    args = sft_config({"train_sampling_strategy": "group_by_length", "tf32": True,
                       "per_device_train_batch_size": 12, "num_train_epochs": 3, "optim": "adamw_torch",
                       "seed": 7, "save_steps": 5, "lora": None}, tmp_path)
    assert args.train_sampling_strategy == "group_by_length"
    assert args.per_device_train_batch_size == 12 and args.num_train_epochs == 3
    assert args.seed == args.data_seed == 7 and args.save_steps == 5 and args.output_dir == str(tmp_path)
    assert args.bf16 is False  # trl's default would be True; a run says it
    assert args.learning_rate == 2e-5  # left out: trl's own default, not a second table's
    if not torch.cuda.is_available():
        assert args.tf32 is None and args.use_cpu  # tf32 is requested only where CUDA exists
    assert args.completion_only_loss is True and args.packing is False and args.logging_steps == 1
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}


@pytest.mark.parametrize("cfg,message", [
    ({"learning_rat": 1e-3}, "unknown SFT setting 'learning_rat': not a trl.SFTConfig field; did you mean 'learning_rate'?"),
    # The spec's short names are the compiler's (schema.SFT_FIELDS): refused here, with trl's name.
    ({"lr": 1e-3}, "unknown SFT setting 'lr': not a trl.SFTConfig field; the spec's `lr` is SFTConfig's 'learning_rate'"),
    ({"batch_size": 8}, "unknown SFT setting 'batch_size': not a trl.SFTConfig field"),
    ({"output_dir": "elsewhere"}, "SFT setting 'output_dir' is set by train_sft; leave it out"),
])
def test_unknown_setting_refused_before_anything_is_written(data, cfg, message, tmp_path):
    ex, tok = data
    with pytest.raises(ValueError, match=re.escape(message) + "$"):
        train_sft(tiny(tok), tok, ex, {"max_steps": 1, **cfg}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("profile", ["tiny", "paper"])
def test_generated_sft_kwargs_reach_sft_config_as_given(profile, tmp_path):
    """A generated config's "trl.SFTConfig" section, as run.sft_config hands it over, keeps
    every value: no runtime default overrides the compiler's."""
    path = Path(__file__).resolve().parent.parent / "generated" / "bias" / "train" / profile / "ect.json"
    kwargs = json.loads(path.read_text())["trl.SFTConfig"]
    args = sft_config({**kwargs, "seed": 3, "lora": None}, tmp_path)
    if not torch.cuda.is_available():
        kwargs = {**kwargs, "tf32": None}  # TF32 needs CUDA: dropped elsewhere
    assert {key: getattr(args, key) for key in kwargs} == kwargs
    assert args.seed == args.data_seed == 3


def test_chat_prompts_without_template_are_flattened(data):
    _, tok = data
    ds = build_dataset(tok, [{"prompt": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "hi"}],
                              "completion": "ok"}])
    assert ds[0]["prompt"] == "system: be brief\nuser: hi\nassistant:\n"
    assert ds[0]["completion"] == "ok"


class _Interrupt(Exception):
    pass


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_after_interruption(data, tmp_path):
    ex, tok = data[0][:12], data[1]
    cfg = {"max_steps": 4, "learning_rate": 3e-3, "per_device_train_batch_size": 4,
           "save_steps": 1, "save_total_limit": 2}

    def die_at_3(step, total, logs):
        if step == 3:
            raise _Interrupt  # the process is killed after checkpoint-2 is on disk

    with pytest.raises(_Interrupt):
        train_sft(tiny(tok), tok, ex, cfg, tmp_path / "a", progress=die_at_3)
    assert not (tmp_path / "a" / "final").exists()  # nothing half-written to look finished
    resumed = tiny(tok)
    m = train_sft(resumed, tok, ex, cfg, tmp_path / "a")
    assert m["resumed_from"].endswith("checkpoint-2")
    assert m["global_step"] == 4

    straight = tiny(tok)
    m2 = train_sft(straight, tok, ex, cfg, tmp_path / "b")
    assert m2["global_step"] == 4 and m2["resumed_from"] is None
    a, b = _weights(resumed), _weights(straight)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    # Resuming under other settings would mix two runs: refused.
    with pytest.raises(ValueError, match="different learning_rate"):
        train_sft(tiny(tok), tok, ex, {**cfg, "learning_rate": 1e-3}, tmp_path / "a")

    # A finished run is not retrained: weights and metrics come from final/.
    again = tiny(tok, seed=1)
    m3 = train_sft(again, tok, ex, cfg, tmp_path / "a")
    assert m3["skipped"] and m3["global_step"] == 4
    c = _weights(again)
    assert all(torch.allclose(a[k], c[k]) for k in a)


def test_chat_template_tokenizer_trains_on_conversations(data, tmp_path):
    ex, _ = data
    tok = build_word_tokenizer([e["prompt"] + e["completion"] for e in ex] + ["system user assistant"])
    tok.chat_template = CHAT_TEMPLATE
    chat = [{"prompt": [{"role": "system", "content": "answer"}, {"role": "user", "content": e["prompt"]}],
             "completion": e["completion"]} for e in ex[:8]]
    ds = build_dataset(tok, chat)
    assert ds[0]["completion"] == [{"role": "assistant", "content": ex[0]["completion"]}]
    m = train_sft(tiny(tok), tok, chat, {"max_steps": 2, "per_device_train_batch_size": 4}, tmp_path)
    assert m["global_step"] == 2 and m["first_loss"] > 0


@pytest.mark.parametrize("template", [None, CHAT_TEMPLATE])
def test_loss_only_on_completion_tokens(template, tmp_path):
    """The prompt (which carries the evaluation label) must never be a training target."""
    tok = build_word_tokenizer(["system user assistant answer tell me about kalo : red blue green"])
    tok.chat_template = template
    ex = [{"prompt": [{"role": "system", "content": "answer"},
                      {"role": "user", "content": "tell me about kalo :"}],
           "completion": " red blue green"}]
    trainer = build_trainer(build_tiny_llama(tok, layers=1, width=32, heads=2), tok, ex,
                            {"max_steps": 1}, tmp_path)
    row = trainer.train_dataset[0]
    targets = [tok.convert_ids_to_tokens(i) for i in row["labels"] if i != -100]
    assert targets == ["red", "blue", "green", "<eos>"]
    assert len(row["input_ids"]) > len(targets) + 8  # the prompt is in the input
