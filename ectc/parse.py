"""parse: spec text -> lark tree, with syntax errors turned into diagnostics."""

from __future__ import annotations

import contextlib
import functools
import gc
import re
from pathlib import Path

from .lark_quiet import Lark, Shift, Token, Tree
from .lark_quiet import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import CompileError, Diagnostic, Span

# Inside the package, so an installed ectc (not only a checkout) can parse a spec.
GRAMMAR_PATH = Path(__file__).resolve().parent / "grammar" / "ect.lark"

# How expected terminals are named to a user.
_FRIENDLY = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "LONG_STRING": 'a """string"""',
    "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return GRAMMAR_PATH.read_text()


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    # cache=True stores the built LALR tables on disk, which keeps a cold `ectc check` fast.
    # keep_all_tokens instead of propagate_positions: lark's position propagation was two
    # thirds of parse time; with every token kept, `lower` computes spans itself as it walks
    # the tree and drops the tokens lark would have dropped (see `tree_shape`).
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="basic",
        keep_all_tokens=True,
        maybe_placeholders=True,
        cache=True,
    )


@functools.lru_cache(maxsize=1)
def tree_shape() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """What lark's tree builder would do without keep_all_tokens, for `lower` to do instead:
    (anonymous terminals it filters out, `!rules` that keep them, `?rules` it inlines when
    they have a single child). Read from the grammar's text: with keep_all_tokens on, lark
    marks every rule as keeping its tokens."""
    text = grammar_text()
    marked = re.findall(r"^([!?]+)(\w+)\s*:", text, re.M)
    named_terminals = set(re.findall(r"^([A-Z_][A-Z0-9_]*)(?:\.\d+)?\s*:", text, re.M))
    anonymous = frozenset(t.name for t in parser().terminals
                          if t.pattern.type == "str" and t.name not in named_terminals)
    keep = frozenset(name for marks, name in marked if "!" in marks)
    inline = frozenset(name for marks, name in marked if "?" in marks)
    return anonymous, keep, inline


# Stated limits (README, "Security and limits"): a spec beyond them gets a diagnostic, never a
# traceback, a hang or gigabytes of memory. Nesting is bounded below Python's own limits, both
# the interpreter's recursion (lower, check, diff walk the tree) and the generated code's parser
# (200 nested parentheses).
MAX_SPEC_CHARS = 1_000_000
MAX_SPEC_LINES = 20_000
MAX_NESTING = 120           # levels of the parse tree: expressions, blocks, settings
MAX_STRING_CHARS = 100_000
MAX_NUMBER_DIGITS = 18      # an integer literal fits in 64 bits


