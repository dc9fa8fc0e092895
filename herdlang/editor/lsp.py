"""`herd lsp`: the language server for `.herd` (pygls 2, stdio).

Diagnostics come from the same checker as `herd check` (plus the compiler's semantic
checks when it is importable), rerun when typing pauses (CHECK_DELAY_S); hover, completion, go-to-definition,
references, rename, outline, folding and formatting work on a lenient parse so they keep
working while the file is half-typed, and a did-you-mean diagnostic comes with a quick fix.
Run it with `herd lsp` or `python -m herdlang.editor.lsp`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import from_fs_path, to_fs_path

from herdlang import ast, components, parser
from herdlang.diagnostics import Diagnostic, Severity
from herdlang.editor import analysis as an
from herdlang.editor.documents import Document, encoding_name
from herdlang.editor.keywords import call_models, literal_values, model_in, words
from herdlang.schema import BLOCKS, SOURCES, DataBlock, MixBlock, field_names
from herdlang.types import CallModel
from herdlang.version import HERD_VERSION

log = logging.getLogger("herd.lsp")

#: how long typing must pause before a change is checked: a burst of keystrokes is checked
#: once, at its end, instead of once per keystroke (a check of a big spec takes a while)
CHECK_DELAY_S = 0.15


@dataclass
class _Unreadable:
    """A message whose params do not fit the method's LSP type (a position's line -1, ...)."""

    id: Any
    method: str
    params: Any
    reason: str
    code: int
    is_request: bool


class HerdProtocol(LanguageServerProtocol):
    """pygls's protocol, answering messages with invalid params instead of dropping them.

    pygls logs a message it cannot structure and drops it: a request then never gets a
    response (the client waits forever) and a bad didChange leaves the server's copy of the
    document silently out of sync. Here a request gets an InvalidParams (-32602) error and
    a notification is reported (see `HerdServer.unreadable_notification`)."""

    def structure_message(self, data: Any) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if not isinstance(data, dict) or not isinstance(data.get("method"), str):
                raise
            method = data["method"]
            return _Unreadable(data.get("id"), method, data.get("params"),
                               f"invalid params for {method}: {_why(exc.__cause__ or exc)}",
                               exc.code, "id" in data)

    # The server keeps the open documents itself (HerdServer.docs). pygls's copies would cost
    # a second copy per document, and its incremental update clamps a change's positions to
    # its splitlines() lines by assigning to the change's own Position objects: the handler
    # after it would get a change moved to another place. So pygls keeps none.

    @lsp_method(lsp.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: lsp.DidOpenTextDocumentParams) -> Any:
        if (handler := self.fm.features.get(lsp.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: lsp.DidChangeTextDocumentParams) -> Any:
        if (handler := self.fm.features.get(lsp.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: lsp.DidCloseTextDocumentParams) -> Any:
        if (handler := self.fm.features.get(lsp.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None

    def handle_message(self, message: Any) -> None:
        if not isinstance(message, _Unreadable):
            super().handle_message(message)
        elif self._shutdown:
            return
        elif message.is_request:
            msg_id = message.id if isinstance(message.id, (int, str)) else None
            error = JsonRpcException(message.reason, code=message.code)
            self._send_response(msg_id, error=error.to_response_error())
        else:
            server = self._server
            if isinstance(server, HerdServer):
                server.unreadable_notification(message)


def _why(exc: BaseException) -> str:
    """The innermost reasons of a cattrs structuring error, as one line."""
    leaves: list[str] = []

    def walk(e: BaseException) -> None:
        subs = getattr(e, "exceptions", None)
        if subs:
            for sub in subs:
                walk(sub)
        else:
            leaves.append(str(e) or type(e).__name__)

    walk(exc)
    return "; ".join(dict.fromkeys(leaves)) or str(exc)


class HerdServer(LanguageServer):
    """pygls server plus the herd workspace model and the open documents (LSP positions)."""

    def __init__(self) -> None:
        super().__init__("herd", HERD_VERSION, protocol_cls=HerdProtocol)
        self.herd = an.Workspace()
        #: open documents by URI, lines and characters as LSP counts them (documents.py);
        #: pygls's document model splits lines with str.splitlines() and keeps none here
        self.docs: dict[str, Document] = {}
        self.edit_count: dict[str, int] = {}  # changes received per URI, for the debounce

    @property
    def encoding(self) -> str:
        """The position encoding negotiated at initialize (UTF-16 unless the client asked)."""
        try:
            return encoding_name(self.workspace.position_encoding)
        except RuntimeError:  # not initialized
            return "utf-16"

    def unreadable_notification(self, message: _Unreadable) -> None:
        """Say that a notification was dropped; a dropped didChange leaves herd's copy of the
        document out of sync, which is published as a diagnostic until the editor sends the
        whole text again (reopening the file does)."""
        self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error, f"herd: ignored {message.reason}"))
        if message.method != lsp.TEXT_DOCUMENT_DID_CHANGE:
            return
        params = message.params if isinstance(message.params, dict) else {}
        ident = params.get("textDocument")
        uri = ident.get("uri") if isinstance(ident, dict) else None
        doc = self.docs.get(uri) if isinstance(uri, str) else None
        if doc is None:
            return
        doc.stale = message.reason
        self.edit_count[doc.uri] = self.edit_count.get(doc.uri, 0) + 1  # a pending check is moot
        self.window_show_message(lsp.ShowMessageParams(
            lsp.MessageType.Warning, f"herd lost track of {doc.uri}: close and reopen it"))
        _publish(self, doc.uri)


server = HerdServer()


# -- positions ---------------------------------------------------------------------------------


def _path(uri: str) -> Path | None:
    if not uri.startswith("file:"):
        return None
    try:
        fs = to_fs_path(uri)
        return Path(fs).resolve() if fs else None
    except (ValueError, OSError, RuntimeError):
        return None


def _uri(path: Path) -> str:
    return from_fs_path(str(path)) or path.as_uri()


def _doc_for(ls: HerdServer, path: Path) -> Document:
    """The open document, or a read-only one from disk (for position encoding)."""
    doc = next((d for d in ls.docs.values() if d.path == path), None)
    if doc is not None:
        return doc
    return Document(_uri(path), ls.herd.text_of(path) or "", encoding=ls.encoding, path=path)


def _range(doc: Document, span: ast.Span | None) -> lsp.Range:
    """herd spans are 1-based with an exclusive end column; LSP is 0-based (client units)."""
    return doc.range_of(span)


def _location(ls: HerdServer, path: Path, span: ast.Span | None) -> lsp.Location:
    doc = _doc_for(ls, path)
    return lsp.Location(doc.uri, _range(doc, span))


# -- diagnostics ----------------------------------------------------------------------------


def _to_lsp(ls: HerdServer, doc: Document, root: Path | None, d: Diagnostic,
            imports: list[ast.Import]) -> lsp.Diagnostic:
    severity = lsp.DiagnosticSeverity.Warning if d.severity is Severity.WARNING else lsp.DiagnosticSeverity.Error
    message = d.message + (f"\n{d.hint}" if d.hint else "")
    where = an.span_path(d.span.path) if d.span is not None and root is not None else root
    data = None
    if d.span is None or where == root or root is None:
        rng = _range(doc, d.span)
        related = None
        if d.suggestion is not None:  # the quick fix reads it back, without checking again
            data = {"word": d.suggestion.word, "replacement": d.suggestion.replacement}
    else:
        # an error in an imported file: show it on the import that brings that file in
        imp = _import_leading_to(ls, root, where, imports) if where else None
        rng = _range(doc, imp.span if imp else None)
        rel = an.display_path(where) if where else d.span.path
        message = f"in {rel}:{d.span.line}:{d.span.column}: {message}"
        related = [lsp.DiagnosticRelatedInformation(_location(ls, where, d.span), d.message)] if where else None
    return lsp.Diagnostic(
        range=rng, message=message, severity=severity, code=d.code, source="herd",
        related_information=related, data=data,
    )


def _import_leading_to(ls: HerdServer, root: Path, target: Path, imports: list[ast.Import]) -> ast.Import | None:
    top = an.spec_root(root)
    for imp in imports:
        first = an.import_target(root, imp.path, top) if top is not None else None
        if first is not None and target in {info.path for info in ls.herd.closure(first)}:
            return imp
    return imports[0] if imports else None


def _diagnostics(ls: HerdServer, doc: Document) -> list[lsp.Diagnostic]:
    """What `herd check` says about the document (plus the compiler's checks), for the editor."""
    if doc.stale is not None:
        return [lsp.Diagnostic(
            range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)), source="herd",
            severity=lsp.DiagnosticSeverity.Error,
            message=f"herd's copy of this document is out of sync with the editor ({doc.stale}): "
                    "close and reopen the file to check it again",
        )]
    if len(doc.text) > an.MAX_FILE_BYTES:
        return [lsp.Diagnostic(
            range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)), source="herd",
            severity=lsp.DiagnosticSeverity.Warning,
            message=f"not checked: herd checks documents up to {an.MAX_FILE_BYTES // 2**20} MiB",
        )]
    path = doc.path
    try:
        diags = an.check(ls.herd, path, doc.text, name=doc.uri)
    except Exception as exc:  # noqa: BLE001 - a checker bug must not leave stale diagnostics up
        log.exception("checking %s failed", doc.uri)
        return [lsp.Diagnostic(range=lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)), source="herd",
                               message=f"herd could not check this document: {type(exc).__name__}: {exc}")]
    if path is not None:
        info = ls.herd.info(path, doc.text)
    else:
        info = an.parse_lenient(doc.text, Path(doc.uri))
    imports = info.imports if info is not None else []
    return [_to_lsp(ls, doc, path, d, imports) for d in diags]


