"""Rename in `herd lsp`: a block's name, from its definition or from any use of it, changes
everywhere the references feature finds it (across imports both ways), and nowhere else: not a
fixed word that happens to match (`pattern = llama3`), not a built-in eval of the same name
(`evals = [tasks]`), not a file with a block of its own by that name. Names the grammar cannot
read, and names some file seeing the block already uses, are refused with a message."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

COMMON = """\
# Shared blocks, imported by main.herd and big.herd.
tokenizer llama3 {
  kind     = tiktoken
  pattern  = llama3
  vocab    = 1_000
  train_on = stdlib
}

model tiny {
  tokenizer = llama3
  layers    = 2
  dim       = 64
  heads     = 4
  norm      = rmsnorm(eps = 1e-5)
  ffn       = swiglu(multiplier = 1.0, multiple_of = 32)
  attention = gqa(kv_heads = 2, document_mask = true)
  rope      = rope(theta = 10_000)
}

data stdlib {
  source python_stdlib { include = [docs, source] }
  dedup minhash
}
"""

MAIN = """\
import "common.herd"

mix blend { stdlib = 100% }

pretrain base {
  model   = tiny
  data    = blend
  tokens  = 1M tokens
  context = 256
  batch   = 8K tokens
  optimizer = adamw(lr = 3e-3)
  schedule  = cosine(warmup = 2 steps)
}

dataset tasks {
  format   = tasks
  generate = tasks(kinds = [add, sort], count = 100, seed = 0)
}

posttrain chat {
  from   = base
  reward_model rm { data = tasks  steps = 10 steps }
  rejection_sampling { k = 2  scorer = verifier  prompts = tasks  count = 8 }
  sft { data = tasks  steps = 10 steps }
  evals = [tasks]
}
"""

BIG = """\
import "common.herd"

model big extends tiny { layers = 4 }

pretrain big_base {
  model   = big
  data    = stdlib
  tokens  = 1M tokens
  context = 256
  batch   = 8K tokens
  optimizer = adamw(lr = 3e-3)
  schedule  = cosine(warmup = 2 steps)
}
"""

ALONE = """\
# Imports nothing: its `stdlib` is its own.
data stdlib { source python_stdlib }
"""

FILES = {"common.herd": COMMON, "main.herd": MAIN, "big.herd": BIG, "alone.herd": ALONE}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace of four specs: main.herd and big.herd import common.herd, alone.herd nothing."""
    root = tmp_path_factory.mktemp("rename").resolve()
    for name, text in FILES.items():
        (root / name).write_text(text)
    return root


@pytest_lsp.fixture(
    scope="module",
    config=ClientServerConfig(server_command=[sys.executable, "-m", "herdlang.cli", "lsp"]),
)
async def client(lsp_client: LanguageClient, folder: Path):
    result = await lsp_client.initialize_session(
        lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(
                text_document=lsp.TextDocumentClientCapabilities(
                    rename=lsp.RenameClientCapabilities(prepare_support=True)
                )
            ),
            workspace_folders=[lsp.WorkspaceFolder(uri=folder.as_uri(), name="rename")],
        )
    )
    # a client that can ask whether a position is renamable is told the server answers
    assert result.capabilities.rename_provider == lsp.RenameOptions(prepare_provider=True)
    for name in ("main.herd", "common.herd"):
        lsp_client.text_document_did_open(
            lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem((folder / name).as_uri(), "herd", 1, FILES[name]))
        )
        await lsp_client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    yield
    await lsp_client.shutdown_session()


def _pos(text: str, needle: str, delta: int = 0) -> lsp.Position:
    """The LSP position (0-based) of `needle` in `text`, plus `delta` characters."""
    i = text.index(needle) + delta
    return lsp.Position(text.count("\n", 0, i), i - (text.rfind("\n", 0, i) + 1))


def _at(text: str, needle: str, word: str) -> lsp.Range:
    """The range of `word` inside the first `needle` of `text`."""
    start = _pos(text, needle, needle.index(word))
    return lsp.Range(start, lsp.Position(start.line, start.character + len(word)))


def _edits(new: str, text: str, *places: tuple[str, str]) -> list[lsp.TextEdit]:
    """Edits writing `new` over each (needle, word), in the order of the text."""
    return _ordered([lsp.TextEdit(_at(text, needle, word), new) for needle, word in places])


def _ordered(edits: list[lsp.TextEdit] | tuple[lsp.TextEdit, ...]) -> list[lsp.TextEdit]:
    return sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character))


def _changes(edit: lsp.WorkspaceEdit | None) -> dict[str, list[lsp.TextEdit]]:
    """A rename's edits by file, each file's in text order (as the server sends them)."""
    assert edit is not None and edit.changes is not None and edit.document_changes is None
    return {uri: list(edits) for uri, edits in edit.changes.items()}


async def _prepare(client: LanguageClient, folder: Path, name: str, needle: str, delta: int = 1) -> object:
    uri = (folder / name).as_uri()
    return await client.text_document_prepare_rename_async(
        lsp.PrepareRenameParams(lsp.TextDocumentIdentifier(uri), _pos(FILES[name], needle, delta))
    )


async def _rename(client: LanguageClient, folder: Path, name: str, needle: str, new: str,
                  delta: int = 1) -> lsp.WorkspaceEdit | None:
    uri = (folder / name).as_uri()
    return await client.text_document_rename_async(
        lsp.RenameParams(lsp.TextDocumentIdentifier(uri), _pos(FILES[name], needle, delta), new)
    )


