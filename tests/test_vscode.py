"""editors/vscode: the TextMate grammar covers every keyword of ectc/grammar/ect.lark, and the
extension starts the language server the CLI has."""

import json
import re
from pathlib import Path

from ectc.cli import build_parser

ROOT = Path(__file__).parent.parent
EXT = ROOT / "editors/vscode"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def grammar_keywords() -> set[str]:
    """Every word the .lark grammar spells out ("experiment", "vs", ...), outside its comments."""
    words = set()
    for line in (ROOT / "ectc/grammar/ect.lark").read_text().splitlines():
        code = line.split("//", 1)[0]
        words |= {w for w in re.findall(r'"([^"\\]*)"', code) if NAME.fullmatch(w)}
    return words


def _keyword_patterns() -> list[re.Pattern]:
    grammar = json.loads((EXT / "syntaxes/ect.tmLanguage.json").read_text())
    repo = grammar["repository"]
    return [re.compile(p["match"]) for p in repo["keywords"]["patterns"]]


def test_every_grammar_keyword_is_highlighted():
    keywords = grammar_keywords()
    soft = {w for line in (ROOT / "ectc/grammar/ect.lark").read_text().splitlines() if line.startswith("//soft")
            for w in line.split()[1:]}
    assert {"experiment", "profile", "vs", "fallback", "gguf"} <= keywords and soft <= keywords
    patterns = _keyword_patterns()
    missing = sorted(k for k in keywords if not any(p.fullmatch(k) for p in patterns))
    assert missing == [], f"add these to editors/vscode/syntaxes/ect.tmLanguage.json: {missing}"
    # Whole words only: a name that merely contains a keyword stays a name.
    assert not any(p.search("labels_x") or p.search("intercept") for p in patterns)


def test_grammar_scopes_a_spec_line():
    grammar = json.loads((EXT / "syntaxes/ect.tmLanguage.json").read_text())
    decl = re.compile(grammar["repository"]["declaration"]["match"])
    assert decl.match("experiment sycophancy {").group(2) == "sycophancy"
    comment = re.compile(grammar["repository"]["comment"]["match"])
    assert comment.search('  seeds 7   # per arm').group(0) == "# per arm"


def test_package_wires_the_language_and_the_server():
    pkg = json.loads((EXT / "package.json").read_text())
    (lang,) = pkg["contributes"]["languages"]
    (grammar,) = pkg["contributes"]["grammars"]
    assert lang["extensions"] == [".ect"] and grammar["language"] == lang["id"] == "ect"
    assert json.loads((EXT / grammar["path"]).read_text())["scopeName"] == grammar["scopeName"]
    config = json.loads((EXT / lang["configuration"]).read_text())
    assert config["comments"] == {"lineComment": "#"}
    assert pkg["activationEvents"] == ["onLanguage:ect"]
    main = (EXT / pkg["main"]).read_text()
    assert 'args: ["lsp"]' in main
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert "lsp" in commands
