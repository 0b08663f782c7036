"""The README's tables of what templates print and what the tiny model's tokenizer makes of a
text are the real output: each row is recomputed here (issue 16)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _table(after: str) -> list[list[str]]:
    """The rows (cells stripped, `\\|` unescaped) of the first table after the line `after`."""
    lines = README[README.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_number_formats_in_templates():
    from ectc.sandbox import environment

    rows = _table("**Numbers in templates.**")
    assert len(rows) == 3
    for template, *shown in rows:
        rendered = [environment().from_string(_code(template)[0]).render(p=p) for p in (0.5, 0.125, 1 / 3, 1.0)]
        assert [_code(c)[0] for c in shown] == rendered


def test_tiny_model_tokens():
    pytest.importorskip("tokenizers")
    from ectc.runtime.models import build_word_tokenizer

    rows = _table("**What the tiny model sees.**")
    texts = [_code(r[0])[0] for r in rows]
    assert "0.50" in texts and "The sky is blue." in texts
    for column, split in ((1, True), (2, False)):
        tok = build_word_tokenizer(texts, split_digits=split)
        for row in rows:
            tokens = tok.convert_ids_to_tokens(tok(_code(row[0])[0], add_special_tokens=False)["input_ids"])
            cell = row[1] if row[column] == "the same" else row[column]
            count = re.search(r"(\d+)( tokens|\))$", cell)
            if _code(cell):
                assert _code(cell) == tokens, row
            if count:
                assert int(count.group(1)) == len(tokens), row
            assert _code(cell) or count, row


def test_metrics_read_monitors_as_the_readme_says():
    from ectc.compile import compile_text

    base = (ROOT / "tests/fixtures/diagnostics/base.ect").read_text()
    text = base.replace("  arms {", """  monitor length: expr words(response) {}
  monitor fillers: lexicon {
    sees [response]
    lists { filler "fillers.txt" }
    intercept 0 slope 1
  }

  arms {""").replace("    compare ect", """    metric words  = mean(length)
    metric padded = mean(length > 3)
    metric filler = mean(fillers.hits)
    metric rate   = mean(fillers.magnitude)
    compare ect""")
    spec, warnings = compile_text(text)
    assert [m.name for m in spec.experiments[0].evaluate.metrics] == ["accuracy", "words", "padded", "filler", "rate"]
    assert warnings == []
