"""The compiled experiment as the runtime sees it: `generated/<experiment>/` loaded (the typed
plan, templates and generated files, `plan.compiled`), its generated modules imported, and the
label and prompt rendering every stage shares. Nothing here is experiment-specific."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from pathlib import Path
from typing import Any, Callable, Mapping

from ..plan.compiled import CompiledExperiment
from ..plan.model import Arm, Profile
from ..sandbox import environment

_ENV = environment()


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_rows(plan, filters: Mapping[str, Callable[[dict], bool]], arm: Arm, data: dict) -> list[dict]:
    """The rows an arm trains on: the main data's train split, through the arm's filter
    (`filters`: the generated feedback module's FILTERS)."""
    rows = data[plan.main_data]["train"]
    if arm.filter:
        keep = filters[arm.filter]
        rows = [r for r in rows if keep(r)]
    return rows


class Experiment(CompiledExperiment):
    """One compiled experiment, loaded from its generated folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        super().__init__(self.read_folder(self.folder))
        self.manifest: dict = json.loads(self.files["manifest.json"])
        tag = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:8]
        self.dataset = _load_module(self.folder / "dataset.py", f"ectc_gen_{tag}_dataset")
        self.feedback = _load_module(self.folder / "feedback.py", f"ectc_gen_{tag}_feedback")
        self.metrics = _load_module(self.folder / "metrics.py", f"ectc_gen_{tag}_metrics")
        self._compiled: dict[str, Any] = {}

    # ---- templates ------------------------------------------------------------------

    def render(self, template: str, context: dict) -> str:
        if template not in self._compiled:
            self._compiled[template] = _ENV.from_string(self.templates[template])
        return self._compiled[template].render(context)

    def template_for(self, profile: Profile, key: str) -> str | None:
        name = getattr(profile.templates, key)
        return name if name in self.templates else None

    # ---- labels ---------------------------------------------------------------------

    def label_text(self, value: Any, encode: str, profile: Profile) -> str:
        """The evaluation label for an axis value, in the arm's encoding."""
        axis = self.plan.axis
        if encode == "number":
            if axis.type == "enum":
                return str([v.name for v in axis.values].index(value))
            return f"{float(value):.2f}"
        text = self.render("label", axis.context(value))
        if encode == "id":
            # An arbitrary but consistent token per label: the reviewers' "arbitrary vs meaningful"
            # ablation keeps the association and drops the meaning.
            return "ID-" + hashlib.sha256(text.encode()).hexdigest()[:6]
        return text

    def unlabeled_text(self, profile: Profile) -> str:
        name = self.template_for(profile, "unlabeled")
        return self.render(name, {}) if name else ""

    def training_labels(self, arm: Arm, rows: list[dict], seed: int, profile: Profile) -> list[str]:
        """The label each training row is shown for this arm."""
        axis_name = self.plan.axis.name
        if arm.train_label == "none":
            return [self.unlabeled_text(profile)] * len(rows)
        if arm.train_label == "fixed":
            return [self.label_text(arm.fixed_value, arm.encode, profile)] * len(rows)
        values = [r[axis_name] for r in rows]
        if arm.train_label == "shuffled":
            # A permutation of the true values across rows: same label tokens, no association.
            random.Random(f"shuffle:{seed}").shuffle(values)
        return [self.label_text(v, arm.encode, profile) for v in values]

    def inference_label(self, arm: Arm, value: Any, profile: Profile) -> str:
        if arm.infer == "none":
            return self.unlabeled_text(profile)
        return self.label_text(value, arm.encode, profile)

    # ---- prompts --------------------------------------------------------------------

    def prompt_parts(self, row: dict, label: str, profile: Profile) -> tuple[str | None, str]:
        context = {**row, "label": label}
        system = self.template_for(profile, "system")
        user = self.render(self.template_for(profile, "prompt") or "prompt", context)
        return (self.render(system, context) if system else None), user

    def messages(self, row: dict, label: str, profile: Profile) -> list[dict] | str:
        system, user = self.prompt_parts(row, label, profile)
        if system is None:
            return user
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def prompt_string(tokenizer, prompt: list[dict] | str) -> str:
    """A prompt as one string, through the chat template when the tokenizer has one."""
    from .generate import format_prompt

    prompt = format_prompt(tokenizer, prompt)
    if isinstance(prompt, str):
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
