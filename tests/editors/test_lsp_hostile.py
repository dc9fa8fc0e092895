"""`herd lsp` against hostile or unusual input, over raw stdio (so that a test can send what
a typed client refuses to build: a line of -1, a lone surrogate). Every test ends by checking
that the server still answers a normal hover, and every wait has a timeout, so a server that
hangs (on a FIFO, on /dev/zero) fails the test instead of stalling it.

Positions: LSP counts lines at `\\n`, `\\r\\n` and `\\r` only and characters in UTF-16 units;
`_lsp_offset` below implements that independently of the server, to apply its edits."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from herdlang import spec as spec_mod
from herdlang.diagnostics import HerdError
from herdlang.editor.analysis import MAX_FILE_BYTES, herd_text
from herdlang.schema import BLOCKS

TIMEOUT = 30.0

CLEAN = """\
tokenizer tok {
  kind     = tiktoken
  pattern  = llama3
  vocab    = 1_000
  train_on = web
}

model base {
  tokenizer = tok
  layers    = 2
  dim       = 64
  heads     = 4
}

model child extends base { layers = 4 }

data web {
  source python_stdlib
  dedup exact
}
"""


class RawClient:
    """A minimal LSP client over the server's stdio: requests wait for their response,
    notifications from the server are kept in order."""

    def __init__(self, root: Path, capabilities: dict[str, Any] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "herdlang.cli", "lsp"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notes: list[dict[str, Any]] = []
        self.responses: dict[Any, dict[str, Any]] = {}
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.initialized = self.request("initialize", {
            "processId": None, "rootUri": root.as_uri(), "capabilities": capabilities or {},
            "workspaceFolders": [{"uri": root.as_uri(), "name": "hostile"}]})
        self.notify("initialized", {})

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert length is not None
            self.inbox.put(json.loads(out.read(length)))

    def _pump(self, until: float) -> bool:
        try:
            msg = self.inbox.get(timeout=max(until - time.monotonic(), 0.001))
        except queue.Empty:
            return False
        if "method" in msg:
            self.notes.append(msg)
        else:
            self.responses[msg.get("id")] = msg
        return True

    def send(self, *messages: dict[str, Any]) -> None:
        data = b""
        for m in messages:
            body = json.dumps({"jsonrpc": "2.0", **m}).encode()
            data += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The whole response: `result`, or `error` with its code and message."""
        self._next += 1
        msg_id = self._next
        self.send({"id": msg_id, "method": method, "params": params})
        until = time.monotonic() + timeout
        while msg_id not in self.responses:
            if not self._pump(until) and time.monotonic() >= until:
                raise AssertionError(f"no response to {method} within {timeout} s")
        return self.responses.pop(msg_id)

    def wait_note(self, method: str, test: Any = lambda params: True, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The params of the first notification not yet waited for that passes `test`."""
        until = time.monotonic() + timeout
        seen = 0
        while True:
            for i, note in enumerate(self.notes[seen:], seen):
                if note["method"] == method and test(note["params"]):
                    del self.notes[i]
                    return note["params"]
            seen = len(self.notes)
            if not self._pump(until) and time.monotonic() >= until:
                raise AssertionError(f"no {method} within {timeout} s")

    def diagnostics(self, uri: str, version: int | None = None) -> list[dict[str, Any]]:
        params = self.wait_note("textDocument/publishDiagnostics",
                                lambda p: p["uri"] == uri and (version is None or p.get("version") == version))
        return params["diagnostics"]

    def open(self, uri: str, text: str, version: int = 1) -> list[dict[str, Any]]:
        self.notify("textDocument/didOpen",
                    {"textDocument": {"uri": uri, "languageId": "herd", "version": version, "text": text}})
        return self.diagnostics(uri, version)

    def close(self, uri: str) -> None:
        self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        self.diagnostics(uri)

    def change(self, uri: str, version: int, *changes: dict[str, Any]) -> None:
        self.notify("textDocument/didChange",
                    {"textDocument": {"uri": uri, "version": version}, "contentChanges": list(changes)})

    def stop(self) -> None:
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _pos(line: int, character: int) -> dict[str, int]:
    return {"line": line, "character": character}


def _range(a: tuple[int, int], b: tuple[int, int]) -> dict[str, Any]:
    return {"start": _pos(*a), "end": _pos(*b)}


def _lsp_offset(text: str, pos: dict[str, int]) -> int:
    """Offset of an LSP position in `text`: lines at \\n, \\r\\n, \\r; UTF-16 units; clamped."""
    starts = [0, *(m.end() for m in re.finditer(r"\r\n|\r|\n", text))]
    if pos["line"] >= len(starts):
        return len(text)
    start = starts[pos["line"]]
    m = re.compile(r"\r\n|\r|\n").search(text, start)
    line = text[start:m.start() if m else len(text)]
    units = i = 0
    while i < len(line) and units < pos["character"]:
        units += 2 if ord(line[i]) > 0xFFFF else 1
        i += 1
    return start + i


def _apply(text: str, edits: list[dict[str, Any]]) -> str:
    for e in sorted(edits, key=lambda e: _lsp_offset(text, e["range"]["start"]), reverse=True):
        text = text[:_lsp_offset(text, e["range"]["start"])] + e["newText"] + text[_lsp_offset(text, e["range"]["end"]):]
    return text


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a clean spec and, beside it, what must never be read: a file that
    imports /dev/zero, FIFOs named *.herd, a file over the size limit."""
    root = tmp_path_factory.mktemp("hostile").resolve()
    (root / "clean.herd").write_text(CLEAN)
    (root / "zero.herd").write_text('import "/dev/zero"\n')
    (root / "big.herd").write_text("#" * (MAX_FILE_BYTES + 10) + "\n")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "stuck.herd")
        os.mkfifo(root / "pipe.herd")
    return root


