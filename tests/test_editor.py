"""What the language server answers at a cursor (ectc/editor.py), on the shipped specs, plus the
editor commands' promises: `--version`, shell completion, and no pygls/shtab for other commands."""

import subprocess
import sys
from pathlib import Path

import pytest

from ectc import editor
from ectc.errors import Diagnostic, Span
from ectc.lower import lower
from ectc.parse import parse

ROOT = Path(__file__).parent.parent
BIAS = (ROOT / "specs/bias.ect").read_text()
SYCO = (ROOT / "specs/sycophancy.ect").read_text()


def _labels(text: str, offset: int) -> list[str]:
    return [i.label for i in editor.complete(text, offset, lower(parse(text)))]


def _after(text: str, marker: str, start: str = "") -> int:
    return text.index(marker, text.index(start) if start else 0) + len(marker)


def test_keys_follow_the_block_at_the_cursor():
    at = _after(SYCO, "model tiny {")
    assert _labels(SYCO, at) == ["layers", "width", "heads", "numbers"]
    at = _after(SYCO, "warmup {")
    assert _labels(SYCO, at) == ["steps", "batch", "lr", "label", "mix", "loss", "weight_decay"]
    # `evaluate` inside a profile is the profile's setting, not the experiment's block.
    at = _after(SYCO, "evaluate {", "profile tiny")
    assert _labels(SYCO, at) == ["samples", "sweep"]
    at = _after(BIAS, "sees [topic, response]")
    assert "rubric" in _labels(BIAS, at) and "intercept" not in _labels(BIAS, at)


def test_arm_parts_and_reused_arms():
    at = _after(BIAS, "reuse ", "arms {")
    assert _labels(BIAS, at) == ["baseline", "shuffled", "ect", "prompt_only", "arbitrary", "least_biased", "ootb", "base"]
    at = _after(BIAS, "shuffled:     label ")
    assert _labels(BIAS, at) == ["none", "true", "shuffled", "fixed"]


def test_template_variables_by_template():
    spec = lower(parse(BIAS))
    label_at = _after(BIAS, 'label "')
    text = BIAS[:label_at] + "{{ " + BIAS[label_at:]
    labels = [i.label for i in editor.complete(text, label_at + 3, spec)]
    assert "perspective" in labels and "perspective_description" in labels and "label" not in labels
    rubric_at = _after(BIAS, "{{ topic }}", "rubric")
    text = BIAS[:rubric_at] + " {{ " + BIAS[rubric_at:]
    assert [i.label for i in editor.complete(text, rubric_at + 4, spec)] == ["response", "topic"]
    # A closed `{{ ... }}` before the cursor offers nothing.
    assert editor.complete(BIAS, rubric_at, spec) == []


def test_hover_on_a_key_and_not_elsewhere():
    at = SYCO.index("layers", SYCO.index("model tiny {"))
    md, (start, end) = editor.hover(SYCO, at + 2)
    assert SYCO[start:end] == "layers"
    assert md == "**`model.tiny.layers`**: a whole number\n\nTransformer layers of the tiny model."
    assert editor.hover(SYCO, SYCO.index("experiment") + 1) is None


def test_utf16_positions():
    lines = ['  label "é 😀 {{ x }}"']
    d = Diagnostic(Span(1, 14, 1, 16), "E201", "m")  # the `{{` after the emoji, in characters
    assert editor.lsp_range(d, lines) == ((0, 14), (0, 16))  # the emoji is two UTF-16 units
    assert editor.offset_of(lines[0], 0, 14) == 13
    text = "a\n" + lines[0]
    assert editor.position_of(text, 2 + 13) == (1, 14) and editor.offset_of(text, 1, 14) == 15


def test_version_matches_the_package():
    import tomllib

    out = subprocess.run([sys.executable, "-m", "ectc", "--version"], capture_output=True, text=True, cwd=ROOT)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("version")
    from ectc import __version__

    assert out.returncode == 0 and out.stdout == f"ectc {__version__}\n"
    if version is not None:  # a static version: the two must agree
        assert version == __version__


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_lists_commands_and_spec_files(shell):
    pytest.importorskip("shtab")
    out = subprocess.run([sys.executable, "-m", "ectc", "completion", shell], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    for command in ("check", "build", "fmt", "diff", "run", "lsp", "schema", "completion"):
        assert command in out
    assert "--format" in out
    assert ("_shtab_compgen_files" if shell == "bash" else "_files -g '*.ect'") in out
    if shell == "bash":
        assert subprocess.run(["bash", "-n"], input=out, text=True).returncode == 0


def test_other_commands_load_neither_pygls_nor_shtab():
    code = ("import sys; from ectc.cli import main; "
            f"main(['check', '--format', 'json', {str(ROOT / 'specs/sycophancy.ect')!r}]); "
            "print([m for m in ('pygls', 'lsprotocol', 'shtab', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr


def test_every_cursor_of_a_half_typed_spec_answers_without_raising():
    base = (ROOT / "tests/fixtures/diagnostics/base.ect").read_text()
    spec = lower(parse(base))
    hostile = base.replace("Is {{ a }}", 'Is {{ a }} @ \u0000 "\U0001f600 """x').replace("\n", "\r\n", 3)
    for text in (base, hostile):
        for i in range(len(text) + 1):
            for typed in (text, text[:i]):  # the whole file, and the file as typed so far
                editor.complete(typed, i, spec)
                editor.complete(typed, i, None)
                editor.hover(typed, min(i, len(typed)))
