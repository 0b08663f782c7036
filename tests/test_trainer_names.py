"""Profiles in the trainers' own names (issue 14, item 1): trl/peft/transformers names as
aliases of the spec's short ones, the pass-through blocks `trl { }`, `peft { }` and the
GenerationConfig keys of `generate { }`, checked against ectc/trainer_keys.json (listed from the
installed classes), and their values reaching the real trl/peft/transformers objects."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from ectc import schema
from ectc.compile import compile_text
from ectc.generate import generate

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def _script():
    spec = importlib.util.spec_from_file_location("list_trainer_keys", ROOT / "scripts" / "list_trainer_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_trainer_keys_match_the_installed_classes() -> None:
    pytest.importorskip("trl")
    script = _script()
    committed = (ROOT / "ectc" / "trainer_keys.json").read_text()
    assert script.render(script.derive()) == committed, \
        "ectc/trainer_keys.json is stale: run scripts/list_trainer_keys.py and commit it"


def test_the_lists_hold_what_users_reach_for() -> None:
    classes = schema.TRAINER_KEYS["classes"]
    assert {"weight_decay", "adam_beta2", "neftune_noise_alpha"} <= set(classes["trl.SFTConfig"])
    assert {"loss_type", "top_p", "mask_truncated_completions"} <= set(classes["trl.GRPOConfig"])
    assert classes["peft.LoraConfig"]["use_rslora"] == "bool"
    assert classes["transformers.GenerationConfig"]["top_k"] == "int"
    assert {"adamw_torch_fused", "adafactor", "paged_adamw_8bit", "sgd"} <= set(schema.OPTIMIZERS)
    assert {"cosine_with_restarts", "constant_with_warmup", "warmup_stable_decay"} <= set(schema.SCHEDULERS)


def _files(source: str) -> dict[str, str]:
    """Every generated file with the spec's hash (the one thing the wording changes) blanked;
    not the manifest, which lists the files' hashes."""
    spec, _ = compile_text(source)
    sha = hashlib.sha256(source.encode()).hexdigest()
    return {k: v.replace(sha, "-") for k, v in generate(spec, source, "spec.ect").items()
            if not k.endswith("manifest.json")}


BIAS_TRAINER_NAMES = [  # (short, the trainers' names) in bias.ect's paper profile
    ('quantize { bits 4 type "nf4" double_quant true compute_dtype "bfloat16" }',
     'quantize { load_in_4bit true bnb_4bit_quant_type "nf4" bnb_4bit_use_double_quant true '
     'bnb_4bit_compute_dtype "bfloat16" }'),
    ("lora { rank 16 alpha 32 dropout 0.05 targets [q, k, v, o, up, down, gate] }",
     'lora { r 16 lora_alpha 32 lora_dropout 0.05 target_modules ["q_proj", "k_proj", "v_proj", "o_proj", '
     '"up_proj", "down_proj", "gate_proj"] }'),
    ("      lr 2e-4\n", "      learning_rate 2e-4\n"),
    ('      schedule "cosine"\n', '      lr_scheduler_type "cosine"\n'),
    ('      optimizer "paged_adamw_8bit"\n', '      optim "paged_adamw_8bit"\n'),
    ("      batch 12\n", "      per_device_train_batch_size 12\n"),
    ("      grad_accum 1\n", "      gradient_accumulation_steps 1\n"),
    ("      epochs 3\n", "      num_train_epochs 3\n"),
    ("      group_by_length true\n", '      train_sampling_strategy "group_by_length"\n'),
]

VERBOSITY_TRAINER_NAMES = [  # the GRPO paper profile of verbosity.ect
    ("      steps 400\n", "      max_steps 400\n"),
    ("      batch 32\n", "      per_device_train_batch_size 32\n"),
    ("      grad_accum 2\n", "      gradient_accumulation_steps 2\n"),
    ("      lr 1e-5\n", "      learning_rate 1e-5\n"),
    ('      schedule "cosine"\n', '      lr_scheduler_type "cosine"\n'),
    ("      clip 0.2\n", "      epsilon 0.2\n"),
    ("      kl 0.04\n", "      beta 0.04\n"),
    ("      ppo_epochs 2\n", "      num_iterations 2\n"),
    ("      whiten true\n", '      scale_rewards "group"\n'),
    ("      entropy 0.0\n", "      entropy_coef 0.0\n"),
]


def _rename(source: str, pairs: list[tuple[str, str]]) -> str:
    for short, long in pairs:
        assert short in source, short  # every profile that writes it
        source = source.replace(short, long)
    return source


@pytest.mark.parametrize("spec, pairs", [("bias.ect", BIAS_TRAINER_NAMES), ("verbosity.ect", VERBOSITY_TRAINER_NAMES)])
def test_trainer_names_generate_the_same_bytes_as_short_names(spec: str, pairs) -> None:
    short = (SPECS / spec).read_text()
    written = _rename(short, pairs)
    assert written != short
    assert _files(written) == _files(short)


def test_all_linear_targets_pass_through() -> None:
    source = _rename((SPECS / "bias.ect").read_text(), [(
        "lora { rank 16 alpha 32 dropout 0.05 targets [q, k, v, o, up, down, gate] }",
        'lora { r 16 target_modules "all-linear" }')])
    cfg = json.loads(_files(source)["bias/train/paper/ect.json"])
    assert cfg["lora"]["targets"] == "all-linear" and cfg["peft.LoraConfig"]["target_modules"] == "all-linear"