@pytest.fixture(scope="module")
def client(root: Path):
    c = RawClient(root)
    c.open((root / "clean.herd").as_uri(), CLEAN)
    yield c
    c.stop()


def _still_answers(client: RawClient, root: Path) -> None:
    """A normal hover on the clean spec: the server is alive and not stuck."""
    text = CLEAN
    i = text.index("extends base") + len("extends ")
    line = text.count("\n", 0, i)
    hover = client.request("textDocument/hover", {"textDocument": {"uri": (root / "clean.herd").as_uri()},
                                                  "position": _pos(line, i - text.rfind("\n", 0, i) - 1)})
    assert "error" not in hover, hover
    assert "model `base`" in hover["result"]["contents"]["value"]


def _hover_names_model_a(client: RawClient, uri: str, line: int, char: int = 6) -> dict:
    """Hover on `a` in `model a { ... }` still answers (with the hover's result)."""
    hover = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": _pos(line, char)})
    assert "model `a`" in hover["result"]["contents"]["value"]
    return hover["result"]


# -- 1. lines and characters as LSP counts them ------------------------------------------------

_ODD = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
_FORMAT_CASES = [
    *(f"# note{c}x\nmodel a {{   layers = 2 }}{end}" for c in _ODD for end in ("", "\n")),
    *(f"model a {{   layers = 2 }}{brk}model b {{   layers = 3 }}{end}"
      for brk in ("\r", "\r\n") for end in ("", "\r\n" if brk == "\r\n" else "\r")),
    "# 😀 😀\r\nmodel a {   layers = 2 }",
    "\ufeffmodel a {   layers = 2 }\n",
]