def _publish(ls: HerdServer, uri: str) -> None:
    doc = ls.docs.get(uri)
    if doc is None:
        return
    ls.text_document_publish_diagnostics(
        lsp.PublishDiagnosticsParams(uri=uri, diagnostics=_diagnostics(ls, doc), version=doc.version)
    )


def _refresh(ls: HerdServer, changed_uri: str) -> None:
    """Check the changed document, then open documents that import it."""
    _publish(ls, changed_uri)
    changed = _path(changed_uri)
    for uri in list(ls.docs):
        other = _path(uri)
        if uri == changed_uri or other is None or changed is None:
            continue
        if changed in {i.path for i in ls.herd.closure(other)[1:]}:
            _publish(ls, uri)


@server.feature(lsp.INITIALIZED)
def _initialized(ls: HerdServer, params: lsp.InitializedParams) -> None:
    roots = [f.uri for f in (ls.workspace.folders or {}).values()] or (
        [ls.workspace.root_uri] if ls.workspace.root_uri else []
    )
    ls.herd.roots = [p for p in (_path(u) for u in roots) if p is not None]


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def _did_open(ls: HerdServer, params: lsp.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    path = _path(item.uri)
    doc = Document(item.uri, item.text, item.version, ls.encoding, path)
    ls.docs[item.uri] = doc
    ls.edit_count[item.uri] = ls.edit_count.get(item.uri, 0) + 1
    if path is not None:
        ls.herd.overlays[path] = doc.text
    _refresh(ls, item.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
async def _did_change(ls: HerdServer, params: lsp.DidChangeTextDocumentParams) -> None:
    """Apply the change at once (requests see the new text), check it once typing pauses."""
    uri = params.text_document.uri
    doc = ls.docs.get(uri)
    if doc is None:
        ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Warning, f"herd: didChange for {uri}, which is not open"))
        return
    was_stale = doc.stale
    for change in params.content_changes:
        doc.apply(change)
    doc.version = params.text_document.version
    if doc.path is not None:
        ls.herd.overlays[doc.path] = doc.text
    ls.edit_count[uri] = mine = ls.edit_count.get(uri, 0) + 1
    if doc.stale is not None and was_stale is None:
        _publish(ls, uri)  # say so at once
        return
    await asyncio.sleep(CHECK_DELAY_S)
    if ls.edit_count.get(uri) == mine and uri in ls.docs:  # else a later change (or close) came
        _refresh(ls, uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def _did_save(ls: HerdServer, params: lsp.DidSaveTextDocumentParams) -> None:
    if params.text_document.uri in ls.docs:
        _refresh(ls, params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def _did_close(ls: HerdServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    doc = ls.docs.pop(uri, None)
    ls.edit_count.pop(uri, None)
    if doc is not None and doc.path is not None:
        ls.herd.overlays.pop(doc.path, None)
    ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


# -- shared lookups ---------------------------------------------------------------------------


def _document(ls: HerdServer, uri: str) -> Document | None:
    """The open document at `uri`; None for one never opened (requests on it answer null).
    Raises RequestFailed for a document whose copy is out of sync: an answer from the wrong
    text could be an edit that damages the file."""
    doc = ls.docs.get(uri)
    if doc is not None and doc.stale is not None:
        raise JsonRpcException(f"herd's copy of {uri} is out of sync with the editor ({doc.stale}): "
                               "close and reopen the file", code=lsp.LSPErrorCodes.RequestFailed)
    return doc


def _open(ls: HerdServer, uri: str, position: lsp.Position) -> tuple[Document, Path, an.FileInfo, int] | None:
    """(document, path, lenient parse, offset in herd's text) for a request at `position`."""
    doc = _document(ls, uri)
    if doc is None:
        return None
    path = doc.path
    info = ls.herd.info(path, doc.text) if path is not None else an.parse_lenient(doc.text, Path(uri))
    if info is None:
        return None
    return doc, path or Path(uri), info, doc.offset_at(position)


def _named(hit: an.Hit) -> str | None:
    """The block name a hit refers to, if it can be one."""
    return an.block_name(hit)


# -- go to definition / references ----------------------------------------------------------------


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def _definition(ls: HerdServer, params: lsp.DefinitionParams) -> list[lsp.Location] | None:
    found = _open(ls, params.text_document.uri, params.position)
    if found is None:
        return None
    doc, path, info, offset = found
    hit = an.hit_at(info, offset)
    if hit is None:
        return None
    if hit.what == "import":  # a file the checker would load: inside the spec's folder, readable
        root = an.spec_root(path)
        target = an.import_target(path, hit.text, root) if root is not None else None
        real = target.resolve() if target is not None else None
        if real is None or ls.herd.text_of(real) is None:
            return None
        return [lsp.Location(_doc_for(ls, real).uri, lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)))]
    name = _named(hit)
    if name is None:
        return None
    d = ls.herd.definitions(path).get(name)
    if d is None:
        return None
    return [_location(ls, d.path, d.span)]


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
def _references(ls: HerdServer, params: lsp.ReferenceParams) -> list[lsp.Location] | None:
    found = _open(ls, params.text_document.uri, params.position)
    if found is None:
        return None
    doc, path, info, offset = found
    hit = an.hit_at(info, offset)
    name = _named(hit) if hit else None
    if name is None:
        return None
    refs = ls.herd.references(path, name, params.context.include_declaration)
    return [_location(ls, p, s) for p, s in refs]


# -- rename -------------------------------------------------------------------------------------


@server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
def _prepare_rename(ls: HerdServer, params: lsp.PrepareRenameParams) -> lsp.PrepareRenamePlaceholder | None:
    """The name under the cursor, or None (the editor says it cannot rename there) on a
    keyword, a field, a value, a built-in component or an undefined name."""
    found = _open(ls, params.text_document.uri, params.position)
    if found is None:
        return None
    doc, path, info, offset = found
    found = ls.herd.rename_target(path, offset)
    if found is None:
        return None
    target, span = found
    return lsp.PrepareRenamePlaceholder(range=_range(doc, span), placeholder=target.name)


@server.feature(lsp.TEXT_DOCUMENT_RENAME)  # pygls adds prepareProvider when the client supports it
def _rename(ls: HerdServer, params: lsp.RenameParams) -> lsp.WorkspaceEdit | None:
    """Rename a block at its definition and every reference `textDocument/references` finds
    (across the files that import it or that it imports); a refusal is a RequestFailed error
    whose message the editor shows."""
    found = _open(ls, params.text_document.uri, params.position)
    if found is None:
        return None
    doc, path, info, offset = found
    try:
        spans = ls.herd.rename(path, offset, params.new_name)
    except an.RenameError as exc:
        raise JsonRpcException(str(exc), code=lsp.LSPErrorCodes.RequestFailed) from None
    changes: dict[str, list[lsp.TextEdit]] = {}
    for p, span in spans:
        where = _doc_for(ls, p)
        changes.setdefault(where.uri, []).append(lsp.TextEdit(range=_range(where, span), new_text=params.new_name))
    for edits in changes.values():
        edits.sort(key=lambda e: (e.range.start.line, e.range.start.character))
    return lsp.WorkspaceEdit(changes=changes)


# -- quick fixes ----------------------------------------------------------------------------------


@server.feature(
    lsp.TEXT_DOCUMENT_CODE_ACTION,
    lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]),
)
def _code_actions(ls: HerdServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction] | None:
    """A quick fix per did-you-mean diagnostic: replace the misspelt word with the suggestion."""
    if not _wants_quickfix(params.context.only):
        return None
    doc = _document(ls, params.text_document.uri)
    if doc is None:
        return None
    rechecked: list[lsp.Diagnostic] | None = None
    out: list[lsp.CodeAction] = []
    for diag in params.context.diagnostics:
        if diag.source != "herd":
            continue
        fix = _suggestion_in(diag.data)
        if fix is None and diag.data is None and not _keeps_data(ls) and "did you mean" in diag.message:
            # a client that does not send `data` back: check the document again, once
            if rechecked is None:
                rechecked = _current_diagnostics(ls, doc)
            same = next((d for d in rechecked if d.range == diag.range and d.code == diag.code), None)
            fix = _suggestion_in(same.data) if same is not None else None
        action = _replace_action(doc, diag, *fix) if fix is not None else None
        if action is not None:
            out.append(action)
    return out or None


