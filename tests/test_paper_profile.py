"""The paper profiles' code path, run for a few steps on the CPU with a tiny Llama-architecture
model saved to a local folder (nothing can be downloaded here): NF4 double quantization with
bf16 compute, LoRA on all seven projections (rank 512 for PPO), paged 8-bit AdamW, the PPO
entropy and temperature schedules; and for SFT the seed's footnote settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import tiny_project

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def local_llama(tmp_path_factory) -> Path:
    from ectc.runtime.models import build_tiny_llama, build_word_tokenizer

    words = ("What is + ? I think the answer is . Correct or Incorrect Suggestibility Level : % none "
             "Write an unbiased news article about Context You are a news writer Monitor label this will be "
             "judged from the editorial perspective The measure")
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = build_word_tokenizer([words])
    model = build_tiny_llama(tokenizer, layers=1, width=64, heads=2, seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ECTC_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ectc", "run", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)


def test_sycophancy_paper_profile_path(tmp_path, local_llama):
    tiny_project(tmp_path, "sycophancy", [('model hf "Qwen/Qwen2.5-7B-Instruct"', f'model hf "{local_llama}"'),
                                          ("split { train 256 test 48 }", "split { train 64 test 12 }")])
    out = run(tmp_path, "specs/sycophancy.ect", "--profile", "paper", "--steps-scale", "0.00125",
              "--arms", "ect")
    assert out.returncode == 0, out.stderr[-3000:]
    folder = tmp_path / "runs/sycophancy/paper"
    config = json.loads((folder / "arms/ect/seed0/final/adapter_config.json").read_text())
    assert config["r"] == 512 and config["lora_alpha"] == 1024
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"])
    history = [json.loads(l) for l in (folder / "arms/ect/seed0/history.jsonl").read_text().splitlines()]
    assert len(history) == 2
    # The schedules: temperature 1.9 -> 1.6 over the first 40% of steps, entropy 2.0 -> 0.01.
    assert history[0]["temperature"] == pytest.approx(1.9) and history[0]["entropy_coef"] == pytest.approx(2.0)
    assert history[1]["entropy_coef"] == pytest.approx(0.01)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"ect"}


def test_paper_model_loads_in_nf4_with_paged_adamw(local_llama):
    import torch

    from ectc.runtime.models import apply_lora, load_hf_model
    from ectc.runtime.rl import RLConfig, make_optimizer

    from ectc.schema import trainer_kwargs

    quantize = trainer_kwargs("quantize", {"bits": 4, "type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"})
    model, _ = load_hf_model(str(local_llama), quantize=quantize, dtype="bfloat16")
    assert getattr(model, "is_loaded_in_4bit", False)
    q = model.model.layers[0].self_attn.q_proj
    assert q.weight.quant_type == "nf4" and q.weight.quant_state.nested  # double quantization
    assert q.compute_dtype == torch.bfloat16
    model = apply_lora(model, trainer_kwargs("lora", {"rank": 512, "alpha": 1024, "dropout": 0.05,
                                                    "targets": ["q", "k", "v", "o", "up", "down", "gate"]}))
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad],
                         RLConfig(optimizer="paged_adamw_8bit", lr=2e-8))
    assert type(opt).__name__ == "PagedAdamW8bit"
