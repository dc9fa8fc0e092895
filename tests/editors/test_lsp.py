"""`herd lsp` end to end: a real client talks to the server subprocess over stdio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

DATA = Path(__file__).parent / "data"
MAIN = (DATA / "main.herd").resolve()
COMMON = (DATA / "common.herd").resolve()

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "herdlang.cli", "lsp"]),
)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(),
            workspace_folders=[lsp.WorkspaceFolder(uri=DATA.resolve().as_uri(), name="data")],
        )
    )
    yield
    await lsp_client.shutdown_session()


async def _open(client: LanguageClient, path: Path, text: str | None = None, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(
            lsp.TextDocumentItem(uri=uri, language_id="herd", version=version, text=text or path.read_text())
        )
    )
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return uri


async def _change(client: LanguageClient, uri: str, text: str, version: int) -> list[lsp.Diagnostic]:
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )
    while True:
        params = await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        if params.uri == uri:
            return list(params.diagnostics)


def _pos(text: str, needle: str, delta: int = 0) -> lsp.Position:
    """The LSP position (0-based) of `needle` in `text`, plus `delta` characters."""
    i = text.index(needle) + delta
    line = text.count("\n", 0, i)
    return lsp.Position(line, i - (text.rfind("\n", 0, i) + 1))


async def test_clean_spec_has_no_diagnostics(client: LanguageClient):
    uri = await _open(client, MAIN)
    assert list(client.diagnostics[uri]) == []


async def test_diagnostics_as_you_type_with_exact_ranges(client: LanguageClient):
    text = MAIN.read_text()
    uri = MAIN.as_uri()
    bad = text.replace("layers = 2", "laers = 2")
    diags = await _change(client, uri, bad, 2)
    assert len(diags) == 1
    d = diags[0]
    assert d.code == "H0201" and "laers" in d.message and "did you mean 'layers'" in d.message
    start = _pos(bad, "laers")
    assert d.range == lsp.Range(start, lsp.Position(start.line, start.character + 5))
    # a compiler error (dangling reference) on the exact name
    bad = text.replace("data    = web", "data    = webb")
    diags = await _change(client, uri, bad, 3)
    assert [x.code for x in diags] == ["H0301"]
    start = _pos(bad, "webb")
    assert diags[0].range == lsp.Range(start, lsp.Position(start.line, start.character + 4))
    # a syntax error
    bad = text.replace("tokens  = 1M tokens", "tokens  = = 1M")
    diags = await _change(client, uri, bad, 4)
    assert diags and diags[0].code == "H0102"
    assert diags[0].range.start.line == _pos(bad, "= = 1M").line
    # fixed again: diagnostics cleared
    assert await _change(client, uri, text, 5) == []


async def test_warnings_show_as_warnings(client: LanguageClient):
    text = MAIN.read_text()
    uri = MAIN.as_uri()
    bad = text.replace("batch   = 16K tokens", "batch   = 16K tokens -> 32K tokens at 5M tokens")
    [d] = await _change(client, uri, bad, 20)
    assert d.code == "H0603" and d.severity == lsp.DiagnosticSeverity.Warning
    assert "never used" in d.message and d.range.start.line == _pos(bad, "16K tokens ->").line
    assert await _change(client, uri, text, 21) == []


async def test_error_in_imported_file_is_shown_on_the_import(client: LanguageClient):
    uri = MAIN.as_uri()
    common = COMMON.read_text().replace("max_repeats = 6", "max_repeat = 6")
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(COMMON.as_uri(), "herd", 1, common))
    )
    seen: dict[str, list[lsp.Diagnostic]] = {}
    while uri not in seen or COMMON.as_uri() not in seen:
        params = await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        seen[params.uri] = params.diagnostics
    assert seen[COMMON.as_uri()][0].code == "H0201"
    (d,) = seen[uri]
    assert d.range.start.line == 0 and "common.herd" in d.message
    assert d.related_information and d.related_information[0].location.uri == COMMON.as_uri()
    client.text_document_did_close(lsp.DidCloseTextDocumentParams(lsp.TextDocumentIdentifier(COMMON.as_uri())))
    await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert await _change(client, uri, MAIN.read_text(), 6) == []


async def test_hover_model_params_and_stage_estimates(client: LanguageClient):
    text = MAIN.read_text()
    uri = MAIN.as_uri()
    hover = await client.text_document_hover_async(
        lsp.HoverParams(lsp.TextDocumentIdentifier(uri), _pos(text, "small\n  data", 1))
    )
    assert hover is not None
    assert "parameters" in hover.contents.value and "vocab_size" in hover.contents.value
    hover = await client.text_document_hover_async(
        lsp.HoverParams(lsp.TextDocumentIdentifier(uri), _pos(text, "warm {", 1))
    )
    assert "tokens" in hover.contents.value and "FLOPs" in hover.contents.value
    hover = await client.text_document_hover_async(
        lsp.HoverParams(lsp.TextDocumentIdentifier(uri), _pos(text, "tokens  = 2M", 2))
    )
    assert "token count" in hover.contents.value
    hover = await client.text_document_hover_async(
        lsp.HoverParams(lsp.TextDocumentIdentifier(uri), _pos(text, "needle  trials", 1))
    )
    assert "Needle-in-a-haystack" in hover.contents.value


async def test_hover_component_and_call(client: LanguageClient):
    await _open(client, COMMON)
    text = COMMON.read_text()
    uri = COMMON.as_uri()
    hover = await client.text_document_hover_async(
        lsp.HoverParams(lsp.TextDocumentIdentifier(uri), _pos(text, "lines {", 1))
    )
    assert "max_repeats" in hover.contents.value and "Lines repeated" in hover.contents.value
    hover = await client.text_document_hover_async(
        lsp.HoverParams(lsp.TextDocumentIdentifier(uri), _pos(text, "swiglu", 1))
    )
    assert "multiple_of" in hover.contents.value


async def _labels(client: LanguageClient, uri: str, text: str, needle: str, delta: int) -> list[str]:
    result = await client.text_document_completion_async(
        lsp.CompletionParams(lsp.TextDocumentIdentifier(uri), _pos(text, needle, delta))
    )
    assert result is not None
    items = result.items if isinstance(result, lsp.CompletionList) else result
    return [i.label for i in items]


async def test_completion(client: LanguageClient):
    uri = MAIN.as_uri()
    text = MAIN.read_text() + "\npretrain p2 {\n  model = \n  schedule = \n  \n}\n\nrun {\n  device = \n  parallel {\n    \n  }\n}\n\n"
    await _change(client, uri, text, 10)
    assert {"small", "base"} <= set(await _labels(client, uri, text, "model = \n", 8))
    assert "tok" not in await _labels(client, uri, text, "model = \n", 8)
    assert {"cosine", "wsd"} <= set(await _labels(client, uri, text, "schedule = \n", 11))
    keys = await _labels(client, uri, text, "schedule = \n  \n", 14)
    assert {"tokens", "batch", "optimizer"} <= set(keys)
    assert await _labels(client, uri, text, "device = \n", 9) == ["auto", "cpu", "cuda"]
    assert {"tensor", "pipeline", "fsdp"} <= set(await _labels(client, uri, text, "parallel {\n    \n", 15))
    top = await _labels(client, uri, text, "}\n\n", 2)
    assert {"model", "pretrain", "import"} <= set(top)
    # from = names stages; gate keys are evals
    text2 = MAIN.read_text().replace("from    = warm", "from    = ").replace("needle_small >= 0.5", "")
    await _change(client, uri, text2, 11)
    assert await _labels(client, uri, text2, "from    = ", 10) == ["long", "warm"] or "warm" in await _labels(
        client, uri, text2, "from    = ", 10
    )
    assert "needle_small" in await _labels(client, uri, text2, "gate { ", 7)
    await _change(client, uri, MAIN.read_text(), 12)



async def test_completion_on_one_line_blocks_and_of_names_that_fit(client: LanguageClient):
    uri = MAIN.as_uri()
    text = MAIN.read_text() + (
        "\ndata d2 { dedup minhash { ngram = 5  } }\n"
        "mix m2 { d2 = 50%  }\n"
        "model child extends  { layers = 2 }\n"
        "posttrain c2 { from = long  reward_model judge { }  rejection_sampling { scorer =  } }\n"
        "extend e2 { from = long  gate {  } }\n"
        "run { hardware { gpu =  } }\n"
    )
    await _change(client, uri, text, 20)
    # entries share a line: after `ngram = 5  ` come the units of a number and the next key
    after_number = await _labels(client, uri, text, "ngram = 5  ", 11)
    assert {"tokens", "steps", "bands", "rows"} <= set(after_number)
    # a mix's keys are data stages, each once: d2 is set already (twice would be H0205)
    mix_keys = await _labels(client, uri, text, "d2 = 50%  ", 10)
    assert "web" in mix_keys and "d2" not in mix_keys
    # a block's keys already set are not offered again; nested calls' arguments do not count
    assert "bands" in after_number and "ngram" not in after_number
    assert "from" not in await _labels(client, uri, text, "gate {  } }", 10)
    # a model cannot extend itself
    assert "child" not in await _labels(client, uri, text, "child extends ", 14)
    # a scorer is the verifier or the stage's reward model, not an eval
    assert await _labels(client, uri, text, "scorer = ", 9) == ["verifier", "judge"]
    # a gate compares what an extension measures (any other eval is H0404)
    gate = await _labels(client, uri, text, "gate {  }", 7)
    assert {"needle", "short_context_recovery"} <= set(gate) and not {"perplexity", "choice"} & set(gate)
    assert {"h100", "h200", "cpu"} <= set(await _labels(client, uri, text, "gpu = ", 6))
    await _change(client, uri, MAIN.read_text(), 21)

async def test_definition_and_references_across_imports(client: LanguageClient):
    text = MAIN.read_text()
    uri = MAIN.as_uri()
    locs = await client.text_document_definition_async(
        lsp.DefinitionParams(lsp.TextDocumentIdentifier(uri), _pos(text, "extends base", 9))
    )
    common = COMMON.read_text()
    assert locs == [lsp.Location(COMMON.as_uri(), lsp.Range(_pos(common, "base {"), _pos(common, "base {", 4)))]
    locs = await client.text_document_definition_async(
        lsp.DefinitionParams(lsp.TextDocumentIdentifier(uri), _pos(text, "import", 8))
    )
    assert locs[0].uri == COMMON.as_uri()
    refs = await client.text_document_references_async(
        lsp.ReferenceParams(
            text_document=lsp.TextDocumentIdentifier(uri),
            position=_pos(text, "= web", 3),
            context=lsp.ReferenceContext(include_declaration=True),
        )
    )
    where = sorted((Path(r.uri.removeprefix("file://")).name, r.range.start.line) for r in refs)
    # definition in common.herd, tokenizer train_on in common.herd, pretrain data in main.herd
    assert where == sorted([("common.herd", common[: common.index("data web")].count("\n")),
                            ("common.herd", common[: common.index("train_on = web")].count("\n")),
                            ("main.herd", text[: text.index("= web")].count("\n"))])
    # references from the defining file find uses in importers
    refs = await client.text_document_references_async(
        lsp.ReferenceParams(
            text_document=lsp.TextDocumentIdentifier(COMMON.as_uri()),
            position=_pos(common, "base {", 1),
            context=lsp.ReferenceContext(include_declaration=False),
        )
    )
    assert [(Path(r.uri).name, r.range.start.line) for r in refs] == [("main.herd", 2)]


async def test_document_symbols_and_folding(client: LanguageClient):
    uri = COMMON.as_uri()
    symbols = await client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(lsp.TextDocumentIdentifier(uri))
    )
    assert [s.name for s in symbols] == ["tok", "base", "web"]
    assert [c.name for c in symbols[2].children] == ["source python_stdlib", "dedup exact", "dedup lines"]
    folds = await client.text_document_folding_range_async(lsp.FoldingRangeParams(lsp.TextDocumentIdentifier(uri)))
    assert len(folds) == 3


async def test_formatting_uses_herd_fmt(client: LanguageClient):
    text = MAIN.read_text().replace("layers = 2   dim", "layers=2 dim")
    await _change(client, MAIN.as_uri(), text, 20)
    edits = await client.text_document_formatting_async(
        lsp.DocumentFormattingParams(lsp.TextDocumentIdentifier(MAIN.as_uri()), lsp.FormattingOptions(2, True))
    )
    try:
        from herdlang.formatter import format_text
    except ImportError:
        assert not edits
        return
    (edit,) = edits
    assert edit.range.start == lsp.Position(0, 0)
    assert edit.new_text == format_text(text, str(MAIN))
    await _change(client, MAIN.as_uri(), MAIN.read_text(), 21)