def _wants_quickfix(only: list[Any] | None) -> bool:
    """Whether a request's `only` filter (absent: everything) admits the `quickfix` kind."""
    if not only:
        return True
    kind = lsp.CodeActionKind.QuickFix.value
    return any(kind == f or kind.startswith(f + ".") for f in (str(getattr(k, "value", k)) for k in only))


def _keeps_data(ls: HerdServer) -> bool:
    """Whether the client promises to send a diagnostic's `data` back in code action requests."""
    publish = getattr(ls.client_capabilities.text_document, "publish_diagnostics", None)
    return bool(getattr(publish, "data_support", False))


def _suggestion_in(data: Any) -> tuple[str, str] | None:
    """(word, replacement) from a diagnostic's `data`, as `_to_lsp` stores it."""
    if isinstance(data, dict) and isinstance(data.get("word"), str) and isinstance(data.get("replacement"), str):
        return data["word"], data["replacement"]
    return None


def _current_diagnostics(ls: HerdServer, doc: Document) -> list[lsp.Diagnostic]:
    return _diagnostics(ls, doc)


def _replace_action(doc: Document, diag: lsp.Diagnostic, word: str, replacement: str) -> lsp.CodeAction | None:
    """Replace `word` inside the diagnostic's range; None if the text there no longer has it."""
    start, end = doc.offset_at(diag.range.start), doc.offset_at(diag.range.end)
    at = an.locate_word(doc.text, start, end, word)
    if at is None:
        return None
    edit = lsp.TextEdit(range=_range(doc, an.span_between(doc.text, *at)), new_text=replacement)
    return lsp.CodeAction(
        title=f"Replace '{word}' with '{replacement}'",
        kind=lsp.CodeActionKind.QuickFix,
        diagnostics=[diag],
        is_preferred=True,
        edit=lsp.WorkspaceEdit(changes={doc.uri: [edit]}),
    )


