"""Write ectc/trainer_keys.json: the keyword arguments the installed trl, peft and transformers
classes take, with the kind of value each takes, and transformers' optimizer and scheduler names.

`ectc check` validates the pass-through blocks of a profile (`trl { ... }`, `peft { ... }`, the
GenerationConfig keys of `generate { ... }`) and the optimizer and schedule words against this
file, so it stays torch-free: this script imports the libraries once, at development time.
tests/test_trainer_names.py re-derives the file from the installed classes and fails when the
committed one is stale (after an upgrade: run this script and commit the file).

    .venv/bin/python scripts/list_trainer_keys.py          # rewrite the file
    .venv/bin/python scripts/list_trainer_keys.py --check  # exit 1 when it is stale

A kind is "int", "num", "bool", "str", "strs" (a string or a list of them), "any" (a value the
spec language can write, not checked further), or a list of the words a Literal allows.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "ectc" / "trainer_keys.json"


def _alternatives(annotation: str) -> list[str]:
    """The parts of a Union / Optional / `a | b` annotation, None left out."""
    text = annotation.strip()
    for wrapper in ("Optional[", "Union[", "typing.Optional[", "typing.Union["):
        if text.startswith(wrapper) and text.endswith("]"):
            return [p for part in _split_top(text[len(wrapper):-1]) for p in _alternatives(part)]
    parts = _split_top(text, "|")
    if len(parts) > 1:
        return [p for part in parts for p in _alternatives(part)]
    return [] if text in ("None", "NoneType") else [text]


def _split_top(text: str, sep: str = ",") -> list[str]:
    """`text` split at `sep` outside brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += c in "[(" and 1 or c in "])" and -1 or 0
        if c == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


_SCALARS = {"int": "int", "float": "num", "bool": "bool", "str": "str"}


def kind(annotation) -> str | list[str]:
    """The value kind of a field's annotation (a type or its string)."""
    text = annotation if isinstance(annotation, str) else (
        annotation.__name__ if isinstance(annotation, type) else str(annotation))
    text = re.sub(r"\b(typing|transformers(\.\w+)*|trl(\.\w+)*|peft(\.\w+)*)\.", "", text)
    text = text.replace("<class '", "").replace("'>", "")
    kinds, words = set(), []
    for alt in _alternatives(text):
        if alt.startswith("Literal["):
            literal = [w.strip().strip("'\"") for w in _split_top(alt[len("Literal["):-1])]
            words += literal
            kinds.add("words")
        elif alt in _SCALARS:
            kinds.add(_SCALARS[alt])
        elif alt.endswith(("Names", "Type", "Strategy", "Enum")) or alt in ("SchedulerType", "TaskType"):
            kinds.add("str")  # an enum that also takes its values' strings
        elif alt in ("list[str]", "List[str]"):
            kinds.add("strs")
        else:
            kinds.add("other")
    if kinds == {"words"}:
        return words
    if kinds == {"int"}:
        return "int"
    if kinds <= {"int", "num"} and kinds:
        return "num"
    if kinds == {"bool"}:
        return "bool"
    if kinds == {"str"}:
        return "str"
    if kinds in ({"strs"}, {"str", "strs"}):
        return "strs"
    return "any"


def dataclass_keys(cls) -> dict:
    return {f.name: kind(f.type) for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}


def generation_keys() -> dict:
    """GenerationConfig is no dataclass (and defaults every field to None): its documented
    parameters, with the type its docstring gives."""
    from transformers import GenerationConfig

    keys = set(GenerationConfig().to_dict()) - {"transformers_version"}
    documented = dict(re.findall(r"^\s+(\w+) \(`([^`]+)`", GenerationConfig.__doc__ or "", re.M))
    return {k: kind(documented.get(k, "any").replace("tuple(", "tuple[")) for k in sorted(keys) if not k.startswith("_")}


def derive() -> dict:
    import peft
    import transformers
    import trl
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    return {
        "_generated": "scripts/list_trainer_keys.py from the installed classes; do not edit",
        "versions": {"trl": trl.__version__, "peft": peft.__version__, "transformers": transformers.__version__},
        "optimizers": [o.value for o in OptimizerNames],
        "schedulers": [s.value for s in SchedulerType],
        "classes": {
            "trl.SFTConfig": dataclass_keys(trl.SFTConfig),
            "trl.GRPOConfig": dataclass_keys(trl.GRPOConfig),
            "peft.LoraConfig": dataclass_keys(peft.LoraConfig),
            "transformers.GenerationConfig": generation_keys(),
        },
    }


def render(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(derive())
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run scripts/list_trainer_keys.py and commit it", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
