"""The optional parts of ectc: each an extra of pyproject.toml, named here by the modules it
brings, so a command that needs one says which to install in one line instead of a traceback.

`pip install ectc` is the compiler alone (check, fmt, build, diff, explain, plan, runs);
`ectc[train]` runs experiments, `[judge]` calls Claude, `[slurm]` fans out through submitit,
`[vllm]` generates through vLLM, `[lsp]` serves editors (and shell completion), `[inspect]`
writes Inspect AI logs, `[track]`/`[wandb]` send training statistics to a tracker. tests/test_extras.py holds this table and pyproject.toml in
step. Torch-free: nothing here imports what it names.
"""

from __future__ import annotations

import importlib.util
import sys

EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "tokenizers", "huggingface_hub", "gguf", "trl", "peft", "bitsandbytes", "datasets",
              "accelerate", "yaml", "numpy", "scipy", "matplotlib"),
    "judge": ("anthropic",),
    "slurm": ("submitit",),
    "vllm": ("vllm",),
    "lsp": ("pygls", "lsprotocol", "shtab"),
    "inspect": ("inspect_ai",),
    "track": ("tensorboard", "trackio"),
    "wandb": ("wandb",),
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: blocked (what the tests use to hide one)
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def extra_of(module: str) -> str | None:
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def line(extra: str, what: str, gone: list[str]) -> str:
    return f"{what} needs the [{extra}] extra ({', '.join(gone)} not installed): pip install 'ectc[{extra}]'"


def problem(extra: str, what: str) -> str | None:
    """One line saying `what` needs `extra` and how to install it; None when it is installed."""
    gone = [m for m in EXTRAS[extra] if not installed(m)]
    return line(extra, what, gone) if gone else None


def missing_module(exc: ModuleNotFoundError, what: str) -> str | None:
    """The line for an import that failed mid-command; None when the module is no extra's."""
    extra = extra_of(exc.name or "")
    return line(extra, what, [exc.name.split(".")[0]]) if extra else None