# -- hover --------------------------------------------------------------------------------------


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def _hover(ls: HerdServer, params: lsp.HoverParams) -> lsp.Hover | None:
    found = _open(ls, params.text_document.uri, params.position)
    if found is None:
        return None
    doc, path, info, offset = found
    hit = an.hit_at(info, offset)
    if hit is None:
        return None
    text = _hover_text(ls, path, hit)
    if not text:
        return None
    return lsp.Hover(
        contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text),
        range=_range(doc, hit.span),
    )


def _hover_text(ls: HerdServer, path: Path, hit: an.Hit) -> str | None:
    kinds = an.chain_kinds(hit.chain)
    if hit.what == "kind":
        if len(hit.chain) == 1:
            model = BLOCKS.get(hit.text)
            return an.model_doc(model, f"{hit.text} block") if model else f"unknown block kind `{hit.text}`"
        if hit.text in an.STEP_KINDS:
            names = components.names(hit.text)
            return f"**{hit.text}** step\n\ncomponents: " + ", ".join(f"`{n}`" for n in names)
        parent = an.model_for_chain(kinds[:-1])
        return an.field_doc(parent, hit.text) if parent else None
    if hit.what == "label" and len(hit.chain) > 1 and hit.chain[-1].kind in an.STEP_KINDS:
        return an.component_doc(hit.chain[-1].kind, hit.text) or f"unknown {hit.chain[-1].kind} `{hit.text}`"
    if hit.what == "key":
        model = an.model_for_chain(kinds)
        return an.field_doc(model, hit.text) if model else None
    if hit.what == "call":
        model = call_models().get(hit.text)
        return an.model_doc(model, f"{hit.text}(...)") if model else None
    if hit.what == "kwarg":
        model = call_models().get(hit.call.name) if hit.call else None
        if model is None and hit.chain and hit.chain[-1].kind in an.STEP_KINDS:
            model = components.get(hit.chain[-1].kind, hit.chain[-1].name or "")
        return an.field_doc(model, hit.text) if model else None
    if hit.what == "import":
        target = an.resolve_import(path, hit.text)
        shown = hit.text.replace("\0", "\\0")  # a NUL would vanish from the rendered text
        return f"import `{target}`" if target is not None else f"import `{shown}`: no file can have this name"
    name = _named(hit)
    if name is None:
        return None
    d = ls.herd.definitions(path).get(name)
    if d is not None:
        return _definition_text(ls, path, d)
    doc = an.component_doc("eval", name)
    if doc:
        return doc
    if hit.what == "ref" and hit.key:
        model = an.model_for_chain(kinds)
        field = an.field_of(model, hit.key) if model else None
        if field is not None and literal_values(field.annotation):
            return an.field_doc(model, hit.key)  # type: ignore[arg-type]
    return None