def test_formatting_replaces_exactly_the_whole_document(client: RawClient, root: Path):
    """Applied as LSP says, the edit gives what `herd fmt -w` would write (CRLF, CR and a BOM kept)."""
    from herdlang.formatter import format_text

    for n, raw in enumerate(_FORMAT_CASES):
        uri = (root / f"fmt{n}.herd").as_uri()
        client.open(uri, raw)
        reply = client.request("textDocument/formatting",
                               {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}})
        expected = format_text(herd_text(raw), "x.herd")
        if "\r\n" in raw:
            expected = expected.replace("\n", "\r\n")
        elif "\r" in raw:  # CR-only endings and a BOM stay, as `herd fmt --write` keeps them
            expected = expected.replace("\n", "\r")
        if raw.startswith("\ufeff"):
            expected = "\ufeff" + expected
        (edit,) = reply["result"]
        assert edit["range"]["start"] == _pos(0, 0), repr(raw)
        assert _apply(raw, reply["result"]) == expected, repr(raw)
        assert _lsp_offset(raw, edit["range"]["end"]) == len(raw), repr(raw)
        client.close(uri)
    _still_answers(client, root)


def test_the_audited_documents_format_whole(client: RawClient, root: Path):
    cases = {
        "# a\u2028b\nmodel a {   layers = 2 }": _range((0, 0), (1, 24)),
        "# note\x0c\nmodel a {   layers = 2 }": _range((0, 0), (1, 24)),
        "model a {   layers = 2 }\rmodel b {   layers = 3 }": _range((0, 0), (1, 24)),
    }
    for n, (raw, whole) in enumerate(cases.items()):
        uri = (root / f"audit{n}.herd").as_uri()
        client.open(uri, raw)
        reply = client.request("textDocument/formatting",
                               {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}})
        assert [e["range"] for e in reply["result"]] == [whole]
        client.close(uri)
    _still_answers(client, root)


_CHECK_CASES = [
    "# a\u2028b\nmodel a { laers = 3 }\n",
    "# 😀 a\x85b\x0c\nmodel a { laers = 3 }  # \u2029\n",
    "model z { layers = 2 }\rmodel a {\r  laers = 3 }\r",
    "model z { layers = 2 }\r\nmodel a {\r\n  laers = 3 }\r\n",
    "model z { layers = 2 }\n\rmodel a { laers = 3 }",
]


