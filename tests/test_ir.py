"""The lowerer builds IR nodes without pydantic's validation (for speed); these tests validate
what it builds, so a node with a wrong type (a list where the IR says tuple, a missing field)
fails here instead of surfacing later as an unhashable or unequal node."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ectc import ir
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


@pytest.mark.parametrize("name,text", list(_texts()), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_lowered_ir_is_what_validation_would_build(name, text):
    spec = lower(parse(text))
    validated = ir.Spec.model_validate(spec.model_dump())
    assert validated == spec
    assert hash(validated) == hash(spec)
    # Validation would coerce a list into a tuple; the lowerer must hand over tuples itself.
    assert validated.model_dump_json() == spec.model_dump_json()


@pytest.mark.parametrize("name,text", list(_texts()), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_fast_dump_and_load_match_pydantic(name, text):
    spec = lower(parse(text))
    data = ir.to_data(spec)
    assert data == spec.model_dump(mode="json")
    loaded = ir.from_data(ir.Spec, data)
    assert loaded == ir.Spec.model_validate(data) == spec
    assert hash(loaded) == hash(spec)


def test_a_wrong_type_is_caught_by_validation():
    # The check above must be able to fail: a node built with a list where the IR wants a
    # tuple compares unequal to its validated copy.
    from ectc.errors import NO_SPAN

    loose = ir.ListExpr.model_construct(span=NO_SPAN, items=[])
    with pytest.warns(UserWarning, match="serialized value may not be as expected"):
        dumped = loose.model_dump()
    assert ir.ListExpr.model_validate(dumped) != loose
