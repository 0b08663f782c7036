"""A stage's record (`stage.json`): its key, the outputs it wrote and a content hash of them.

A stage is reused only when its key is unchanged *and* its outputs still hash to what it
recorded: a truncated, emptied or deleted output makes the stage run again ("redo: output
changed"). Downstream stages put the upstream stage's *output* hash in their keys, so a stage
that re-ran with a different result invalidates what read it, and one that re-ran to the same
bytes does not.

Also the content hash of a stage's input files (data files, lexicon word lists, a `disk`
dataset folder), which enter the keys of the stages that read them.

Torch-free: the runtime writes and checks records through this module,
and `ectc plan` (`runs.py`, through `plan/stages.py`) reads them the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..files import atomic_write_text

STAGE_FILE = "stage.json"
# Stands in for an output hash that only running the stage will tell: `ectc plan` uses it for
# the downstream keys of a stage that must run (so they must run too).
OUTPUT_UNKNOWN = "output-of:"
_CHUNK = 1 << 20


_DIGESTS: dict[tuple, bytes] = {}
# Files at least this big (model weights) keep their digest across processes: hashing a 100 MB
# GGUF file cost ~0.08 s of every `ectc diff`/`plan`. Keyed like git's index (path, size, mtime,
# ctime, inode), so an edited or replaced file is hashed again.
PERSIST_MIN_BYTES = 8 << 20


def digest_memo_path() -> Path:
    """Where large files' digests are remembered: $ECTC_CACHE_DIR, else the user's cache folder."""
    root = os.environ.get("ECTC_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ectc"
    return Path(root) / "digests.json"


def _read_memo(where: Path) -> dict[str, str]:
    try:
        memo = json.loads(where.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _file_digest(path: Path) -> bytes:
    # `ectc plan` checks each record more than once: memo by (path, size, mtime) within a process.
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    persist = st.st_size >= PERSIST_MIN_BYTES
    where = digest_memo_path() if persist else None
    entry = "|".join(map(str, memo))
    known = _read_memo(where).get(entry) if where else None
    if known:
        _DIGESTS[memo] = bytes.fromhex(known)
        return _DIGESTS[memo]
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    _DIGESTS[memo] = h.digest()
    if where:
        stored = _read_memo(where)
        stored[entry] = h.hexdigest()
        try:
            atomic_write_text(where, json.dumps(stored, indent=0, sort_keys=True))
        except OSError:  # a read-only cache folder only costs the hash next time
            pass
    return _DIGESTS[memo]


def content_hash(path: Path) -> str | None:
    """sha256 of one file's bytes alone (not its name): what a model file is cached by, so the
    same file under another name or package shares the cache. None when it is not a file."""
    path = Path(path)
    return _file_digest(path).hex() if path.is_file() else None


def _files(path: Path) -> list[Path] | None:
    """The files an output or input names: itself, or every file under a folder; None if absent."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return None


def tree_hash(root: Path, names: list[str]) -> str | None:
    """sha256 over the named files and folders under `root` (names and contents); None when one
    is missing or is an empty folder."""
    h = hashlib.sha256()
    for name in sorted(names):
        top = Path(root) / name
        files = _files(top)
        if not files:
            return None
        for f in files:
            rel = name if f == top else f"{name}/{f.relative_to(top).as_posix()}"
            h.update(rel.encode() + b"\0" + _file_digest(f))
    return h.hexdigest()


def input_hashes(root: Path, paths: Mapping[str, Any]) -> dict[str, Any]:
    """{name: content hash} of input files (paths relative to `root`, nested mappings kept);
    "missing" for one that is not there (the stage that reads it then says why)."""
    out: dict[str, Any] = {}
    for name, path in paths.items():
        if isinstance(path, Mapping):
            out[name] = input_hashes(root, path)
        else:
            file = Path(root) / path
            out[name] = tree_hash(file.parent, [file.name]) or "missing"
    return out


def read_record(folder: Path) -> dict | None:
    try:
        record = json.loads((Path(folder) / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def record(folder: Path, key: str, outputs: list[str], **info: Any) -> str:
    """Write the stage record after its outputs; return their hash (what downstream keys use)."""
    folder = Path(folder)
    output_hash = tree_hash(folder, outputs)
    if output_hash is None:
        raise RuntimeError(f"stage in {folder} finished without its outputs {outputs}")
    text = json.dumps({"key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "outputs": sorted(outputs),
                       "output_hash": output_hash, **info}, indent=1, sort_keys=True, default=str)
    atomic_write_text(folder / STAGE_FILE, text + "\n")
    return output_hash


@dataclass(frozen=True)
class Reuse:
    ok: bool              # reuse the stage's outputs
    output: str | None    # their hash when ok
    reason: str           # why not, in the words `ectc plan` prints
    redo: bool = False    # the key holds but the outputs do not: the run says "redo: ..."


def check(folder: Path, key: str) -> Reuse:
    """Whether the stage in `folder` finished with `key` and its outputs are still what it wrote."""
    rec = read_record(folder)
    if rec is None or "key" not in rec:
        return Reuse(False, None, "never finished here")
    if rec["key"] != key:
        return Reuse(False, None, "stage key changed")
    outputs, recorded = rec.get("outputs"), rec.get("output_hash")
    if not outputs or not recorded:
        return Reuse(False, None, "output not recorded (an older ectc)", redo=True)
    missing = [o for o in outputs if not _files(Path(folder) / o)]
    if missing:
        return Reuse(False, None, f"output missing ({', '.join(missing)})", redo=True)
    if tree_hash(Path(folder), outputs) != recorded:
        return Reuse(False, None, f"output changed ({', '.join(outputs)})", redo=True)
    return Reuse(True, recorded, "stage key unchanged")


def output_or_unknown(folder: Path | None, key: str) -> str:
    """The recorded output hash of a reusable stage; else a placeholder derived from its key."""
    if folder is not None:
        found = check(folder, key)
        if found.ok and found.output:
            return found.output
    return OUTPUT_UNKNOWN + key
