"""`herd lsp` as an editor's process: it starts, answers and exits cleanly over raw stdio
(apart from test_lsp.py, whose module-wide asyncio mark only suits async tests)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_herd_lsp_exits_cleanly_after_shutdown_and_exit():
    """An editor closing the session must not get an internal-error report from `herd lsp`."""
    def frame(msg: dict) -> bytes:
        body = json.dumps(msg).encode()
        return f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    session = b"".join(frame(m) for m in (
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"processId": None, "rootUri": None, "capabilities": {}}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "shutdown"},
        {"jsonrpc": "2.0", "method": "exit"},
    ))
    done = subprocess.run([sys.executable, "-m", "herdlang.cli", "lsp"], input=session,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert b"internal error" not in done.stderr and b"Traceback" not in done.stderr
    assert b'"id": 2' in done.stdout or b'"id":2' in done.stdout  # shutdown was answered
