"""Quick fixes in `herd lsp`: a diagnostic whose hint is a did-you-mean carries the suggestion
in its `data`, and `textDocument/codeAction` turns it into an edit that replaces the misspelt
word, and only that word, with the suggestion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

SPEC = """\
tokenizer tok {
  kind     = tiktoken
  pattern  = llama3
  vocab    = 1_000
  train_on = web
}

model small {
  tokenizer = tok
  layers    = 2
  dim       = 64
  heads     = 4
}

data web {
  source python_stdlib
  dedup exact
}

eval needle_small { kind = needle  trials = 2 }

pretrain warm {
  model     = small
  data      = web
  tokens    = 2M tokens
  context   = 512
  batch     = 16K tokens
  optimizer = adamw(lr = 3e-4)
  schedule  = cosine(warmup = 20 steps)
}

extend long {
  from    = warm
  context = 512 -> 1K
  tokens  = 1M tokens
  gate { needle_small >= 0.5 }
}
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fixes").resolve() / "spec.herd"
    path.write_text(SPEC)
    return path


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "herdlang.cli", "lsp"]),
)
async def client(lsp_client: LanguageClient, spec: Path):
    result = await lsp_client.initialize_session(
        lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(),
            workspace_folders=[lsp.WorkspaceFolder(uri=spec.parent.as_uri(), name="fixes")],
        )
    )
    provider = result.capabilities.code_action_provider
    assert isinstance(provider, lsp.CodeActionOptions)
    assert list(provider.code_action_kinds or []) == [lsp.CodeActionKind.QuickFix]
    lsp_client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(spec.as_uri(), "herd", 1, SPEC))
    )
    await lsp_client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    yield
    await lsp_client.shutdown_session()


_version = iter(range(2, 1000))


async def _type(client: LanguageClient, spec: Path, text: str) -> list[lsp.Diagnostic]:
    """Replace the document's text; the diagnostics the server publishes for it."""
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=spec.as_uri(), version=next(_version)),
            [lsp.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )
    params = await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return list(params.diagnostics)


async def _fixes(client: LanguageClient, spec: Path, diags: list[lsp.Diagnostic],
                 only: list[lsp.CodeActionKind] | None = None) -> list[lsp.CodeAction] | None:
    whole = lsp.Range(lsp.Position(0, 0), lsp.Position(len(SPEC.splitlines()) + 1, 0))
    result = await client.text_document_code_action_async(
        lsp.CodeActionParams(lsp.TextDocumentIdentifier(spec.as_uri()), whole,
                             lsp.CodeActionContext(diagnostics=diags, only=only))
    )
    return [a for a in result if isinstance(a, lsp.CodeAction)] if result is not None else None


def _at(text: str, needle: str, word: str) -> lsp.Range:
    """The range of `word` inside the first `needle` of `text`."""
    i = text.index(needle) + needle.index(word)
    start = lsp.Position(text.count("\n", 0, i), i - (text.rfind("\n", 0, i) + 1))
    return lsp.Range(start, lsp.Position(start.line, start.character + len(word)))


def _replace(spec: Path, text: str, needle: str, word: str, new: str, diag: lsp.Diagnostic) -> lsp.CodeAction:
    """The quick fix expected for `diag`: `word` (in `needle`) becomes `new`, in this file only."""
    return lsp.CodeAction(
        title=f"Replace '{word}' with '{new}'",
        kind=lsp.CodeActionKind.QuickFix,
        diagnostics=[diag],
        is_preferred=True,
        edit=lsp.WorkspaceEdit(changes={spec.as_uri(): [lsp.TextEdit(_at(text, needle, word), new)]}),
    )


def _same(actions: list[lsp.CodeAction] | None) -> list[lsp.CodeAction]:
    """Actions with their edit lists as lists (the client reads JSON arrays back as tuples)."""
    out = []
    for a in actions or []:
        changes = {u: list(e) for u, e in (a.edit.changes or {}).items()} if a.edit else None
        out.append(lsp.CodeAction(a.title, kind=a.kind, diagnostics=list(a.diagnostics or []),
                                  is_preferred=a.is_preferred, edit=lsp.WorkspaceEdit(changes=changes)))
    return out


