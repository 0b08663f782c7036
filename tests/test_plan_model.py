"""The plan (`generated/<exp>/experiment.json`) as typed classes: every shipped plan round-trips,
and what is not a plan this ectc reads is refused with where and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ectc.plan.model import SCHEMA_VERSION, HubModel, Plan, PlanError, TinyModel

ROOT = Path(__file__).resolve().parent.parent
PLANS = sorted((ROOT / "generated").glob("*/experiment.json"))


@pytest.mark.parametrize("path", PLANS, ids=[p.parent.name for p in PLANS])
def test_every_shipped_plan_round_trips(path: Path) -> None:
    text = path.read_text()
    plan = Plan.load(text)
    assert plan.dump() == json.loads(text)
    assert plan.schema_version == SCHEMA_VERSION
    # Derived facts are there, typed: conditions per arm, the trainer per profile.
    assert all(arm.conditions and arm.main_condition == arm.conditions[0][0] for arm in plan.arms)
    assert {p.trainer for p in plan.profiles.values()} <= {"choice_rl", "grpo", "sft"}
    assert {type(p.model) for p in plan.profiles.values()} <= {TinyModel, HubModel}


def test_derived_facts_of_the_sycophancy_plan() -> None:
    plan = Plan.load((ROOT / "generated/sycophancy/experiment.json").read_text())
    assert plan.axis.train_range == (0.5, 1.5)
    assert plan.axis.held_out(0.0) and plan.axis.held_out(0.49) and not plan.axis.held_out(0.5)
    assert plan.arm("baseline").conditions == [("none", 0.0)]
    assert plan.arm("ect").conditions[:2] == [("deploy", 0.0), ("sweep=0.0", 0.0)]
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
    ({"schema_version": 1}, "experiment.json has plan schema version 1, this ectc reads 2: run `ectc build` "
                            "to regenerate it"),
    ({"arms__1__infer": "sometimes"}, "plan.arms[1].infer: 'sometimes' is not one of 'none', 'true', 'deploy'"),
    ({"axis__train_range": [0.5]}, "plan.axis.train_range: expected 2 items, found 1"),
    ({"profiles__tiny__seeds": "7"}, "plan.profiles.tiny.seeds: expected a list, found str"),
    ({"profiles__tiny__model__type": "gpt"}, "plan.profiles.tiny.model.type: 'gpt' is not one of 'tiny', 'hf'"),
    ({"evaluate__samples": True}, "plan.evaluate.samples: expected int, found True"),
    ({"evaluate__surprise": 1}, "plan.evaluate: unknown field 'surprise'"),
    ({"arms__0__trains": KeyError}, "plan.arms[0]: missing field 'trains'"),
])
def test_what_is_not_a_plan_is_refused_with_where(changes: dict, message: str) -> None:
    with pytest.raises(PlanError) as err:
        Plan.load(_edited(**changes))
    assert str(err.value) == message