def _definition_text(ls: HerdServer, path: Path, d: an.Definition) -> str:
    where = f"{an.display_path(d.path)}:{d.span.line}"
    lines = [f"**{d.kind} `{d.name}`**" + (f" extends `{d.block.parent}`" if d.block.parent else ""), f"defined at {where}"]
    spec, plan = _results(ls, path)
    if d.kind == "model":
        lines.append(_model_text(spec, plan, d.name))
    elif d.kind in SOURCES:
        lines.append(_stage_text(plan, d.name))
    elif d.kind == "eval":
        kind = next((e.value.name for e in d.block.assignments() if e.key == "kind" and isinstance(e.value, ast.Ref)), None)
        if kind:
            lines.append(an.component_doc("eval", kind) or "")
    model = BLOCKS.get(d.kind)
    if model is not None and model.doc:
        lines.append(f"_{model.doc}_")
    return "\n\n".join(x for x in lines if x)


def _results(ls: HerdServer, path: Path) -> tuple[Any, Any]:
    spec, plan = ls.herd.results.get(path, (None, None))
    if spec is None:
        text = ls.herd.text_of(path)
        if text is not None:
            an.check(ls.herd, path, text)
            spec, plan = ls.herd.results.get(path, (None, None))
    return spec, plan


def _human(n: Any) -> str:
    try:
        from compiler.estimates import humanize

        return humanize(float(n))
    except (ImportError, TypeError, ValueError):
        return str(n)


def _model_text(spec: Any, plan: Any, name: str) -> str:
    resolved = getattr(plan, "models", {}).get(name) if plan is not None else None
    if resolved is None and spec is not None:
        resolved = _resolve_model(spec, name)
    if not resolved:
        return "_(fix the spec's errors to see the resolved model)_"
    params = resolved.get("params")
    if isinstance(params, dict):
        params = params.get("total")
    head = f"**{int(params):,} parameters** ({_human(params)})" if isinstance(params, (int, float)) else ""
    rows = [
        f"| `{k}` | {_short(v)} |"
        for k, v in sorted(resolved.items())
        if k not in ("params", "name") and not isinstance(v, (dict, list))
    ]
    table = "| field | value |\n|---|---|\n" + "\n".join(rows) if rows else ""
    return "\n\n".join(x for x in (head, table) if x)


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _resolve_model(spec: Any, name: str) -> dict[str, Any] | None:
    """Fallback when the compiler is not importable: merge `extends` and count parameters."""
    chain, seen = [], set()
    cur = spec.find(name)
    while cur is not None and cur.kind == "model" and cur.name not in seen:
        seen.add(cur.name)
        chain.append(cur)
        cur = spec.find(cur.parent) if cur.parent else None
    if not chain:
        return None
    merged: dict[str, Any] = {}
    for d in reversed(chain):
        merged.update(d.config.model_dump(exclude_none=True, exclude_unset=True))
    try:
        from compiler.estimates import ffn_hidden_dim, param_counts

        tok = spec.find(merged.get("tokenizer", "")) if merged.get("tokenizer") else None
        vocab = merged.get("vocab") or (
            (tok.config.vocab or 0) + tok.config.special_tokens if tok is not None and tok.config.vocab else None
        )
        ffn = merged.get("ffn") or {}
        attention = merged.get("attention") or {}
        shape = {
            "vocab_size": vocab,
            "dim": merged["dim"],
            "layers": merged["layers"],
            "heads": merged["heads"],
            "kv_heads": attention.get("kv_heads") or merged["heads"],
            "head_dim": merged.get("head_dim"),
            "ffn_dim": ffn.get("hidden") or ffn_hidden_dim(merged["dim"], ffn.get("multiplier", 1.0), ffn.get("multiple_of", 256)),
            "tied_embeddings": bool(merged.get("tied")),
        }
        merged["params"] = param_counts(shape)["total"]
    except (ImportError, KeyError, TypeError, ValueError):
        pass
    return merged


