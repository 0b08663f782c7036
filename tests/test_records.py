"""Large files' digests persist across processes, keyed so an edited file is hashed again."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from ectc.plan.records import PERSIST_MIN_BYTES

DIGEST = [sys.executable, "-c", "import sys; from ectc.plan.records import content_hash; print(content_hash(sys.argv[1]))"]


def test_a_large_files_digest_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("ECTC_CACHE_DIR", str(tmp_path / "cache"))
    big = tmp_path / "model.gguf"
    big.write_bytes(b"x" * PERSIST_MIN_BYTES)
    truth = hashlib.sha256(big.read_bytes()).hexdigest()
    assert subprocess.run([*DIGEST, str(big)], capture_output=True, text=True, check=True).stdout.strip() == truth

    memo_file = tmp_path / "cache" / "digests.json"
    memo = json.loads(memo_file.read_text())
    assert list(memo.values()) == [truth]
    # A planted digest is what the next process answers: it read the memo and hashed nothing.
    memo_file.write_text(json.dumps({key: "ab" * 32 for key in memo}))
    assert subprocess.run([*DIGEST, str(big)], capture_output=True, text=True, check=True).stdout.strip() == "ab" * 32

    with big.open("ab") as handle:  # an edit changes size, mtime and ctime: hashed again
        handle.write(b"y")
    changed = hashlib.sha256(big.read_bytes()).hexdigest()
    assert subprocess.run([*DIGEST, str(big)], capture_output=True, text=True, check=True).stdout.strip() == changed


def test_small_files_are_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("ECTC_CACHE_DIR", str(tmp_path / "cache"))
    small = tmp_path / "words.txt"
    small.write_text("a\nb\n")
    out = subprocess.run([*DIGEST, str(small)], capture_output=True, text=True, check=True).stdout.strip()
    assert out == hashlib.sha256(b"a\nb\n").hexdigest()
    assert not (tmp_path / "cache" / "digests.json").exists()