def test_diagnostics_are_where_herd_check_puts_them(client: RawClient, root: Path):
    """The same file on disk and in the editor: the range is herd check's line and column."""
    for n, raw in enumerate(_CHECK_CASES):
        path = root / f"agree{n}.herd"
        path.write_bytes(raw.encode())
        with pytest.raises(HerdError) as herd_check:
            spec_mod.load_spec(path)
        (d,) = herd_check.value.diagnostics
        lines = herd_text(raw).split("\n")
        start = (d.span.line - 1, len(lines[d.span.line - 1][: d.span.column - 1].encode("utf-16-le")) // 2)
        end = (d.span.end_line - 1, len(lines[d.span.end_line - 1][: d.span.end_column - 1].encode("utf-16-le")) // 2)
        (got,) = client.open(path.as_uri(), raw)
        assert got["code"] == d.code == "H0201", repr(raw)
        assert got["range"] == _range(start, end), repr(raw)
        assert raw[_lsp_offset(raw, got["range"]["start"]):_lsp_offset(raw, got["range"]["end"])] == "laers"
        client.close(path.as_uri())
    _still_answers(client, root)


def test_the_audited_diagnostic_hover_and_quick_fix_are_in_place(client: RawClient, root: Path):
    uri = (root / "sep.herd").as_uri()
    raw = "# a\u2028b\nmodel a { laers = 3 }\n"
    (d,) = client.open(uri, raw)
    assert d["code"] == "H0201" and d["range"] == _range((1, 10), (1, 15))
    assert _hover_names_model_a(client, uri, 1)["range"] == _range((1, 6), (1, 7))
    actions = client.request("textDocument/codeAction", {
        "textDocument": {"uri": uri}, "range": d["range"], "context": {"diagnostics": [d]}})
    (action,) = actions["result"]
    (edit,) = action["edit"]["changes"][uri]
    assert edit == {"range": _range((1, 10), (1, 15)), "newText": "layers"}
    # an incremental change lands where the editor made it (pygls's copy put it elsewhere)
    client.change(uri, 2, {"range": _range((1, 10), (1, 15)), "text": "layers"})
    assert client.diagnostics(uri, 2) == []
    symbols = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    assert symbols["result"][0]["range"] == _range((1, 0), (1, 22))
    client.close(uri)
    _still_answers(client, root)


@pytest.mark.parametrize(("offered", "import_end", "laers"), [
    (["utf-8"], 18, (29, 34)), (["utf-32", "utf-16"], 15, (26, 31)), (None, 16, (27, 32)),
])
def test_characters_count_in_the_encoding_the_client_chose(root: Path, offered: list[str] | None,
                                                           import_end: int, laers: tuple[int, int]):
    """pygls takes the first of the client's `positionEncodings` it knows (UTF-16 without one)."""
    caps = {"general": {"positionEncodings": offered}} if offered else {}
    client = RawClient(root, caps)
    try:
        assert client.initialized["result"]["capabilities"]["positionEncoding"] == (offered or ["utf-16"])[0]
        uri = (root / "encoding.herd").as_uri()
        diags = client.open(uri, 'import "😀.herd" model a { laers = 3 }\n')
        assert sorted((d["code"], d["range"]["start"]["character"], d["range"]["end"]["character"]) for d in diags) \
            == [("H0104", 0, import_end), ("H0201", *laers)]
        hover = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": _pos(0, laers[0] - 4)})
        assert hover["result"]["range"] == _range((0, laers[0] - 4), (0, laers[0] - 3))  # the name `a`
    finally:
        client.stop()


# -- 2. files the server must not read ---------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_an_import_of_dev_zero_is_refused_and_never_read(client: RawClient, root: Path):
    uri = (root / "zero_user.herd").as_uri()
    text = 'import "/dev/zero"\n' + CLEAN.replace("model child", "model kid")
    diags = client.open(uri, text)
    assert [d["code"] for d in diags] == ["H0105"] and diags[0]["range"] == _range((0, 0), (0, 18))
    i = text.index("extends base") + len("extends ")
    hover = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                  "position": _pos(text.count("\n", 0, i), i - text.rfind("\n", 0, i) - 1)})
    assert "model `base`" in hover["result"]["contents"]["value"]
    client.close(uri)
    _still_answers(client, root)


def test_references_and_rename_skip_what_must_not_be_read(client: RawClient, root: Path):
    """Beside clean.herd: zero.herd imports /dev/zero, stuck.herd and pipe.herd are FIFOs,
    big.herd is over the limit. None of them is read, and none stops the answer."""
    uri = (root / "clean.herd").as_uri()
    at = _pos(7, 7)  # `model base`
    refs = client.request("textDocument/references",
                          {"textDocument": {"uri": uri}, "position": at, "context": {"includeDeclaration": True}})
    assert refs["result"] == [{"uri": uri, "range": _range((7, 6), (7, 10))},
                              {"uri": uri, "range": _range((14, 20), (14, 24))}]
    renamed = client.request("textDocument/rename", {"textDocument": {"uri": uri}, "position": at, "newName": "core"})
    assert renamed["result"]["changes"] == {uri: [{"range": _range((7, 6), (7, 10)), "newText": "core"},
                                                  {"range": _range((14, 20), (14, 24)), "newText": "core"}]}
    _still_answers(client, root)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_an_import_of_a_fifo_is_reported_not_opened(client: RawClient, root: Path):
    uri = (root / "pipe_user.herd").as_uri()
    diags = client.open(uri, 'import "pipe.herd"\nmodel a { layers = 2 }\n')
    assert [d["code"] for d in diags] == ["H0104"]
    assert diags[0]["range"] == _range((0, 0), (0, 18)) and "pipe.herd" in diags[0]["message"]
    _hover_names_model_a(client, uri, 1)
    client.close(uri)
    _still_answers(client, root)


