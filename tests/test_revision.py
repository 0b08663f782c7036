"""`model hf "..." { revision "..." }` reaches every `from_pretrained`.

Nothing can be downloaded here, so the hub is a local cache laid out as huggingface_hub lays
it out (`models--org--name/refs/<branch>` naming a commit, `snapshots/<commit>/` holding the
files), read offline. Its default branch and its `v1` tag hold different models (width and
vocabulary), so which one was loaded shows in the result, not in a spy."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tiny import tiny_project

pytest.importorskip("torch")

REPO = "ectc-test/tiny"
# revision -> (commit, hidden size, a word only its tokenizer knows)
REVISIONS = {"main": ("a" * 40, 64, "mainword"), "v1": ("b" * 40, 32, "revisionword")}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    from ectc.runtime.models import build_tiny_llama, build_word_tokenizer

    cache = tmp_path_factory.mktemp("hub")
    repo = cache / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    words = ("What is + ? I think the answer is . Correct or Incorrect Suggestibility Level : % none "
             "system user assistant")
    for rev, (commit, width, word) in REVISIONS.items():
        tokenizer = build_word_tokenizer([f"{words} {word}"])
        model = build_tiny_llama(tokenizer, layers=1, width=width, heads=2, seed=0)
        model.save_pretrained(repo / "snapshots" / commit)
        tokenizer.save_pretrained(repo / "snapshots" / commit)
        (repo / "refs" / rev).write_text(commit)
    return cache


# Loads the spec's `paper` profile model through run.py's stage_base (the path `ectc run`, the
# fan-out jobs and the multi-process workers all take); load_hf_model without a revision; and
# the vLLM backend, whose engine is a stand-in (vllm is not installed here) recording what it
# is given, while its tokenizer is real and comes from the offline hub.
SCRIPT = textwrap.dedent("""
    import sys, types
    from pathlib import Path
    from rich.console import Console
    from ectc.runtime.experiment import Experiment
    from ectc.runtime.generate import make_backend
    from ectc.runtime.models import load_hf_model
    from ectc.plan import stages
    from ectc.runtime.run import Options, prepare, stage_base

    def show(label, tok, *more):
        print(label, *more, " ".join(sorted(w for w in tok.get_vocab() if w.endswith("word"))))

    project, repo = Path(sys.argv[1]), sys.argv[2]
    exp = Experiment(project / "generated" / "sycophancy")
    opts = Options(profile="paper", runs_dir=project / "runs", quiet=True)
    run = prepare(exp, (project / "specs" / "sycophancy.ect").read_text(), opts, Console(quiet=True))
    stage_base(run, stages.base_stage(exp, run.shape, "data"))
    load = run.carried.load_base
    for label, (model, tok) in (("spec", load()), ("default", load_hf_model(repo, dtype="float32"))):
        show(label, tok, model.config.hidden_size)

    engine = {}
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = (lambda **kwargs: engine.update(kwargs)), dict
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda *args: args
    sys.modules.update({"vllm": vllm, "vllm.lora": types.ModuleType("vllm.lora"), "vllm.lora.request": request})
    backend = make_backend("vllm", model_path=repo, adapter_path="adapter", revision="v1")
    show("vllm", backend.tokenizer, engine["model"], engine["revision"], engine["tokenizer_revision"])
""")


def test_spec_revision_reaches_every_load(tmp_path, hub_cache):
    pytest.importorskip("bitsandbytes")  # the paper profile loads in NF4
    tiny_project(tmp_path, "sycophancy", [('model hf "Qwen/Qwen2.5-7B-Instruct"',
                                           f'model hf "{REPO}" {{ revision "v1" }}')])
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), REPO], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith(("spec ", "default ", "vllm "))]
    assert lines == ["spec 32 revisionword", "default 64 mainword", f"vllm {REPO} v1 v1 revisionword"]
