"""Data that must not silently go wrong: splits without `by` are applied (disjoint, seeded),
and every column read from a file is parsed to its declared type or refused by name."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ectc.compile import compile_text
from ectc.generate import generate

BASE = (Path(__file__).parent / "fixtures" / "diagnostics" / "base.ect").read_text()


def _dataset(tmp: Path, data_block: str):
    """The generated dataset module of base.ect with its data block replaced."""
    start = BASE.index("  data rows")
    end = BASE.index("  prompt ")
    source = BASE[:start] + data_block + BASE[end:]
    spec, diags = compile_text(source)
    files = generate(spec, source, "spec.ect")
    path = tmp / "dataset.py"
    path.write_text(files["mini/dataset.py"])
    module_spec = importlib.util.spec_from_file_location(f"ds_{abs(hash(source))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.BUILDERS["rows"]


def _splits(build, root: Path) -> dict[str, list[dict]]:
    return {s: build(s, 0, root=str(root)) for s in ("train", "validation", "test")}


def test_fractional_split_of_generated_rows_is_applied(tmp_path: Path) -> None:
    build = _dataset(tmp_path, """  data rows {
    size 100
    split { train 0.8 test 0.2 }
    a: int = randint(0, 9)
    ok: bool = bernoulli(0.5)
    target = if ok then "Yes" else "No"
  }
""")
    splits = _splits(build, tmp_path)
    assert {s: len(r) for s, r in splits.items()} == {"train": 80, "validation": 0, "test": 20}
    # The axis value drawn per row (a uniform real) identifies a row: no row is in two splits.
    train, test = ({r["s"] for r in splits[s]} for s in ("train", "test"))
    assert len(train) == 80 and len(test) == 20 and not train & test
    assert build("test", 0) == splits["test"]  # deterministic
    assert {r["s"] for r in build("test", 1)} != test  # seeded


def test_fractional_split_of_a_file_is_applied(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"a": i, "ok": i % 2 == 0}) + "\n" for i in range(50)))
    build = _dataset(tmp_path, """  data rows: jsonl "rows.jsonl" {
    split { train 0.6 validation 0.2 test 0.2 }
    a: int
    ok: bool
    target = if ok then "Yes" else "No"
  }
""")
    splits = _splits(build, tmp_path)
    ids = {s: [r["a"] for r in rows] for s, rows in splits.items()}
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [30, 10, 10]
    assert sorted(ids["train"] + ids["validation"] + ids["test"]) == list(range(50))
    assert ids["test"] != list(range(40, 50))  # shuffled, not the file's tail


CSV_BLOCK = """  data rows: csv "rows.csv" {
    split { train 1.0 }
    a: int
    ok: bool
    w: real
    name: text
    target = if ok then "Yes" else "No"
  }