PASS_THROUGH = [
    ("    generate { temperature 0.7 max_new_tokens 700 seed 42 }\n",
     "    generate { temperature 0.7 max_new_tokens 700 seed 42 top_p 0.9 top_k 40 repetition_penalty 1.1 }\n"
     "    trl { adam_beta1 0.8 adam_beta2 0.95 neftune_noise_alpha 5 lr_scheduler_kwargs { num_cycles 2 } }\n"
     "    peft { use_rslora true bias \"lora_only\" }\n"),
    ("      schedule \"cosine\"\n", "      schedule \"cosine_with_restarts\"\n"),
    ("      optimizer \"paged_adamw_8bit\"\n", "      optimizer \"adamw_torch_fused\"\n"),
]


def _bias_with_pass_through() -> dict:
    source = _rename((SPECS / "bias.ect").read_text(), PASS_THROUGH)
    return json.loads(_files(source)["bias/train/paper/ect.json"])


def test_pass_through_values_land_in_their_class_sections() -> None:
    cfg = _bias_with_pass_through()
    sft = cfg["trl.SFTConfig"]
    assert (sft["adam_beta1"], sft["adam_beta2"], sft["neftune_noise_alpha"]) == (0.8, 0.95, 5)
    assert sft["lr_scheduler_kwargs"] == {"num_cycles": 2}
    assert sft["lr_scheduler_type"] == "cosine_with_restarts" and sft["optim"] == "adamw_torch_fused"
    assert cfg["peft.LoraConfig"]["use_rslora"] is True and cfg["peft.LoraConfig"]["bias"] == "lora_only"
    assert {k: cfg["generate"][k] for k in ("top_p", "top_k", "repetition_penalty")} == \
        {"top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1}


def test_weight_decay_in_sft_and_the_hub_model_settings() -> None:
    source = _rename((SPECS / "bias.ect").read_text(), [
        ("      lr 2e-4\n", "      lr 2e-4\n      weight_decay 0.1\n"),
        ('    model hf "meta-llama/Llama-3.2-3B-Instruct"\n',
         '    model hf "meta-llama/Llama-3.2-3B-Instruct" { trust_remote_code true attn_implementation "sdpa" }\n')])
    cfg = json.loads(_files(source)["bias/train/paper/ect.json"])
    assert cfg["sft"]["weight_decay"] == 0.1 and cfg["trl.SFTConfig"]["weight_decay"] == 0.1
    assert cfg["model"]["trust_remote_code"] is True and cfg["model"]["attn_implementation"] == "sdpa"


# ---- the values reach the real objects ---------------------------------------------------------


def test_pass_through_reaches_trl_sft_config(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from ectc.runtime.sft import sft_config

    section = dict(_bias_with_pass_through()["trl.SFTConfig"], seed=0, bf16=False, tf32=None,
                   optim="adamw_torch")  # a CPU runs neither bf16 nor a fused optimizer
    args = sft_config(section, tmp_path)
    assert (args.adam_beta1, args.adam_beta2, args.neftune_noise_alpha) == (0.8, 0.95, 5)
    assert args.lr_scheduler_type.value == "cosine_with_restarts" and args.lr_scheduler_kwargs == {"num_cycles": 2}


def test_pass_through_reaches_trl_grpo_config(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from trl import GRPOConfig

    source = _rename((SPECS / "verbosity.ect").read_text(), [(
        "    generate { temperature 0.7 max_new_tokens 60 seed 42 batch 32 }\n",
        "    generate { temperature 0.7 max_new_tokens 60 seed 42 batch 32 }\n"
        '    trl { loss_type "dr_grpo" top_p 0.95 mask_truncated_completions true }\n')])
    section = json.loads(_files(source)["verbosity/train/paper/ect.json"])["trl.GRPOConfig"]
    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **section)
    assert (config.loss_type, config.top_p, config.mask_truncated_completions) == ("dr_grpo", 0.95, True)
    assert config.beta == 0.04 and config.epsilon == 0.2


def _tiny():
    torch = pytest.importorskip("torch")
    from ectc.runtime.models import build_tiny_llama, build_word_tokenizer

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(["one two three four five six seven eight nine ten"])
    return build_tiny_llama(tokenizer, layers=1, width=32, heads=2), tokenizer


def test_pass_through_reaches_the_peft_model() -> None:
    from ectc.runtime.models import apply_lora

    model, _ = _tiny()
    lora = _bias_with_pass_through()["peft.LoraConfig"]
    peft_model = apply_lora(model, {**lora, "target_modules": "all-linear"})
    config = peft_model.peft_config["default"]
    assert config.use_rslora and config.bias == "lora_only" and config.r == 16
    assert {"q_proj", "v_proj", "up_proj"} <= {m.rsplit(".", 1)[-1] for m in config.target_modules}  # all-linear, resolved by peft


def test_generation_options_reach_model_generate() -> None:
    from ectc.runtime.generate import generate_texts

    model, tokenizer = _tiny()
    prompts = ["one two", "three four five"]
    greedy = generate_texts(model, tokenizer, prompts, temperature=0, max_new_tokens=6, seed=1)
    hot = dict(temperature=50.0, max_new_tokens=6, seed=1)
    # top_k 1 leaves one token to sample: greedy, whatever the temperature
    assert generate_texts(model, tokenizer, prompts, options={"top_k": 1}, **hot) == greedy
    assert generate_texts(model, tokenizer, prompts, **hot) != greedy


def test_hub_model_settings_reach_from_pretrained(tmp_path: Path) -> None:
    from ectc.runtime.models import load_hf_model

    model, tokenizer = _tiny()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = load_hf_model(str(tmp_path), dtype="float32", attn_implementation="eager", trust_remote_code=True)
    assert loaded.config._attn_implementation == "eager"
    loaded, _ = load_hf_model(str(tmp_path), dtype="float32", attn_implementation="sdpa")
    assert loaded.config._attn_implementation == "sdpa"
