"""`ectc lsp`: a language server over stdio (pygls) for `.ect` specs.

It publishes `check`'s diagnostics (the same `compile.diagnose`, so the same codes and spans) when
a spec is opened or changed, hovers a setting key with its kind and doc, and completes setting
keys, arm names, metric names and template variables (`editor.py` decides what; this module only
speaks the protocol). Imported by `ectc lsp` alone, so no other command loads pygls.
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from . import __version__, editor, ir
from .compile import diagnose
from .errors import CompileError
from .lower import lower
from .parse import parse

SEVERITY = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning}
ITEM_KIND = {"key": types.CompletionItemKind.Property, "value": types.CompletionItemKind.EnumMember,
             "arm": types.CompletionItemKind.Reference,
             "profile": types.CompletionItemKind.Module, "metric": types.CompletionItemKind.Field,
             "variable": types.CompletionItemKind.Variable, "keyword": types.CompletionItemKind.Keyword}


class EctServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("ectc", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full)
        # The last version of each document that lowered: the text being typed rarely parses,
        # and completion still needs its arms, metrics and data fields.
        self.specs: dict[str, ir.Spec] = {}


def _position(line_char: tuple[int, int]) -> types.Position:
    return types.Position(line=line_char[0], character=line_char[1])


def lsp_diagnostics(text: str, folder: Path | None = None) -> list[types.Diagnostic]:
    """`ectc check`'s diagnostics of `text`; `folder`, the spec's (a saved file's), is where its
    word lists are looked for (E405), as `check` looks beside the spec."""
    lines = text.splitlines() or [""]
    out = []
    for d in diagnose(text, folder=folder):
        start, end = editor.lsp_range(d, lines)
        out.append(types.Diagnostic(
            range=types.Range(start=_position(start), end=_position(end)),
            message=d.message + (f"\nhint: {d.hint}" if d.hint else ""),
            severity=SEVERITY[d.severity], code=d.code, source="ectc"))
    return out


def _refresh(ls: EctServer, uri: str) -> None:
    doc = ls.workspace.get_text_document(uri)
    text = doc.source
    try:
        ls.specs[uri] = lower(parse(text))
    except CompileError:
        pass
    folder = Path(doc.path).parent if uri.startswith("file:") else None
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
        uri=uri, version=doc.version, diagnostics=lsp_diagnostics(text, folder)))


def make_server() -> EctServer:
    server = EctServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: EctServer, params: types.DidOpenTextDocumentParams) -> None:
        _refresh(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: EctServer, params: types.DidChangeTextDocumentParams) -> None:
        _refresh(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: EctServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.specs.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["{", " "]))
    def completion(ls: EctServer, params: types.CompletionParams) -> types.CompletionList:
        text = ls.workspace.get_text_document(params.text_document.uri).source
        offset = editor.offset_of(text, params.position.line, params.position.character)
        items = editor.complete(text, offset, ls.specs.get(params.text_document.uri))
        return types.CompletionList(is_incomplete=False, items=[
            types.CompletionItem(label=i.label, kind=ITEM_KIND[i.kind], detail=i.detail or None,
                                 documentation=i.doc or None) for i in items])

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: EctServer, params: types.HoverParams) -> types.Hover | None:
        text = ls.workspace.get_text_document(params.text_document.uri).source
        found = editor.hover(text, editor.offset_of(text, params.position.line, params.position.character))
        if found is None:
            return None
        markdown, (start, end) = found
        span = types.Range(start=_position(editor.position_of(text, start)),
                           end=_position(editor.position_of(text, end)))
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=markdown), range=span)

    return server


def serve() -> None:
    make_server().start_io()