"""


def test_csv_columns_are_parsed_to_their_types(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("a,ok,w,name\n1,False,0.5,x\n-2,TRUE,3,False\n3,0,1e-3,\n4,1,-2.5,y\n")
    rows = _dataset(tmp_path, CSV_BLOCK)("train", 0, root=str(tmp_path))
    got = sorted((r["a"], r["ok"], r["w"], r["name"]) for r in rows)
    assert got == [(-2, True, 3.0, "False"), (1, False, 0.5, "x"), (3, False, 0.001, ""), (4, True, -2.5, "y")]
    assert all(type(r["a"]) is int and type(r["ok"]) is bool and type(r["w"]) is float for r in rows)


@pytest.mark.parametrize("line, message", [
    ("2.5,true,1.0,x", "row 2 (line 3), column `a`: expected an int, found '2.5'"),
    ("2,no,1.0,x", "row 2 (line 3), column `ok`: expected a bool (true/false/1/0), found 'no'"),
    ("2,true,heavy,x", "row 2 (line 3), column `w`: expected a real number, found 'heavy'"),
    ("2,,1.0,x", "row 2 (line 3), column `ok`: expected a bool (true/false/1/0), found ''"),
])
def test_csv_values_that_do_not_parse_are_refused(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "rows.csv").write_text(f"a,ok,w,name\n1,false,0.5,x\n{line}\n")
    build = _dataset(tmp_path, CSV_BLOCK)
    with pytest.raises(ValueError) as err:
        build("train", 0, root=str(tmp_path))
    assert str(err.value) == f"{tmp_path / 'rows.csv'}: {message}"


JSONL_BLOCK = CSV_BLOCK.replace('csv "rows.csv"', 'jsonl "rows.jsonl"')


@pytest.mark.parametrize("record, message", [
    ({"a": 1, "ok": "false", "w": 1.0, "name": "x"}, 'column `ok`: expected a bool (JSON true or false), found "false"'),
    ({"a": 2.5, "ok": True, "w": 1.0, "name": "x"}, "column `a`: expected an int (a JSON integer), found 2.5"),
    ({"a": True, "ok": True, "w": 1.0, "name": "x"}, "column `a`: expected an int (a JSON integer), found true"),
    ({"a": 1, "ok": True, "w": "1.5", "name": "x"}, 'column `w`: expected a real (a JSON number), found "1.5"'),
    ({"a": 1, "ok": True, "w": 1.0, "name": ["x", "y"]}, 'column `name`: expected text (a JSON string), found ["x", "y"]'),
])
def test_jsonl_values_of_the_wrong_type_are_refused(tmp_path: Path, record: dict, message: str) -> None:
    good = {"a": 0, "ok": False, "w": 2, "name": "ok"}
    (tmp_path / "rows.jsonl").write_text(json.dumps(good) + "\n\n" + json.dumps(record) + "\n")
    build = _dataset(tmp_path, JSONL_BLOCK)
    with pytest.raises(ValueError) as err:
        build("train", 0, root=str(tmp_path))
    assert str(err.value) == f"{tmp_path / 'rows.jsonl'}: row 2 (line 3), {message}"


def test_jsonl_values_of_the_right_type_are_kept(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(json.dumps({"a": 3, "ok": False, "w": 2, "name": "n", "extra": [1]}) + "\n")
    [row] = _dataset(tmp_path, JSONL_BLOCK)("train", 0, root=str(tmp_path))
    assert row == {"a": 3, "ok": False, "w": 2.0, "name": "n", "extra": [1], "s": row["s"], "target": "No"}
    assert type(row["w"]) is float


def test_a_missing_column_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text(json.dumps({"a": 3, "ok": False, "w": 2}) + "\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 1\): no column `name` \(declared text\)"):
        _dataset(tmp_path, JSONL_BLOCK)("train", 0, root=str(tmp_path))


def test_an_unreadable_file_is_refused_by_name(tmp_path: Path) -> None:
    """Invalid UTF-8 was a UnicodeDecodeError traceback from the generated dataset.py."""
    (tmp_path / "rows.jsonl").write_bytes(b'{"a": 3}\n\xff\n')
    with pytest.raises(ValueError, match=r"rows.jsonl: not UTF-8 text \(byte 0xff at offset 9\)"):
        _dataset(tmp_path, JSONL_BLOCK)("train", 0, root=str(tmp_path))
    (tmp_path / "rows.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"rows.jsonl: no rows \(the file is empty\)"):
        _dataset(tmp_path, JSONL_BLOCK)("train", 0, root=str(tmp_path))
    from ectc.runtime.datafiles import MAX_LINE_CHARS

    (tmp_path / "rows.jsonl").write_text('{"a": "' + "x" * MAX_LINE_CHARS + '"}\n')
    with pytest.raises(ValueError, match=r"row 1 \(line 1\): the line is 10000009 characters long"):
        _dataset(tmp_path, JSONL_BLOCK)("train", 0, root=str(tmp_path))
    (tmp_path / "rows.jsonl").unlink()
    (tmp_path / "rows.jsonl").mkdir()
    with pytest.raises(ValueError, match=r"rows.jsonl: cannot read: Is a directory"):
        _dataset(tmp_path, JSONL_BLOCK)("train", 0, root=str(tmp_path))


def test_ectc_run_refuses_a_bad_value_before_training(tmp_path: Path) -> None:
    """The data stage stops the run with the file, row, column, type and value; nothing trains."""
    import os
    import subprocess
    import sys

    from ectc.build import build

    start, end = BASE.index("  data rows"), BASE.index("  prompt ")
    (tmp_path / "mini.ect").write_text(BASE[:start] + CSV_BLOCK + BASE[end:])
    (tmp_path / "rows.csv").write_text("a,ok,w,name\n1,False,0.5,x\n2,maybe,0.5,y\n")
    build(tmp_path, [str(tmp_path / "mini.ect")], tmp_path / "generated", check_only=False)
    out = subprocess.run([sys.executable, "-m", "ectc", "run", "mini.ect"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "ECTC_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 1
    assert out.stderr.endswith("error: rows.csv: row 2 (line 3), column `ok`: expected a bool (true/false/1/0), "
                               "found 'maybe'\n")
    assert not (tmp_path / "runs/mini/tiny/arms").exists()