async def test_prepare_rename_on_a_definition_or_a_use_gives_the_name(client: LanguageClient, folder: Path):
    assert await _prepare(client, folder, "main.herd", "tasks {") == lsp.PrepareRenamePlaceholder(
        _at(MAIN, "tasks {", "tasks"), "tasks")
    assert await _prepare(client, folder, "main.herd", "prompts = tasks", 12) == lsp.PrepareRenamePlaceholder(
        _at(MAIN, "prompts = tasks", "tasks"), "tasks")
    # a block defined in an imported file, named where it is used
    assert await _prepare(client, folder, "main.herd", "stdlib = 100%") == lsp.PrepareRenamePlaceholder(
        _at(MAIN, "stdlib = 100%", "stdlib"), "stdlib")
    assert await _prepare(client, folder, "common.herd", "tokenizer = llama3", 14) == lsp.PrepareRenamePlaceholder(
        _at(COMMON, "tokenizer = llama3", "llama3"), "llama3")


@pytest.mark.parametrize(
    ("name", "needle", "delta", "why"),
    [
        ("main.herd", "dataset tasks", 1, "a block kind"),
        ("main.herd", "format   = tasks", 1, "a field name"),
        ("main.herd", "format   = tasks", 12, "a fixed word that matches a block name"),
        ("main.herd", "generate = tasks(", 12, "a call, not a reference"),
        ("main.herd", "evals = [tasks]", 10, "the built-in tasks eval, not the dataset"),
        ("main.herd", "count = 100", 9, "a number"),
        ("main.herd", '"common.herd"', 3, "an import's path"),
        ("main.herd", "scorer = verifier", 10, "a word the field knows, naming no block"),
        ("common.herd", "pattern  = llama3", 12, "the pre-tokenization pattern, not the tokenizer"),
        ("common.herd", "dedup minhash", 7, "a built-in component"),
        ("common.herd", "# Shared", 3, "a comment"),
    ],
)
async def test_prepare_rename_refuses_what_is_not_a_block_name(client: LanguageClient, folder: Path, name: str,
                                                               needle: str, delta: int, why: str):
    assert await _prepare(client, folder, name, needle, delta) is None, why


async def test_rename_a_dataset_changes_its_uses_and_leaves_same_spelt_words(client: LanguageClient, folder: Path):
    edit = await _rename(client, folder, "main.herd", "data = tasks", "chores", 8)
    # not `format = tasks`, `generate = tasks(...)` nor `evals = [tasks]` (the built-in eval)
    assert _changes(edit) == {
        (folder / "main.herd").as_uri(): _edits(
            "chores", MAIN, ("tasks {", "tasks"), ("data = tasks  steps = 10 steps }\n  rejection", "tasks"),
            ("prompts = tasks", "tasks"), ("sft { data = tasks", "tasks")),
    }


async def test_rename_a_tokenizer_leaves_its_namesake_pattern(client: LanguageClient, folder: Path):
    edit = await _rename(client, folder, "common.herd", "tokenizer llama3", "llama3_bpe", 11)
    assert _changes(edit) == {
        (folder / "common.herd").as_uri(): _edits(
            "llama3_bpe", COMMON, ("tokenizer llama3", "llama3"), ("tokenizer = llama3", "llama3")),
    }


async def test_rename_across_imports_reaches_every_file_that_sees_the_block(client: LanguageClient, folder: Path):
    """From a use in an importer: the definition in the imported file, its uses there and in
    every other importer change; alone.herd's own `stdlib` does not."""
    edit = await _rename(client, folder, "main.herd", "stdlib = 100%", "corpus")
    assert _changes(edit) == {
        (folder / "common.herd").as_uri(): _edits(
            "corpus", COMMON, ("train_on = stdlib", "stdlib"), ("data stdlib", "stdlib")),
        (folder / "main.herd").as_uri(): _edits("corpus", MAIN, ("stdlib = 100%", "stdlib")),
        (folder / "big.herd").as_uri(): _edits("corpus", BIG, ("data    = stdlib", "stdlib")),
    }
    # the same edit from the definition, in the imported file
    again = await _rename(client, folder, "common.herd", "data stdlib", "corpus", 6)
    assert _changes(again) == _changes(edit)


async def test_rename_a_model_from_extends(client: LanguageClient, folder: Path):
    big = (folder / "big.herd").as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(lsp.TextDocumentItem(big, "herd", 1, BIG)))
    edit = await client.text_document_rename_async(
        lsp.RenameParams(lsp.TextDocumentIdentifier(big), _pos(BIG, "extends tiny", 9), "small")
    )
    assert _changes(edit) == {
        (folder / "common.herd").as_uri(): _edits("small", COMMON, ("model tiny", "tiny")),
        (folder / "main.herd").as_uri(): _edits("small", MAIN, ("model   = tiny", "tiny")),
        big: _edits("small", BIG, ("extends tiny", "tiny")),
    }


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ("2fast", "'2fast' is not a valid name"),
        ("my-data", "'my-data' is not a valid name"),
        ("", "'' is not a valid name"),
        ("true", "'true' is a keyword"),
        ("extends", "'extends' is a keyword"),
        # the same file, and another file that imports the block's file (names are shared by all blocks)
        ("blend", "'blend' is already defined (mix at"),
        ("big", "'big' is already defined (model at"),
        ("llama3", "'llama3' is already defined (tokenizer at"),
    ],
)
async def test_rename_refuses_bad_or_taken_names(client: LanguageClient, folder: Path, new: str, message: str):
    with pytest.raises(JsonRpcException) as err:
        await _rename(client, folder, "main.herd", "model   = tiny", new, 11)
    assert err.value.code == lsp.LSPErrorCodes.RequestFailed
    assert message in err.value.message


async def test_rename_where_there_is_no_block_name_says_so(client: LanguageClient, folder: Path):
    with pytest.raises(JsonRpcException, match="nothing to rename here"):
        await _rename(client, folder, "main.herd", "evals = [tasks]", "chores", 10)

