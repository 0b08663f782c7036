"""`ectc lsp`, driven over stdio by pygls's language client as an editor would: the diagnostics
`check` reports (same code, same range), completion of keys, arms, metrics and template
variables, and hover with a setting's doc."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")
from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402

from ectc import schema  # noqa: E402

ROOT = Path(__file__).parent.parent
SPEC = ROOT / "tests/fixtures/editor/two_problems.ect"  # E601 (`bacth` in rl) and W112
URI = SPEC.as_uri()


def _check_json(path: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "ectc", "check", "--format", "json", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def _pos(text: str, marker: str, after: str = "") -> types.Position:
    """The position just after `after` within the first `marker` (its start when `after` is empty)."""
    at = text.index(marker) + (marker.index(after) + len(after) if after else 0)
    line = text.count("\n", 0, at)
    return types.Position(line=line, character=at - (text.rfind("\n", 0, at) + 1))


async def _session(text: str, edited: str) -> dict:
    client = LanguageClient("ectc-test", "1")
    published: list[types.PublishDiagnosticsParams] = []
    arrived = asyncio.Event()

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: types.PublishDiagnosticsParams) -> None:
        published.append(params)
        arrived.set()

    async def next_diagnostics() -> types.PublishDiagnosticsParams:
        await asyncio.wait_for(arrived.wait(), 60)
        arrived.clear()
        return published[-1]

    await client.start_io(sys.executable, "-m", "ectc", "lsp", cwd=str(ROOT))
    try:
        await asyncio.wait_for(client.initialize_async(types.InitializeParams(
            process_id=None, root_uri=ROOT.as_uri(), capabilities=types.ClientCapabilities())), 60)
        client.initialized(types.InitializedParams())
        doc = types.TextDocumentIdentifier(uri=URI)
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=URI, language_id="ect", version=1, text=text)))
        opened = await next_diagnostics()
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=URI, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=edited)]))
        changed = await next_diagnostics()

        async def complete(position):
            res = await asyncio.wait_for(client.text_document_completion_async(
                types.CompletionParams(text_document=doc, position=position)), 60)
            return [i.label for i in (res.items if isinstance(res, types.CompletionList) else res)]

        result = {
            "opened": opened, "changed": changed,
            "sft": await complete(_pos(edited, "sft {  }", "sft { ")),
            "arms": await complete(_pos(edited, "compare ect vs baseline", "compare ect vs ")),
            "metrics": await complete(_pos(edited, "compare ect vs baseline on accuracy", " on ")),
            "schedule": await complete(_pos(edited, "schedule ", "schedule ")),
            "prompt": await complete(_pos(edited, 'prompt "{{ label }} Is {{ ', '{{ label }} Is {{ ')),
            "hover": await asyncio.wait_for(client.text_document_hover_async(types.HoverParams(
                text_document=doc, position=_pos(edited, "steps 10", "st"))), 60),
        }
        await asyncio.wait_for(client.shutdown_async(None), 60)
        client.exit(None)
    finally:
        await asyncio.wait_for(client.stop(), 60)
    return result


def test_lsp_session_over_stdio(tmp_path):
    text = SPEC.read_text()
    # The edit fixes the unknown key, opens an empty sft block and a schedule awaiting its value.
    edited = text.replace("rl { steps 10 bacth 8 }", "rl { steps 10 batch 8 schedule  }\n    sft {  }")
    r = asyncio.run(_session(text, edited))

    # Opening: exactly `ectc check`'s diagnostics, code and range (LSP counts from 0).
    expected = _check_json(SPEC)
    assert [d["code"] for d in expected] == ["W112", "E601"]
    got = r["opened"].diagnostics
    assert [(d.code, d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character,
             d.severity) for d in got] == [
        (e["code"], e["line"] - 1, e["column"] - 1, e["end_line"] - 1, e["end_column"] - 1,
         types.DiagnosticSeverity.Error if e["severity"] == "error" else types.DiagnosticSeverity.Warning)
        for e in expected]
    assert got[1].message == "unknown setting `bacth` in `rl` of profile `tiny`\nhint: did you mean `batch`?"
    # The edit is half-typed (`schedule` awaits its value): check's syntax error, at check's range.
    # Completion below still knows the arms and metrics, from the last version that parsed.
    (tmp_path / "edited.ect").write_text(edited)
    expected = _check_json(tmp_path / "edited.ect")
    assert r["changed"].version == 2
    assert [(d.code, d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character)
            for d in r["changed"].diagnostics] == [
        (e["code"], e["line"] - 1, e["column"] - 1, e["end_line"] - 1, e["end_column"] - 1) for e in expected]
    assert [e["code"] for e in expected] == ["E005"]

    # Exactly the sft block's keys (not rl's, nor the profile's), in the schema's order.
    assert r["sft"] == list(schema.SFT)
    assert {"lr", "epochs", "max_length", "gradient_checkpointing"} <= set(r["sft"]) and "minibatch" not in r["sft"]
    assert r["arms"] == ["baseline", "ect"]
    assert r["metrics"] == ["accuracy"]
    assert r["schedule"] == [str(w) for w in schema.RL["schedule"]] and "cosine" in r["schedule"]
    assert r["prompt"] == ["a", "label", "ok"]
    hover = r["hover"]
    assert hover.contents.value == ("**`rl.steps`**: a whole number\n\n"
                                    "RL optimizer steps per arm and seed (GRPOConfig.max_steps).")
    assert hover.range == types.Range(start=_pos(edited, "steps 10"), end=_pos(edited, "steps 10", "steps"))


def test_the_server_looks_for_word_lists_beside_the_spec():
    """E405 in the editor as in `ectc check`: a saved spec's word lists are looked for in its folder."""
    from ectc.lsp import lsp_diagnostics

    fixture = Path(__file__).parent / "fixtures" / "diagnostics" / "E405_word_list_missing.ect"
    found = lsp_diagnostics(fixture.read_text(), fixture.parent)
    assert [d.code for d in found] == ["E405", "E405"]
    assert [(d.range.start.line, d.range.start.character) for d in found] == [(21, 19), (21, 46)]
