"""Rows of a data block read from a file, every declared field parsed to its type, and the
split of a block's rows when the spec gives fractions without `by`.

The generated `dataset.py` calls `read_rows` and `split_rows`; nothing here knows an experiment.
Torch-free (datasets is imported only for `disk` and `hf` sources). An `hf` source goes through
`datasets.load_dataset` (a hub id, or a folder of data files or a saved dataset beside the spec),
and its declared columns are checked against the loaded features before any row is read.

How each declared type is read (anything else is refused with a `DataFileError` naming the
file, the row, the column, the declared type and the value found, before any training):

| type | CSV cell (always text)                   | JSON value (jsonl, and `disk` datasets) |
|------|------------------------------------------|-----------------------------------------|
| int  | an optional sign and digits: `-3`, `12`  | an integer: `12` (not `12.5`, not `"12"`, not `true`) |
| real | anything `float()` reads but nan/inf     | a number: `12` or `12.5` (not `"12.5"`, not `true`) |
| bool | `true`/`false`/`1`/`0`, any case          | `true` or `false` (not `"false"`, not `0`) |
| text | the cell as it is                        | a string (not a number, a list or null) |

JSON keeps its own types: a file that writes `"false"` or `"12"` has lost them, and guessing
back would hide the mistake, so it is refused. A CSV file has no types, so its cells are parsed.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from pathlib import Path
from typing import Any, Iterable

__all__ = ["DataFileError", "read_rows", "split_rows", "parse_cell", "parse_json_value"]

_INT = re.compile(r"[+-]?\d+")
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


class DataFileError(ValueError):
    """A value in a data file does not have the type the spec declares for its column."""


def parse_cell(text: str, type_: str) -> Any:
    """A CSV cell as `type_`; ValueError when it does not parse."""
    if type_ == "text":
        return text
    word = text.strip()
    if type_ == "int" and _INT.fullmatch(word):
        return int(word)
    if type_ == "real":
        try:
            value = float(word)
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return value
    if type_ == "bool" and word.lower() in _TRUE | _FALSE:
        return word.lower() in _TRUE
    raise ValueError


def parse_json_value(value: Any, type_: str) -> Any:
    """A JSON value as `type_`; ValueError when it is not of that type."""
    if type_ == "bool" and isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise ValueError  # bool is an int in Python; a JSON true is not a number
    if type_ == "int" and isinstance(value, int):
        return value
    if type_ == "real" and isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if type_ == "text" and isinstance(value, str):
        return value
    raise ValueError


# A line (a row) beyond this is refused: a 1 GB line used to reach the tokenizer, which aborted.
MAX_LINE_CHARS = 10_000_000


def _records(source: str, file: Path) -> Iterable[tuple[str, dict]]:
    """(where, record) per row: `where` names the row (and the file's line, where it has lines)."""
    if source == "jsonl":
        row = 0
        for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row += 1
            where = f"row {row} (line {line_no})"
            if len(line) > MAX_LINE_CHARS:
                raise DataFileError(f"{file}: {where}: the line is {len(line)} characters long; ectc reads "
                                    f"lines of at most {MAX_LINE_CHARS}")
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataFileError(f"{file}: {where}: not JSON ({exc})") from None
            if not isinstance(record, dict):
                raise DataFileError(f"{file}: {where}: expected a JSON object, found {line.strip()[:60]}")
            yield where, record
    elif source == "csv":
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            row = 0
            try:
                for row, record in enumerate(reader, 1):
                    yield f"row {row} (line {reader.line_num})", record
            except csv.Error as exc:  # a field over csv's size limit, a NUL byte, ...
                raise DataFileError(f"{file}: row {row + 1} (line {reader.line_num}): not CSV ({exc})") from None
    elif source == "disk":
        import datasets

        for row, record in enumerate(datasets.load_from_disk(str(file)), 1):
            yield f"row {row}", record
    else:
        raise ValueError(f"unknown data source {source!r}")


def load_hub_dataset(path: str, root: str | Path, hub: dict):
    """`datasets.load_dataset` on a folder `root/path` where there is one, else on the hub id
    `path`, at hub["split"], hub["config"] (the dataset's configuration name) and
    hub["revision"] (a branch, tag or commit)."""
    import datasets

    local = Path(root) / path
    source = str(local) if local.exists() else path
    try:
        return datasets.load_dataset(source, name=hub.get("config"), split=hub["split"],
                                     revision=hub.get("revision"))
    except Exception as exc:  # not found, no network, a bad split or config: say which, briefly
        raise DataFileError(f"hf {path} (split {hub['split']!r}): cannot load it: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _feature_type(feature) -> str | None:
    """The ectc type a datasets feature holds values of (None: none of them)."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return "int"
    dtype = getattr(feature, "dtype", None) if isinstance(feature, datasets.Value) else None
    if dtype == "bool":
        return "bool"
    if dtype and dtype.startswith(("int", "uint")):
        return "int"
    if dtype and dtype.startswith("float"):
        return "real"
    if dtype in ("string", "large_string"):
        return "text"
    return None


def check_features(features, fields: dict[str, str], where: str) -> None:
    """Every declared column is in the dataset, holding the declared type (an int column serves
    a `real`), or DataFileError naming the columns it has."""
    for name, type_ in fields.items():
        if name not in features:
            raise DataFileError(f"{where}: no column `{name}` (declared {type_}); "
                                f"the dataset has {', '.join(f'`{c}`' for c in features) or 'no columns'}")
        found = _feature_type(features[name])
        if found != type_ and not (type_ == "real" and found == "int"):
            raise DataFileError(f"{where}: column `{name}` is declared {type_}, but the dataset holds "
                                f"{_describe(features[name])} there")


def _describe(feature) -> str:
    dtype = getattr(feature, "dtype", None)
    return f"{type(feature).__name__}({dtype})" if dtype else type(feature).__name__


def read_rows(source: str, path: str, root: str | Path, fields: dict[str, str],
              hub: dict | None = None) -> list[dict]:
    """Every row of `root/path` (for `hf`: of the dataset `load_hub_dataset` loads with `hub`),
    with each field of `fields` ({name: declared type}) parsed; columns the spec does not
    declare are kept as they are."""
    file = Path(root) / path
    if source == "hf":
        where = f"hf {path} (split {hub['split']!r})"
        dataset = load_hub_dataset(path, root, hub)
        check_features(dataset.features, fields, where)
        rows = _typed(((f"row {i}", r) for i, r in enumerate(dataset, 1)), fields, where, parse_json_value, source)
        if not rows:
            raise DataFileError(f"{where}: no rows")
        return rows
    try:
        rows = _typed_rows(source, file, fields)
        if not rows:
            raise DataFileError(f"{file}: no rows (the file is empty)")
        return rows
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except OSError as exc:
        raise DataFileError(f"{file}: cannot read: {exc.strerror or exc}") from None


def _typed_rows(source: str, file: Path, fields: dict[str, str]) -> list[dict]:
    parse = parse_cell if source == "csv" else parse_json_value
    return _typed(_records(source, file), fields, file, parse, source)


def _typed(records: Iterable[tuple[str, dict]], fields: dict[str, str], file, parse, source: str) -> list[dict]:
    rows = []
    for where, record in records:
        row = dict(record)
        for name, type_ in fields.items():
            if name not in row:
                raise DataFileError(f"{file}: {where}: no column `{name}` (declared {type_})")
            try:
                row[name] = parse(row[name], type_)
            except ValueError:
                found = row[name]
                raise DataFileError(f"{file}: {where}, column `{name}`: expected {_kind(type_, source)}, "
                                    f"found {json.dumps(found) if source != 'csv' else repr(found)}") from None
        rows.append(row)
    return rows


def _kind(type_: str, source: str) -> str:
    if source == "csv":
        return {"int": "an int", "real": "a real number", "bool": "a bool (true/false/1/0)",
                "text": "text"}[type_]
    return {"int": "an int (a JSON integer)", "real": "a real (a JSON number)",
            "bool": "a bool (JSON true or false)", "text": "text (a JSON string)"}[type_]


def split_rows(rows: list, split: str, shares: dict[str, float | int], seed_key: str) -> list:
    """The rows of `split` when the spec splits without `by`: a shuffle seeded by `seed_key`,
    then consecutive cuts, so the splits never overlap. Fractions cut every row (a cut ends at
    round(n * cumulative fraction)); counts (ints) cut that many rows each, and must be there."""
    counts = all(isinstance(v, int) and not isinstance(v, bool) for v in shares.values())
    if counts and sum(shares.values()) > len(rows):
        raise DataFileError(f"the split asks for {sum(shares.values())} rows; the data has {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed_key).shuffle(order)
    start, total = 0, 0.0
    names = list(shares)
    for name in names:
        total += shares[name]
        if counts:
            end = start + shares[name]
        else:
            end = len(rows) if name == names[-1] else int(round(len(rows) * total))
        if name == split:
            return [rows[i] for i in sorted(order[start:end])]
        start = end
    return []