def _stage_text(plan: Any, name: str) -> str:
    stage = getattr(plan, "stages", {}).get(name) if plan is not None else None
    if not isinstance(stage, dict) or not stage:
        return "_(estimates appear once the spec compiles)_"
    out = []
    if stage.get("model"):
        out.append(f"- model: `{stage['model']}`")
    if stage.get("kind") == "checkpoint":  # made elsewhere: nothing is trained here
        return "\n".join([*out, f"- loaded from `{stage.get('path')}`, context **{stage.get('context', 0):,}**"])
    sized_later = stage.get("kind") == "posttrain"  # its tokens follow from its datasets, read when it runs
    for key, label in (("tokens", "tokens"), ("steps", "steps"), ("context", "context")):
        if isinstance(stage.get(key), (int, float)) and not (sized_later and not stage[key]):
            shown = f"{stage[key]:,}" if key == "context" else _human(stage[key])  # a length is exact
            out.append(f"- {label}: **{shown}**")
    if sized_later:
        out.append("- tokens and steps follow from its datasets' size, known when it runs")
    total = stage.get("flops_total", stage.get("flops"))
    if isinstance(total, (int, float)) and not (sized_later and not total):
        out.append(f"- training FLOPs: **{total:.3g}**")
        if "flops_total" in stage and isinstance(stage.get("flops_attention"), (int, float)):
            out.append(f"  (dense {stage['flops']:.3g} + attention {stage['flops_attention']:.3g})")
    mem = stage.get("memory_per_gpu")
    if isinstance(mem, dict) and isinstance(mem.get("total"), (int, float)):
        out.append(f"- memory per GPU: {_human_bytes(mem['total'])}")
    wall = stage.get("wall_clock_seconds")
    if isinstance(wall, (int, float)):
        out.append(f"- wall clock: {_duration(wall)}")
    return "\n".join(out)


def _human_bytes(n: float) -> str:
    try:
        from compiler.estimates import humanize

        return humanize(float(n), "B")
    except (ImportError, ValueError):
        return f"{n} B"


def _duration(seconds: float) -> str:
    try:
        from compiler.estimates import humanize_duration

        return humanize_duration(float(seconds))
    except (ImportError, ValueError):
        return f"{seconds:.3g} s"


# -- completion ------------------------------------------------------------------------------------

_CK = lsp.CompletionItemKind