async def test_an_unknown_field_carries_its_suggestion_and_gets_a_quick_fix(client: LanguageClient, spec: Path):
    text = SPEC.replace("layers    = 2", "laers     = 2")
    [diag] = await _type(client, spec, text)
    assert diag.code == "H0201" and diag.data == {"word": "laers", "replacement": "layers"}
    assert _same(await _fixes(client, spec, [diag])) == [_replace(spec, text, "laers", "laers", "layers", diag)]
    await _type(client, spec, SPEC)


async def test_quick_fixes_for_references_components_and_evals(client: LanguageClient, spec: Path):
    """One code action per fixable diagnostic: an undefined reference, an unknown eval
    component, a block kind and a gate's unknown eval."""
    text = (SPEC.replace("data      = web", "data      = webb")
            .replace("kind = needle", "kind = neddle")
            .replace("model small {", "modle small {"))
    diags = await _type(client, spec, text)
    by_word = {d.data["word"]: d for d in diags if d.data}
    assert set(by_word) == {"modle", "neddle"}  # a block kind that fails stops the compiler's checks
    assert _same(await _fixes(client, spec, diags)) == [
        _replace(spec, text, "modle small", "modle", "model", by_word["modle"]),
        _replace(spec, text, "kind = neddle", "neddle", "needle", by_word["neddle"]),
    ]
    text = SPEC.replace("data      = web", "data      = webb").replace("needle_small >= 0.5", "needle_smal >= 0.5")
    diags = await _type(client, spec, text)
    assert sorted(d.code for d in diags) == ["H0301", "H0404"]
    fixes = _same(await _fixes(client, spec, diags))
    assert sorted(fixes, key=lambda a: a.title) == sorted([
        _replace(spec, text, "= webb", "webb", "web", next(d for d in diags if d.code == "H0301")),
        _replace(spec, text, "needle_smal >=", "needle_smal", "needle_small", next(d for d in diags if d.code == "H0404")),
    ], key=lambda a: a.title)
    await _type(client, spec, SPEC)


async def test_a_client_that_drops_data_still_gets_the_fix(client: LanguageClient, spec: Path):
    """Without `data` (a client without diagnostic data support) the server checks the text again."""
    text = SPEC.replace("layers    = 2", "laers     = 2")
    [diag] = await _type(client, spec, text)
    bare = lsp.Diagnostic(diag.range, diag.message, diag.severity, diag.code, source=diag.source)
    assert _same(await _fixes(client, spec, [bare])) == [_replace(spec, text, "laers", "laers", "layers", bare)]
    await _type(client, spec, SPEC)


async def test_no_quick_fix_without_a_suggestion_or_once_the_word_is_gone(client: LanguageClient, spec: Path):
    # a missing field: the hint says what to add, there is nothing to replace
    text = SPEC.replace("  tokens    = 2M tokens\n", "")
    diags = await _type(client, spec, text)
    assert diags and all(d.data is None for d in diags)
    assert await _fixes(client, spec, diags) is None
    # a did-you-mean whose word was edited since it was published: no fix on the wrong text
    text = SPEC.replace("layers    = 2", "laers     = 2")
    [diag] = await _type(client, spec, text)
    await _type(client, spec, text.replace("laers     = 2", "laxers    = 2"))
    assert await _fixes(client, spec, [diag]) is None
    # a client asking only for refactorings
    await _type(client, spec, text)
    assert await _fixes(client, spec, [diag], only=[lsp.CodeActionKind.Refactor]) is None
    assert len(await _fixes(client, spec, [diag], only=[lsp.CodeActionKind.QuickFix]) or []) == 1
    await _type(client, spec, SPEC)
