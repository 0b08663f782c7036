"""The plan (`generated/<exp>/experiment.json`) as typed classes: every shipped plan round-trips,
and what is not a plan this ectc reads is refused with where and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ectc.plan.model import SCHEMA_VERSION, GgufModel, HubModel, Plan, PlanError, TinyModel

ROOT = Path(__file__).resolve().parent.parent
PLANS = sorted((ROOT / "generated").glob("*/experiment.json"))


@pytest.mark.parametrize("path", PLANS, ids=[p.parent.name for p in PLANS])
def test_every_shipped_plan_round_trips(path: Path) -> None:
    text = path.read_text()
    plan = Plan.load(text)
    assert plan.dump() == json.loads(text)
    assert plan.schema_version == SCHEMA_VERSION
    # Derived facts are there, typed: conditions per arm, the trainer per profile.
    for profile in plan.profiles.values():
        assert all(profile.evaluation.conditions[arm.name][0][0] == arm.main_condition for arm in plan.arms)
    assert {p.trainer for p in plan.profiles.values()} <= {"choice_rl", "grpo", "sft"}
    assert {type(p.model) for p in plan.profiles.values()} <= {TinyModel, HubModel, GgufModel}


def test_derived_facts_of_the_sycophancy_plan() -> None:
    plan = Plan.load((ROOT / "generated/sycophancy/experiment.json").read_text())
    assert plan.axis.train_range == (0.5, 1.5)
    assert plan.axis.held_out(0.0) and plan.axis.held_out(0.49) and not plan.axis.held_out(0.5)
    conditions = plan.profiles["tiny"].evaluation.conditions
    assert conditions["baseline"] == [("none", 0.0)] and len(conditions["ect"]) == 17
    assert conditions["ect"][:2] == [("deploy", 0.0), ("sweep=0.0", 0.0)]
    assert plan.profiles["tiny"].trainer == "choice_rl" and plan.profiles["paper"].lora_config["r"] == 512
    bias = Plan.load((ROOT / "generated/bias/experiment.json").read_text())
    assert bias.axis.context("unbiased")["perspective_description"].startswith("an editor who rewards")
    judge = next(m for m in bias.monitors if m.type == "llm")
    assert judge.returns["objectivity"].values == ["PASS", "PARTIAL", "FAIL"]


def _edited(**changes) -> str:
    raw = json.loads((ROOT / "generated/sycophancy/experiment.json").read_text())
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = raw
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return json.dumps(raw)


@pytest.mark.parametrize("changes, message", [
    ({"schema_version": 1}, "experiment.json has plan schema version 1, this ectc reads 3: run `ectc build` "
                            "to regenerate it"),
    ({"arms__1__infer": "sometimes"}, "plan.arms[1].infer: 'sometimes' is not one of 'none', 'true', 'deploy'"),
    ({"axis__train_range": [0.5]}, "plan.axis.train_range: expected 2 items, found 1"),
    ({"profiles__tiny__seeds": "7"}, "plan.profiles.tiny.seeds: expected a list, found str"),
    ({"profiles__tiny__model__type": "gpt"}, "plan.profiles.tiny.model.type: 'gpt' is not one of 'tiny', 'hf', 'gguf'"),
    ({"evaluate__samples": True}, "plan.evaluate.samples: expected int, found True"),
    ({"evaluate__surprise": 1}, "plan.evaluate: unknown field 'surprise'"),
    ({"arms__0__trains": KeyError}, "plan.arms[0]: missing field 'trains'"),
])
def test_what_is_not_a_plan_is_refused_with_where(changes: dict, message: str) -> None:
    with pytest.raises(PlanError) as err:
        Plan.load(_edited(**changes))
    assert str(err.value) == message


def test_a_profile_evaluates_lighter_without_retraining() -> None:
    """`evaluate { samples N sweep [...] }` in a profile: its own items and sweep, resolved per arm;
    a change there re-evaluates and never retrains."""
    from ectc.compile import compile_text
    from ectc.generate import generate
    from ectc.plan import stages
    from ectc.plan.compiled import CompiledExperiment

    source = (ROOT / "specs/sycophancy.ect").read_text()
    light = source.replace("  profile paper {\n", "  profile paper {\n    evaluate { samples 64 sweep [0.0, 0.75, 1.5] }\n")
    lighter = light.replace("sweep [0.0, 0.75, 1.5]", "sweep [0.0, 1.5]")

    def experiment(text: str) -> CompiledExperiment:
        spec, _ = compile_text(text)
        return CompiledExperiment.from_generated(generate(spec, text, "spec.ect"))["sycophancy"]

    exp = experiment(light)
    paper, tiny = exp.plan.profiles["paper"].evaluation, exp.plan.profiles["tiny"].evaluation
    assert (paper.samples, paper.sweep) == (64, [0.0, 0.75, 1.5]) and (tiny.samples, len(tiny.sweep)) == (0, 16)
    assert paper.conditions["ect"] == [("deploy", 0.0), ("sweep=0.0", 0.0), ("sweep=0.75", 0.75), ("sweep=1.5", 1.5)]
    assert paper.conditions["baseline"] == [("none", 0.0)]

    def keys(e: CompiledExperiment) -> dict[str, str]:
        return {name: s.key for name, s in stages.keys(e, stages.shape(e, "paper")).items()}

    before, after = keys(exp), keys(experiment(lighter))
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == ["evaluate ect seed 0", "evaluate ootb seed 0", "evaluate prompt_only seed 0", "evaluate shuffled seed 0", "report"]