def _item(label: str, kind: lsp.CompletionItemKind, detail: str | None = None, insert: str | None = None,
          doc: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(
        label=label, kind=kind, detail=detail, insert_text=insert,
        documentation=lsp.MarkupContent(lsp.MarkupKind.Markdown, doc) if doc else None,
    )


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=[" ", "=", "(", "[", ",", '"']))
def _completion(ls: HerdServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    doc = _document(ls, params.text_document.uri)
    if doc is None:
        return lsp.CompletionList(is_incomplete=False, items=[])
    path = doc.path
    ctx = an.context_at(doc.text, doc.offset_at(params.position))
    items = _complete(ls, path, doc.text, ctx)
    return lsp.CompletionList(is_incomplete=False, items=items)


_HEAD_LINE = re.compile(r"(?m)^[ \t]*([A-Za-z_]\w*)[ \t]+([A-Za-z_]\w*)\b(?![ \t]*=)")


def _names_of(ls: HerdServer, path: Path | None, text: str, kinds: tuple[str, ...] | None) -> list[lsp.CompletionItem]:
    defs: dict[str, str] = {}
    if path is not None:
        defs = {n: d.kind for n, d in ls.herd.definitions(path).items()}
    # `[ \t]*`, not `\s*`: that one ran from every line start over all the blank lines after
    # it before failing, quadratic in their number (20,000 blank lines took 3.7 s)
    for m in _HEAD_LINE.finditer(text):
        if m.group(1) in BLOCKS:
            defs.setdefault(m.group(2), m.group(1))
    out = [
        _item(n, _CK.Reference, k) for n, k in sorted(defs.items()) if kinds is None or k in kinds
    ]
    if kinds is not None and "eval" in kinds:
        known = {i.label for i in out}
        out += [_item(n, _CK.Module, "eval component", doc=an.component_doc("eval", n))
                for n in components.names("eval") if n not in known]
    return out


def _complete(ls: HerdServer, path: Path | None, text: str, ctx: an.Context) -> list[lsp.CompletionItem]:
    if ctx.in_string:
        m = re.match(r'^\s*import\s+"([^"]*)$', ctx.prefix)
        if m and path is not None:
            base = path.parent
            return [_item(str(p.relative_to(base)), _CK.File) for p in sorted(base.rglob("*.herd"))[:200]
                    if p != path and p.is_file()]
        return []
    chain = ctx.chain
    prefix = ctx.prefix
    # inside a call or a step's arguments: keyword arguments, or a kwarg's value
    if ctx.call is not None:
        model = call_models().get(ctx.call)
        if model is None and chain and chain[0][0] == "data":
            step = re.match(r"^\s*([A-Za-z_]\w*)\s+([A-Za-z_]\w*)", prefix)
            if step:
                model = components.get(step.group(1), step.group(2))
        arg = re.split(r"[(,]", prefix)[-1]
        m = re.match(r"^\s*([A-Za-z_]\w*)\s*=\s*[\w.]*$", arg)
        if m and model is not None:
            return _values_for(ls, path, text, model, m.group(1), chain)
        if re.match(r"^\s*[A-Za-z_]*$", arg) and model is not None:
            return [_item(k, _CK.Property, an.describe_type(an.field_of(model, k)), f"{k} = ",  # type: ignore[arg-type]
                          an.field_doc(model, k))
                    for k in field_names(model) if k != "kind"]  # type: ignore[arg-type]
        return []
    # `key = partial`, `key >= partial`, `key = [a, par`, `key = a -> par`
    m = re.match(r"^\s*([A-Za-z_]\w*)\s*(?:=|>=|<=|==|!=|>|<)(.*)$", prefix, re.S)
    if m and _value_is_done(m.group(2), ctx):
        # entries may share a line (`ngram = 5  bands = 14`): the next one's key comes here,
        # or after a number its unit (`tokens = 2M tokens`)
        units = ([_item(u, _CK.Unit, "unit") for u in sorted(words().units)]
                 if re.search(r"\d[\w.]*\s+$", m.group(2)) else [])
        return units + _not_given(_keys_for(ls, path, text, chain), text, ctx)
    if m:
        if not re.search(r"[\w.]*$", m.group(2)) or re.search(r"\d[\w.]*$", m.group(2)):
            return []
        model = an.model_for_chain(chain)
        if model is None:
            return []
        return _values_for(ls, path, text, model, m.group(1), chain)
    m = re.match(r"^\s*([A-Za-z_]\w*)\s+([A-Za-z_]\w*)\s+extends\s+\w*$", prefix)
    if m:  # any model but the one being defined (a model cannot extend itself, H0303)
        return [i for i in _names_of(ls, path, text, ("model",)) if i.label != m.group(2)]
    m = re.match(r"^\s*([A-Za-z_]\w*)\s+\w*$", prefix)
    if m:
        if chain and m.group(1) in an.STEP_KINDS:
            return [_item(n, _CK.Module, f"{m.group(1)} component", doc=an.component_doc(m.group(1), n))
                    for n in components.names(m.group(1))]
        if not chain and m.group(1) == "model":
            return []
        return []
    if re.match(r"^\s*\w*$", prefix):
        return _not_given(_keys_for(ls, path, text, chain), text, ctx)
    return []


def _not_given(items: list[lsp.CompletionItem], text: str, ctx: an.Context) -> list[lsp.CompletionItem]:
    """Drop keys and sections the block already sets (setting one twice is H0205); block and
    step kinds (`dedup`, `filter`) may repeat and stay."""
    if ctx.block_start is None:
        return items
    given = an.given_keys(text, ctx.block_start)
    return [i for i in items if i.kind == _CK.Keyword or i.label not in given]


_GATE_KINDS = ("short_context_recovery", "needle")


def _value_is_done(value: str, ctx: an.Context) -> bool:
    """Whether `value` (after `key =`) is complete and followed by a space, so that the
    cursor starts a new entry; not inside a list or call, nor after `->` or `at`."""
    if ctx.in_list or ctx.call is not None or not value.strip() or value[-1] not in " \t":
        return False
    return not re.search(r"(->|\bat|[=,(\[])\s*$", value)


def _keys_for(ls: HerdServer, path: Path | None, text: str, chain: list[tuple[str, str | None]]) -> list[lsp.CompletionItem]:
    if not chain:
        items = [_item(k, _CK.Keyword, "block", f"{k} ", an.model_doc(m, f"{k} block")) for k, m in BLOCKS.items()]
        return [*items, _item("import", _CK.Keyword, "import a file", 'import "')]
    top = chain[0][0]
    if (len(chain) == 1 and top == "mix") or (len(chain) == 2 and chain[-1][0] == "mix"):
        items = _names_of(ls, path, text, ("data",))
        for it in items:
            it.insert_text = f"{it.label} = "
        if len(chain) == 1:
            items += [_item(k, _CK.Property, "mix option", f"{k} = ", an.field_doc(MixBlock, k)) for k in MixBlock.options]
        return items
    model = an.model_for_chain(chain)
    if model is None:
        if chain[-1][0] == "gate":  # what train.extend measures (H0404 for any other eval)
            items = [i for i in _names_of(ls, path, text, ("eval",))
                     if i.detail != "eval component" or i.label in _GATE_KINDS]
            for it in items:
                it.insert_text = f"{it.label} >= "
            return items
        return []
    items = []
    for key in field_names(model):  # type: ignore[arg-type]
        if key in ("steps", "weights", "name") or (key == "kind" and len(chain) > 1):
            continue
        info = an.field_of(model, key)
        sub = model_in(info.annotation) if info else None
        section = key in words().section_kinds and not (sub is not None and issubclass(sub, CallModel))
        insert = f"{key} {{ " if section else f"{key} = "
        items.append(_item(key, _CK.Module if section else _CK.Property,
                           an.describe_type(info) if info else None, insert, an.field_doc(model, key)))
    if model is DataBlock:
        items += [_item(k, _CK.Keyword, "data step", f"{k} ") for k in words().step_kinds]
    return items


def _values_for(ls: HerdServer, path: Path | None, text: str, model: type, key: str,
                chain: list[tuple[str, str | None]]) -> list[lsp.CompletionItem]:
    info = an.field_of(model, key)
    kinds = an.ref_kinds(chain, key)
    if key == "scorer":  # the verifier, or a reward model of the stage: `reward_model NAME { }`
        names = dict.fromkeys(["verifier", *re.findall(r"\breward_model\s+([A-Za-z_]\w*)\s*\{", text)])
        return [_item(n, _CK.Reference if n != "verifier" else _CK.EnumMember, "scorer") for n in names]
    if key == "gpu" and chain and chain[-1][0] == "hardware":
        from compiler.estimates import GPUS

        return [_item(n, _CK.EnumMember, "gpu") for n in GPUS]
    if key == "kind" and chain and chain[0][0] == "eval":
        return [_item(n, _CK.Module, "eval component", doc=an.component_doc("eval", n)) for n in components.names("eval")]
    if info is None:
        return _names_of(ls, path, text, kinds) if kinds else []
    choices = literal_values(info.annotation)
    if choices and key != "kind":
        return [_item(c, _CK.EnumMember, f"{key}") for c in choices]
    sub = model_in(info.annotation)
    if sub is not None and issubclass(sub, CallModel):
        return [_item(n, _CK.Function, f"{key}", f"{n}(", an.model_doc(m, f"{n}(...)"))
                for n, m in call_models().items() if m is sub]
    ann = str(info.annotation)
    if "bool" in ann:
        return [_item("true", _CK.Value), _item("false", _CK.Value)]
    if kinds is not None or "_name" in _validators(info):
        return _names_of(ls, path, text, kinds)
    return []


def _validators(info: Any) -> set[str]:
    out = set()
    for meta in an._metadata(info.annotation) + list(info.metadata):
        func = getattr(meta, "func", None)
        if func is not None:
            out.add(getattr(func, "__name__", ""))
    return out


# -- outline, folding, formatting ----------------------------------------------------------------

_SYMBOL_KINDS = {
    "tokenizer": lsp.SymbolKind.Interface,
    "model": lsp.SymbolKind.Class,
    "data": lsp.SymbolKind.Module,
    "mix": lsp.SymbolKind.Namespace,
    "dataset": lsp.SymbolKind.Module,
    "eval": lsp.SymbolKind.Event,
    "run": lsp.SymbolKind.Object,
}


def _symbol(doc: Document, block: ast.Block, nested: bool) -> lsp.DocumentSymbol:
    if nested:
        name = f"{block.kind} {block.name}" if block.name else block.kind
        kind = lsp.SymbolKind.Field
    else:
        name = block.name or block.kind
        kind = _SYMBOL_KINDS.get(block.kind, lsp.SymbolKind.Function)
    children = [_symbol(doc, b, True) for b in block.blocks()]
    return lsp.DocumentSymbol(
        name=name, detail=block.kind if not nested else None, kind=kind,
        range=_range(doc, block.span), selection_range=_range(doc, block.name_span or block.kind_span),
        children=children or None,
    )


def _info(ls: HerdServer, uri: str) -> an.FileInfo | None:
    """The lenient parse of an open document (None if it is not open)."""
    doc = _document(ls, uri)
    if doc is None:
        return None
    if doc.path is not None:
        return ls.herd.info(doc.path, doc.text)
    return an.parse_lenient(doc.text, Path(uri))


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def _symbols(ls: HerdServer, params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
    info = _info(ls, params.text_document.uri)
    if info is None:
        return []
    doc = ls.docs[params.text_document.uri]
    return [_symbol(doc, b, False) for b in info.blocks]


@server.feature(lsp.TEXT_DOCUMENT_FOLDING_RANGE)
def _folding(ls: HerdServer, params: lsp.FoldingRangeParams) -> list[lsp.FoldingRange]:
    info = _info(ls, params.text_document.uri)
    if info is None:
        return []
    out: list[lsp.FoldingRange] = []

    def walk(block: ast.Block) -> None:
        if block.span.end_line > block.span.line:
            out.append(lsp.FoldingRange(start_line=block.span.line - 1, end_line=block.span.end_line - 1))
        for b in block.blocks():
            walk(b)

    for b in info.blocks:
        walk(b)
    return out


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def _formatting(ls: HerdServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit]:
    """One edit replacing the whole document with what `herd fmt -w` would write: the
    formatter's output for the text as `herd check` reads it, in the text's line endings
    (CRLF or CR kept) and with its BOM if it has one."""
    doc = _document(ls, params.text_document.uri)
    if doc is None:
        return []
    try:
        from herdlang.formatter import format_text
    except ImportError:
        return []
    try:
        new = format_text(doc.text, str(doc.path or doc.uri))
    except Exception:  # noqa: BLE001 - a spec that does not parse is left alone
        return []
    if not isinstance(new, str) or new == doc.text:  # `herd fmt -w` leaves such a file alone
        return []
    new = parser.as_written(new, doc.raw)
    return [lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), doc.end()), new_text=new)]


def main(argv: list[str] | None = None) -> int:
    """Serve LSP over stdio (what `herd lsp` runs)."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print("usage: herd lsp  (speaks the Language Server Protocol on stdin/stdout)")
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    server.start_io()
    return 0


if __name__ == "__main__":
    sys.exit(main())
