"""The IR: frozen dataclasses built by the lowerer without validation. These tests check what
the lowerer builds against the annotations (a list where the IR says tuple, an int where it
says float, a wrong node class fails here instead of surfacing later as an unhashable or unequal
node), pin the data shape `ectc diff` reads, and cover the one visitor (`children`, `walk`)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Literal, Union

import pytest

from ectc import ir
from ectc.errors import NO_SPAN, Span
from ectc.lower import lower
from ectc.parse import parse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from compiler_speed import spec_of_lines  # noqa: E402

SPECS = sorted((ROOT / "specs").glob("*.ect")) + sorted((ROOT / "tests/fixtures/golden").glob("*/*.ect"))


def _texts():
    for path in SPECS:
        yield path.name, path.read_text()
    yield "bench-500-lines", spec_of_lines(500)


def type_problems(value: Any, tp: Any, where: str = "spec") -> list[str]:
    """Where `value` is not of the annotated type `tp` (strictly: no int for a float, no list
    for a tuple)."""
    origin = typing.get_origin(tp)
    if origin is Union:
        options = typing.get_args(tp)
        if value is None:
            return [] if type(None) in options else [f"{where}: None"]
        matching = [o for o in options if o is not type(None) and not type_problems(value, o, where)]
        return [] if matching else [f"{where}: {type(value).__name__} is none of {options}"]
    if origin is Literal:
        return [] if value in typing.get_args(tp) else [f"{where}: {value!r} not in {typing.get_args(tp)}"]
    if origin is tuple:
        if type(value) is not tuple:
            return [f"{where}: {type(value).__name__}, not a tuple"]
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        if len(args) != len(value):
            return [f"{where}: {len(value)} items, not {len(args)}"]
        return [p for i, (v, a) in enumerate(zip(value, args)) for p in type_problems(v, a, f"{where}[{i}]")]
    if dataclasses.is_dataclass(tp):
        if type(value) is not tp:
            return [f"{where}: {type(value).__name__}, not {tp.__name__}"]
        hints = typing.get_type_hints(tp)
        return [p for f in dataclasses.fields(tp)
                for p in type_problems(getattr(value, f.name), hints[f.name], f"{where}.{f.name}")]
    return [] if type(value) is tp else [f"{where}: {type(value).__name__}, not {tp.__name__}"]


@pytest.mark.parametrize("name,text", list(_texts()), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_lowered_ir_has_its_declared_types(name, text):
    spec = lower(parse(text))
    assert type_problems(spec, ir.Spec) == []
    hash(spec)  # every node and field is hashable


def test_a_wrong_type_is_caught():
    # The check above must be able to fail.
    loose = ir.ListExpr(span=NO_SPAN, items=[])
    assert type_problems(loose, ir.ListExpr) == ["spec.items: list, not a tuple"]
    number = ir.Num(span=NO_SPAN, value=1, is_int=True)
    assert type_problems(number, ir.Num) == ["spec.value: int, not float"]
    inner = ir.Call(span=NO_SPAN, func="f", args=(ir.Setting(span=NO_SPAN, key="k"),))
    assert type_problems(inner, ir.Call)[0].startswith("spec.args[0]: Setting is none of")


@pytest.mark.parametrize("name,text", list(_texts()), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_dump_and_load_round_trip(name, text):
    spec = lower(parse(text))
    data = ir.to_data(spec)
    assert json.loads(json.dumps(data)) == data  # plain JSON data
    loaded = ir.from_data(ir.Spec, data)
    assert loaded == spec
    assert hash(loaded) == hash(spec)


def test_dump_shape():
    """The shape `ectc diff` reads and splices: fields in declaration order, span first, then an
    expression's kind; tuples as lists (as pydantic's model_dump(mode="json") gave)."""
    spec = lower(parse('experiment e { feedback { r = -a + f(1.5, ["x"]) } }'))
    assign = ir.to_data(spec.experiments[0].feedbacks[0].assigns[0])

    def span(a, b):
        return {"line": 1, "column": a, "end_line": 1, "end_column": b}

    assert assign == {
        "span": span(27, 49), "name": "r",
        "expr": {"span": span(31, 49), "kind": "binary", "op": "+",
                 "left": {"span": span(31, 33), "kind": "unary", "op": "-",
                          "operand": {"span": span(32, 33), "kind": "name", "id": "a"}},
                 "right": {"span": span(36, 49), "kind": "call", "func": "f", "args": [
                     {"span": span(38, 41), "kind": "num", "value": 1.5, "is_int": False},
                     {"span": span(43, 48), "kind": "list", "items": [
                         {"span": span(44, 47), "kind": "str", "value": "x"}]}]}}}
    assert list(assign["expr"]) == ["span", "kind", "op", "left", "right"]


def test_nodes_are_frozen():
    name = ir.Name(span=NO_SPAN, id="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        name.id = "b"  # type: ignore[misc]
    assert name == ir.Name(span=Span(1, 1, 1, 2), id="a") and name != ir.Name(span=NO_SPAN, id="b")


def test_children_and_walk():
    spec = lower(parse("experiment e { feedback { r = if a then b[0] else g(c, d.x) } }"))
    e = spec.experiments[0].feedbacks[0].assigns[0].expr
    assert [n.kind for n in ir.children(e)] == ["name", "index", "call"]
    assert [(n.kind, getattr(n, "id", None)) for n in ir.walk(e)] == [
        ("if", None), ("name", "a"), ("index", None), ("name", "b"), ("num", None),
        ("call", None), ("name", "c"), ("attr", None), ("name", "d")]
    # Any node, not only expressions: tuples of nodes (and of pairs of nodes) are followed.
    whole = [type(n).__name__ for n in ir.walk(spec)]
    assert whole[:4] == ["Spec", "Experiment", "Feedback", "Assign"] and whole.count("Name") == 4
    ev = lower(parse("experiment e { evaluate { compare a vs b on m } }")).experiments[0].evaluate
    assert [n.id for n in ir.walk(ev) if isinstance(n, ir.Name)] == ["a", "b", "m"]


def test_the_front_end_does_not_import_pydantic():
    # Importing pydantic and building models was ~0.1 s of a ~0.25 s cold `ectc check`.
    code = ("import sys; import ectc.compile, ectc.generate, ectc.diff, ectc.fmt, ectc.explain; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
