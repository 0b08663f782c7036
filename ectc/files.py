"""Crash-safe file writes and the JSON / JSONL files every stage reads and writes.

Neutral ground: the compiler (`build`) and the runtime both write through here, so it imports
neither. A write goes to a temporary file in the destination folder, is fsync-ed and renamed over
the destination: a process killed at any moment leaves the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from . import jsonio


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (temp file + fsync + os.replace).

    Parent directories are created. Readers see either the previous content or
    the complete new content, never a prefix.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dest.parent)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON (sorted keys, trailing newline) and write it atomically."""
    text = jsonio.dumps(obj, sort_keys=True, indent=indent, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """A run's JSON file (indented, sorted keys, strict JSON)."""
    atomic_write_text(path, jsonio.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | os.PathLike[str], rows: list[dict]) -> None:
    atomic_write_text(path, "".join(jsonio.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
