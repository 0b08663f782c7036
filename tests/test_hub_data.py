"""`data x: hf "org/name" { split ... revision ... config ... }`: rows through
datasets.load_dataset (here on local folders, since no hub is reachable), with the declared
columns checked against the loaded features before any row is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ectc.compile import compile_text
from ectc.runtime.datafiles import DataFileError, read_rows

from test_datafiles import BASE, _dataset


def _jsonl(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _hub_folder(tmp: Path) -> Path:
    """A dataset folder as the hub holds one: a file per split (datasets names the splits by
    the files' names)."""
    folder = tmp / "hub" / "tiny_sums"
    _jsonl(folder, "train.jsonl", [{"a": i, "ok": i % 2 == 0, "note": f"t{i}"} for i in range(12)])
    _jsonl(folder, "test.jsonl", [{"a": 100 + i, "ok": True, "note": f"x{i}"} for i in range(4)])
    return folder


def test_hub_splits_map_to_the_experiments_splits(tmp_path: Path) -> None:
    _hub_folder(tmp_path)
    build = _dataset(tmp_path, """  data rows: hf "hub/tiny_sums" {
    split { train "train" test "test" }
    a: int
    ok: bool
    target = if ok then "Yes" else "No"
  }
""")
    train, validation, test = (build(s, 0, root=str(tmp_path)) for s in ("train", "validation", "test"))
    assert [r["a"] for r in train] == list(range(12))
    assert validation == []
    assert [r["a"] for r in test] == [100, 101, 102, 103]
    assert test[0]["target"] == "Yes" and test[0]["note"] == "x0"  # undeclared columns are kept


def test_a_hub_split_can_be_cut_by_fractions(tmp_path: Path) -> None:
    _hub_folder(tmp_path)
    build = _dataset(tmp_path, """  data rows: hf "hub/tiny_sums" {
    split { train 0.75 test 0.25 }
    a: int
    ok: bool
    target = if ok then "Yes" else "No"
  }
""")
    train, test = (build(s, 0, root=str(tmp_path)) for s in ("train", "test"))
    assert len(train) == 9 and len(test) == 3
    assert sorted(r["a"] for r in train + test) == list(range(12))  # the hub's train split, cut


def test_a_saved_dataset_folder_and_its_revision_and_config_reach_load_dataset(tmp_path: Path, monkeypatch) -> None:
    import datasets

    datasets.Dataset.from_list([{"a": 1, "ok": True}, {"a": 2, "ok": False}]).to_parquet(
        str(tmp_path / "saved" / "data" / "train-00000-of-00001.parquet"))
    seen = {}
    real = datasets.load_dataset

    def spy(path, **kwargs):
        seen.update(kwargs, path=path)
        return real(path, split=kwargs["split"])  # a local folder has neither revisions nor configs

    monkeypatch.setattr(datasets, "load_dataset", spy)
    build = _dataset(tmp_path, """  data rows: hf "saved" {
    split "train"
    revision "v1.0"
    config "default"
    a: int
    ok: bool
    target = if ok then "Yes" else "No"
  }
""")
    assert [r["a"] for r in build("train", 0, root=str(tmp_path))] == [1, 2]
    assert build("test", 0, root=str(tmp_path)) == []  # `split "train"`: all training data
    assert seen == {"path": str(tmp_path / "saved"), "split": "train", "revision": "v1.0", "name": "default"}


def test_a_hub_id_goes_to_load_dataset_as_it_is(tmp_path: Path, monkeypatch) -> None:
    import datasets

    seen = {}

    def offline(path, **kwargs):
        seen.update(kwargs, path=path)
        raise ConnectionError("Couldn't reach 'org/name' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataFileError) as err:
        read_rows("hf", "org/name", tmp_path, {"a": "int"}, hub={"split": "train", "revision": None, "config": None})
    assert seen == {"path": "org/name", "split": "train", "revision": None, "name": None}
    assert str(err.value) == ("hf org/name (split 'train'): cannot load it: ConnectionError: "
                              "Couldn't reach 'org/name' on the Hub (LocalEntryNotFoundError)")


@pytest.mark.parametrize("fields, message", [
    ({"a": "int", "answer": "text"},
     "hf hub/tiny_sums (split 'train'): no column `answer` (declared text); the dataset has `a`, `ok`, `note`"),
    ({"note": "int"},
     "hf hub/tiny_sums (split 'train'): column `note` is declared int, but the dataset holds Value(string) there"),
    ({"a": "bool"},
     "hf hub/tiny_sums (split 'train'): column `a` is declared bool, but the dataset holds Value(int64) there"),
])
def test_declared_columns_are_checked_against_the_features(tmp_path: Path, fields, message) -> None:
    _hub_folder(tmp_path)
    with pytest.raises(DataFileError) as err:
        read_rows("hf", "hub/tiny_sums", tmp_path, fields, hub={"split": "train", "revision": None, "config": None})
    assert str(err.value) == message


def test_an_int_column_serves_a_real_field(tmp_path: Path) -> None:
    _hub_folder(tmp_path)
    rows = read_rows("hf", "hub/tiny_sums", tmp_path, {"a": "real"}, hub={"split": "test", "revision": None, "config": None})
    assert [r["a"] for r in rows] == [100.0, 101.0, 102.0, 103.0]


HUB_SPEC = BASE.replace("    split { train 64 test 16 }\n    a: int = randint(0, 9)\n    ok: bool = bernoulli(0.5)\n",
                        '    split { train "train" test "test" }\n    revision "main"\n    a: int\n    ok: bool\n'
                        ).replace("  data rows {", '  data rows: hf "org/name" {')


def test_a_hub_block_checks_clean_and_formats_as_written(tmp_path: Path) -> None:
    from ectc.fmt import format_spec

    spec, diags = compile_text(HUB_SPEC)
    assert diags == []
    block = spec.experiments[0].data[0]
    assert (block.source.type, block.source.arg) == ("hf", "org/name")
    assert 'data rows: hf "org/name" {' in format_spec(HUB_SPEC)
    assert compile_text(format_spec(HUB_SPEC))[1] == []