def test_an_import_of_an_oversized_file_is_reported_not_read(client: RawClient, root: Path):
    uri = (root / "big_user.herd").as_uri()
    diags = client.open(uri, 'import "big.herd"\nmodel a { layers = 2 }\n')
    assert [d["code"] for d in diags] == ["H0104"]
    assert diags[0]["range"] == _range((0, 0), (0, 17)) and "big.herd" in diags[0]["message"]
    client.close(uri)
    _still_answers(client, root)


# -- 3. a burst of changes is checked once ------------------------------------------------------


def test_a_burst_of_changes_is_checked_once(client: RawClient, root: Path):
    uri = (root / "burst.herd").as_uri()
    client.open(uri, "model a { layers = 2 }\n")
    client.send(*({"method": "textDocument/didChange",
                   "params": {"textDocument": {"uri": uri, "version": v},
                              "contentChanges": [{"text": f"model a {{ laers = {v} }}\n"}]}} for v in range(2, 7)))
    (d,) = client.diagnostics(uri, 6)
    assert d["code"] == "H0201"
    time.sleep(0.6)  # longer than the delay: a check of any earlier version would be in by now
    _still_answers(client, root)
    assert [n["params"].get("version") for n in client.notes
            if n["method"] == "textDocument/publishDiagnostics" and n["params"]["uri"] == uri] == []
    client.close(uri)


# -- 4. completion past the end ----------------------------------------------------------------


def test_completion_past_the_end_after_an_emoji(client: RawClient, root: Path):
    uri = (root / "emoji.herd").as_uri()
    client.open(uri, "model 😀a { layers = 2 }\n")
    reply = client.request("textDocument/completion", {"textDocument": {"uri": uri}, "position": _pos(5, 0)})
    assert "error" not in reply, reply
    assert {i["label"] for i in reply["result"]["items"]} == {*BLOCKS, "import"}
    client.close(uri)
    _still_answers(client, root)


# -- 5. invalid params --------------------------------------------------------------------------


@pytest.mark.parametrize("position", [_pos(-1, 0), _pos(0, -1), _pos(2**31, 0), {"line": "x", "character": 0}])
def test_a_request_with_invalid_params_gets_an_invalid_params_error(client: RawClient, root: Path,
                                                                    position: dict[str, Any]):
    uri = (root / "clean.herd").as_uri()
    for method in ("textDocument/hover", "textDocument/completion", "textDocument/definition"):
        reply = client.request(method, {"textDocument": {"uri": uri}, "position": position}, timeout=10)
        assert reply["error"]["code"] == -32602, reply
        assert f"invalid params for {method}" in reply["error"]["message"]
        _still_answers(client, root)


def test_the_largest_valid_position_is_clamped(client: RawClient, root: Path):
    uri = (root / "clean.herd").as_uri()
    for method in ("textDocument/hover", "textDocument/completion", "textDocument/definition"):
        reply = client.request(method, {"textDocument": {"uri": uri}, "position": _pos(2**31 - 1, 2**31 - 1)})
        assert "error" not in reply, reply
    _still_answers(client, root)


def test_an_invalid_did_change_is_reported_and_a_full_text_resyncs(client: RawClient, root: Path):
    uri = (root / "desync.herd").as_uri()
    client.open(uri, "model a { layers = 2 }\n")
    client.change(uri, 2, {"range": _range((-1, 0), (0, 0)), "text": "x"})
    (d,) = client.diagnostics(uri)
    assert "out of sync" in d["message"] and "invalid params for textDocument/didChange" in d["message"]
    log = client.wait_note("window/logMessage", lambda p: "textDocument/didChange" in p["message"])
    assert log["type"] == 1  # error
    for method, params in (("textDocument/hover", {"position": _pos(0, 6)}),
                           ("textDocument/formatting", {"options": {"tabSize": 2, "insertSpaces": True}})):
        reply = client.request(method, {"textDocument": {"uri": uri}, **params})
        assert reply["error"]["code"] == -32803 and "out of sync" in reply["error"]["message"]
    _still_answers(client, root)
    client.change(uri, 3, {"range": _range((0, 10), (0, 16)), "text": "laers"})  # still unknown text
    assert "out of sync" in client.diagnostics(uri, 3)[0]["message"]
    client.change(uri, 4, {"text": "model a { laers = 2 }\n"})  # the whole text: in sync again
    assert [d["code"] for d in client.diagnostics(uri, 4)] == ["H0201"]
    _hover_names_model_a(client, uri, 0)
    client.close(uri)
    _still_answers(client, root)


