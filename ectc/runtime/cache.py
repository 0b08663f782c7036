"""Crash-safe disk cache and atomic file helpers.

``DiskCache`` is a directory of JSON files, one per entry, sharded by the first
two hex characters of the key::

    <root>/ab/ab3f...e1.json

Keys are ``sha256`` of the canonical JSON (sorted keys, no whitespace, UTF-8)
of a *request identity* (any JSON-serialisable object), see :func:`cache_key`.

Every write goes through :func:`atomic_write_text`: the bytes are written to a
temporary file in the destination directory, flushed and ``fsync``-ed, then
``os.replace``-d over the destination (and the directory is fsync-ed where the
platform allows). A process killed at any moment therefore leaves either the old
entry, the new entry, or no entry -- never a half-written one. Should a
damaged file appear anyway (disk full, manual edits), :meth:`DiskCache.get`
treats it as a miss; the next :meth:`DiskCache.put` overwrites it.

Each stored entry is an envelope ``{"key": <hex>, "identity": <obj>, "value":
<obj>}``; an entry whose recorded key does not match its file name is treated
as a miss too (guards against truncated/renamed files).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterator

from .. import jsonio
from ..files import atomic_write_json, atomic_write_text  # re-exported: the cache's writer

__all__ = [
    "canonical_json",
    "cache_key",
    "atomic_write_text",
    "atomic_write_json",
    "DiskCache",
]

_MISSING = object()


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, compact separators, NaN as null, UTF-8 text."""
    return jsonio.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(identity: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``identity``."""
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


class DiskCache:
    """A directory of JSON entries keyed by ``cache_key(identity)``.

    Thread-safe and multi-process-safe for the purposes of a cache: concurrent
    writers of the same key each write a complete file and the last rename wins.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    # -- paths -------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        if len(key) < 3 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a hex cache key: {key!r}")
        return self.root / key[:2] / f"{key}.json"

    # -- access by key -----------------------------------------------------
    def get_by_key(self, key: str, default: Any = None) -> Any:
        path = self.path_for(key)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._count(miss=True)
            return default
        except OSError:
            self._count(miss=True, corrupt=True)
            return default
        try:
            env = json.loads(raw)
            if not isinstance(env, dict) or env.get("key") != key or "value" not in env:
                raise ValueError("bad envelope")
        except (ValueError, TypeError):
            self._count(miss=True, corrupt=True)
            return default
        self._count(miss=False)
        return env["value"]

    def put_by_key(self, key: str, value: Any, identity: Any = None) -> None:
        env = {"key": key, "identity": identity, "value": value}
        atomic_write_text(self.path_for(key), canonical_json(env) + "\n")

    # -- access by identity ------------------------------------------------
    def get(self, identity: Any, default: Any = None) -> Any:
        return self.get_by_key(cache_key(identity), default)

    def put(self, identity: Any, value: Any) -> str:
        key = cache_key(identity)
        self.put_by_key(key, value, identity)
        return key

    def __contains__(self, identity: Any) -> bool:
        key = cache_key(identity)
        return self.get_by_key(key, _MISSING) is not _MISSING

    def delete(self, identity: Any) -> bool:
        try:
            self.path_for(cache_key(identity)).unlink()
            return True
        except FileNotFoundError:
            return False

    def keys(self) -> Iterator[str]:
        for shard in sorted(self.root.iterdir()) if self.root.exists() else []:
            if shard.is_dir() and len(shard.name) == 2:
                for f in sorted(shard.glob("*.json")):
                    yield f.stem

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def _count(self, *, miss: bool, corrupt: bool = False) -> None:
        with self._lock:
            if miss:
                self.misses += 1
            else:
                self.hits += 1
            if corrupt:
                self.corrupt += 1