@contextlib.contextmanager
def without_gc():
    """The front end builds large acyclic trees; the cyclic garbage collector, walking them
    again and again as they grow, made parse and lower superlinear (measured on 5,000 / 10,000 /
    19,000 fields: 1.2 / 2.8 / 5.7 s with it, 0.6 / 1.4 / 2.5 s without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse(text: str) -> Tree:
    """Parse spec text; raise CompileError with the syntax diagnostic, or with every literal
    and nesting beyond the stated limits."""
    lines = text.count("\n") + 1
    if len(text) > MAX_SPEC_CHARS or lines > MAX_SPEC_LINES:
        raise CompileError([Diagnostic(Span(line=1, column=1, end_line=1, end_column=2), "E008",
                                       f"the spec is too large ({len(text)} characters, {lines} lines)",
                                       f"ectc reads specs of at most {MAX_SPEC_CHARS} characters and "
                                       f"{MAX_SPEC_LINES} lines")])
    try:
        tree = feed(parser(), text)
    except UnexpectedInput as err:
        raise CompileError([_syntax_diagnostic(text, err)]) from None
    problems = _beyond_limits(tree)
    if problems:
        raise CompileError(problems)
    return tree


def _token_span(token: Token) -> Span:
    return Span(line=token.line, column=token.column, end_line=token.end_line or token.line,
                end_column=token.end_column or token.column + 1)


def _first_token(tree: Tree) -> Token | None:
    node = tree
    while isinstance(node, Tree):
        present = [c for c in node.children if c is not None]
        if not present:
            return None
        node = present[0]
    return node


def _beyond_limits(tree: Tree) -> list[Diagnostic]:
    """One iterative walk (no recursion, so any depth is safe): literals out of range and the
    first place where the tree nests deeper than MAX_NESTING."""
    out: list[Diagnostic] = []
    stack: list[tuple[Tree | Token, int]] = [(tree, 1)]
    too_deep = False
    while stack:
        node, depth = stack.pop()
        if node is None:  # an absent optional part
            continue
        if isinstance(node, Token):
            out.extend(_literal_problems(node))
            continue
        if depth > MAX_NESTING and not too_deep:
            too_deep = True
            token = _first_token(node)
            span = _token_span(token) if token is not None else Span(line=1, column=1, end_line=1, end_column=2)
            out.append(Diagnostic(span, "E009", f"the spec nests deeper than {MAX_NESTING} levels here",
                                  "split the expression or the block: long chains of `and`, `+` or "
                                  "parentheses nest one level per term"))
        if not too_deep:
            stack.extend((child, depth + 1) for child in reversed(node.children))
        else:
            stack.extend((child, depth + 1) for child in reversed(node.children) if isinstance(child, Token))
    out.sort(key=lambda d: (d.span.line, d.span.column))
    return out


def _literal_problems(token: Token) -> list[Diagnostic]:
    if token.type == "NUMBER":
        digits = token.value.split(".")[0].split("e")[0].split("E")[0]
        value = float(token.value)
        if len(digits.lstrip("0")) > MAX_NUMBER_DIGITS or value == float("inf"):
            return [Diagnostic(_token_span(token), "E010", f"the number {token.value[:24]}"
                               + ("..." if len(token.value) > 24 else "") + " is out of range",
                               f"numbers in a spec have at most {MAX_NUMBER_DIGITS} digits before the point "
                               "and stay finite")]
        if value != 0.0 and abs(value) < 1e-300:
            return [Diagnostic(_token_span(token), "E010", f"the number {token.value} is out of range",
                               "numbers closer to zero than 1e-300 lose their precision")]
    elif token.type in ("STRING", "LONG_STRING") and len(token.value) > MAX_STRING_CHARS:
        return [Diagnostic(_token_span(token), "E010", f"this string is {len(token.value)} characters long",
                           f"strings in a spec have at most {MAX_STRING_CHARS} characters")]
    return []


@functools.lru_cache(maxsize=1)
def soft_keywords() -> frozenset[str]:
    """Terminal types of the keywords that may also serve as names (the grammar's `//soft`
    lines): with them as alternatives of `name`, the LALR table was four times larger and took
    ~40 ms of every cold start to load."""
    words = " ".join(re.findall(r"^//soft (.*)$", grammar_text(), re.M)).split()
    keywords = _scanner()[1]
    return frozenset(keywords[w] for w in words if w in keywords)


def feed(lark: Lark, text: str, on_comment=None) -> Tree:
    """Parse `text` with `lark` (a LALR parser of ectc/grammar/ect.lark): the tokens come from
    `tokens`; a soft keyword the parser cannot take where it can take a NAME is handed over as
    a NAME; comments go to `on_comment` when given."""
    interactive = lark.parse_interactive(start="start")
    state = interactive.parser_state
    actions = state.parse_conf.states
    soft = soft_keywords()
    last = None
    for tok in tokens(text, comments=on_comment is not None):
        if tok.type == "COMMENT":
            on_comment(tok)
            continue
        if tok.type in soft and not _shifts(actions, state.state_stack, tok.type) \
                and _shifts(actions, state.state_stack, "NAME"):
            tok = Token.new_borrow_pos("NAME", tok, tok)
        interactive.feed_token(tok)
        last = tok
    return interactive.feed_eof(last if last is not None else Token("$END", "", 0, 1, 1, 1, 1, 0))


def _shifts(actions: dict, stack: list, terminal: str) -> bool:
    """Whether the LALR parser with this state stack would shift `terminal`, after the
    reductions it calls for (the current state alone is not enough: LALR merges the lookaheads
    of states with the same items, so a reduction may be allowed where the shift is not)."""
    # The real stack is never copied (it holds one state per open item, so copying it for every
    # soft keyword made parsing quadratic in a block's length): `depth` marks how much of it the
    # simulated reductions have popped, `pushed` the states they put on top.
    depth, pushed = len(stack), []
    while True:
        top = pushed[-1] if pushed else stack[depth - 1]
        action = actions[top].get(terminal)
        if action is None:
            return False
        kind, arg = action
        if kind is Shift:
            return True
        size = len(arg.expansion)
        from_pushed = min(size, len(pushed))
        if from_pushed:
            del pushed[-from_pushed:]
        depth -= size - from_pushed
        top = pushed[-1] if pushed else stack[depth - 1]
        pushed.append(actions[top][arg.origin.name][1])


@functools.lru_cache(maxsize=2)
def _scanner(comments: bool = False) -> tuple[re.Pattern, dict[str, str]]:
    """One regex: skip blanks and comments (or, with `comments`, only blanks), then one named
    group per terminal in the order lark's basic lexer tries them. Keywords are left to NAME
    and told apart by a dict, as lark does."""
    lark = parser()
    terminals = sorted(lark.terminals, key=lambda t: (-t.priority, -t.pattern.max_width,
                                                      -len(t.pattern.value), t.name))
    name_re = re.compile(lark.get_terminal("NAME").pattern.to_regexp())
    keywords = {t.pattern.value: t.name for t in terminals
                if t.pattern.type == "str" and name_re.fullmatch(t.pattern.value)}
    ignored = set(lark.lexer_conf.ignore) - ({"COMMENT"} if comments else set())
    skip = "|".join(lark.get_terminal(name).pattern.to_regexp() for name in sorted(ignored))
    alternatives = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals
                            if t.name not in ignored
                            and not (t.pattern.type == "str" and t.pattern.value in keywords))
    return re.compile(f"(?:{skip})*(?:{alternatives})?"), keywords


def tokens(text: str, comments: bool = False):
    """The tokens of `text`, exactly as lark's basic lexer makes them (tests/test_parse.py
    compares the two), in half the time: lark's lexer keeps a line-counter object per token
    and matches the blanks between tokens as tokens of their own."""
    pattern, keywords = _scanner(comments)
    match, count, rfind = pattern.match, text.count, text.rfind
    pos, line, line_start, end = 0, 1, 0, len(text)
    while pos < end:
        m = match(text, pos)
        kind = m.lastgroup
        start = m.start(kind) if kind else m.end()
        if start != pos and "\n" in text[pos:start]:
            line += count("\n", pos, start)
            line_start = rfind("\n", pos, start) + 1
        if kind is None:
            if start < end:
                raise UnexpectedCharacters(text, start, line, start - line_start + 1,
                                           terminals_by_name=parser()._terminals_dict)
            return
        value = m.group(kind)
        pos = m.end()
        end_line, end_line_start = line, line_start
        if kind == "NAME":
            kind = keywords.get(value, "NAME")
        elif kind == "LONG_STRING" and "\n" in value:
            end_line = line + value.count("\n")
            end_line_start = start + value.rindex("\n") + 1
        yield Token(kind, value, start, line, start - line_start + 1, end_line,
                    pos - end_line_start + 1, pos)
        line, line_start = end_line, end_line_start


def _describe(terminal: str) -> str:
    if terminal in _FRIENDLY:
        return _FRIENDLY[terminal]
    try:
        pattern = parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal.lower()
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return terminal.lower()


def _expected(err: UnexpectedInput) -> str:
    names = sorted({_describe(t) for t in getattr(err, "expected", None) or getattr(err, "allowed", ()) or ()})
    # Keywords are many; a long list helps nobody.
    if len(names) > 8:
        names = names[:8] + ["..."]
    return ", ".join(names)


def _offset_to_line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


def _previous_token_end(text: str, offset: int) -> int:
    """Offset just past the last non-blank, non-comment character before `offset`."""
    head = text[:offset]
    while True:
        stripped = head.rstrip()
        # drop a trailing comment on the last line
        last_line_start = stripped.rfind("\n") + 1
        line = stripped[last_line_start:]
        m = re.search(r'#[^"]*$', line)
        if m and line.count('"', 0, m.start()) % 2 == 0:
            head = stripped[: last_line_start + m.start()]
            continue
        return len(stripped)


def _syntax_diagnostic(text: str, err: UnexpectedInput) -> Diagnostic:
    if isinstance(err, UnexpectedCharacters):
        line, col = err.line, err.column
        char = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        if char == '"':
            return Diagnostic(
                Span(line=line, column=col, end_line=line, end_column=col + 1),
                "E001",
                "unterminated string",
                'close the string with `"` on the same line, or use """...""" for several lines',
            )
        return Diagnostic(
            Span(line=line, column=col, end_line=line, end_column=col + 1),
            "E002",
            f"unexpected character `{char}`",
            "a spec holds names, numbers, strings, brackets and operators; `#` starts a comment",
        )
    if isinstance(err, UnexpectedEOF) or (
        isinstance(err, UnexpectedToken) and err.token.type == "$END"
    ):
        end = _previous_token_end(text, len(text))
        line, col = _offset_to_line_col(text, max(end - 1, 0))
        return Diagnostic(
            Span(line=line, column=col, end_line=line, end_column=col + 1),
            "E003",
            "unexpected end of file",
            f"expected {_expected(err)}",
        )
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = _expected(err)
    separators = {"`,`", "`]`", "`)`", "`}`", "`then`", "`else`", "`=`", "`:`"}
    expected_set = set(expected.split(", "))
    # A missing separator is best shown where it belongs: right after the previous token.
    value_start = tok.type in ("NAME", "NUMBER", "STRING", "LONG_STRING")
    if tok.start_pos is not None and expected_set and (
            expected_set <= separators | {"..."} or (value_start and "`,`" in expected_set)):
        if value_start and "`,`" in expected_set:
            expected = "`,`"
        end = _previous_token_end(text, tok.start_pos)
        line, col = _offset_to_line_col(text, end)
        return Diagnostic(
            Span(line=line, column=col, end_line=line, end_column=col + 1),
            "E004",
            f"expected {expected} here",
            f"found `{tok}` next",
        )
    length = max(len(str(tok)), 1)
    return Diagnostic(
        Span(line=tok.line, column=tok.column, end_line=tok.line, end_column=tok.column + length),
        "E005",
        f"unexpected `{tok}`",
        f"expected {expected}" if expected else None,
    )