# -- 6. odds and ends ------------------------------------------------------------------------------


def test_hover_on_an_import_with_a_nul(client: RawClient, root: Path):
    uri = (root / "nul.herd").as_uri()
    client.open(uri, 'import "a\0b"\nmodel a { layers = 2 }\n')
    reply = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": _pos(0, 3)})
    assert "error" not in reply, reply
    assert "a\\0b" in reply["result"]["contents"]["value"]
    reply = client.request("textDocument/definition", {"textDocument": {"uri": uri}, "position": _pos(0, 3)})
    assert reply == {"jsonrpc": "2.0", "id": reply["id"], "result": None}
    client.close(uri)
    _still_answers(client, root)


def test_requests_for_a_document_never_opened_answer_nothing(client: RawClient, root: Path):
    doc = {"textDocument": {"uri": (root / "never.herd").as_uri()}}
    at = {**doc, "position": _pos(0, 0)}
    expected = {
        "textDocument/hover": (at, None),
        "textDocument/completion": (at, {"isIncomplete": False, "items": []}),
        "textDocument/definition": (at, None),
        "textDocument/references": ({**at, "context": {"includeDeclaration": True}}, None),
        "textDocument/prepareRename": (at, None),
        "textDocument/rename": ({**at, "newName": "x"}, None),
        "textDocument/documentSymbol": (doc, []),
        "textDocument/foldingRange": (doc, []),
        "textDocument/formatting": ({**doc, "options": {"tabSize": 2, "insertSpaces": True}}, []),
        "textDocument/codeAction": ({**doc, "range": _range((0, 0), (0, 0)), "context": {"diagnostics": []}}, None),
    }
    for method, (params, result) in expected.items():
        reply = client.request(method, params)
        assert "error" not in reply and reply["result"] == result, (method, reply)
    _still_answers(client, root)


def test_a_lone_surrogate_is_reported_not_left_with_stale_diagnostics(client: RawClient, root: Path):
    uri = (root / "surrogate.herd").as_uri()
    assert [d["code"] for d in client.open(uri, "model a { laers = 2 }\n")] == ["H0201"]
    client.change(uri, 2, {"range": _range((0, 21), (0, 21)), "text": " # \ud83d"})
    (d,) = client.diagnostics(uri, 2)
    assert d["code"] == "H0001" and "surrogate" in d["message"] and d["range"] == _range((0, 24), (0, 25))
    _hover_names_model_a(client, uri, 0)
    client.change(uri, 3, {"range": _range((0, 21), (0, 25)), "text": ""})
    assert [d["code"] for d in client.diagnostics(uri, 3)] == ["H0201"]
    client.close(uri)
    _still_answers(client, root)


def test_completion_of_names_after_many_blank_lines(client: RawClient, root: Path):
    uri = (root / "blank.herd").as_uri()
    text = "model tiny { layers = 2 }\n" + "\n" * 20_000 + "pretrain p {\n  model = \n}\n"
    client.open(uri, text)
    started = time.monotonic()
    reply = client.request("textDocument/completion", {"textDocument": {"uri": uri}, "position": _pos(20_002, 10)})
    assert time.monotonic() - started < 10
    assert [i["label"] for i in reply["result"]["items"]] == ["tiny"]
    client.close(uri)
    _still_answers(client, root)
