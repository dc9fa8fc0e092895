"""H0604 for a folder named where a file is read (a dataset's `path`, a tokenizer's `file`, a
word list, a source without a glob): `herd check` says so, where the run would later report
the file "not found" although something of that name exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from compiler import compile_with_warnings
from herdlang.spec import load_spec

SPEC = """\
tokenizer tok { vocab = 256  file = "tok" }
dataset chat { format = messages  path = "chat" }
data web {
  source parquet("pq")
  filter dirty_words { list = "words/" }
}
checkpoint base { model = m  path = "ckpt" }
model m { tokenizer = tok  layers = 2  dim = 64  heads = 2 }
"""


def _folders(root: Path) -> None:
    for name in ("tok", "chat", "pq", "words", "ckpt"):
        (root / name).mkdir()
    (root / "ckpt" / "config.json").write_text("{}")
    (root / "s.herd").write_text(SPEC, encoding="utf-8")


def test_a_folder_where_a_file_is_read_is_H0604_at_the_path(tmp_path: Path, monkeypatch) -> None:
    _folders(tmp_path)
    monkeypatch.chdir(tmp_path)
    _, warnings = compile_with_warnings(load_spec("s.herd"))
    found = sorted((w.code, w.span.line, w.span.column, w.message, w.hint) for w in warnings)
    assert found == [
        ("H0604", 1, 37, "tokenizer tok: 'tok' is a folder, not a file", 'name the file in it, e.g. "tok/tokenizer.json"'),
        ("H0604", 2, 42, "dataset chat: 'chat' is a folder, not a file", 'name the file in it, e.g. "chat/train.jsonl"'),
        ("H0604", 4, 18, "source parquet: 'pq' is a folder, not a file",
         'name the files in it with a glob: "pq/*.parquet"'),
        ("H0604", 5, 31, "filter dirty_words: 'words/' is a folder, not a file",
         'name the file in it, e.g. "words/en.txt"'),
    ]  # (the checkpoint's `path` names a folder, as it should)


def test_files_and_globs_in_those_folders_pass(tmp_path: Path, monkeypatch) -> None:
    _folders(tmp_path)
    for name in ("tok/tokenizer.json", "chat/train.jsonl", "pq/a.parquet", "words/en.txt"):
        (tmp_path / name).write_text("x\n")
    text = SPEC.replace('"tok"', '"tok/tokenizer.json"').replace('"chat"', '"chat/train.jsonl"')
    (tmp_path / "s.herd").write_text(text.replace('"pq"', '"pq/*.parquet"').replace('"words/"', '"words/en.txt"'))
    monkeypatch.chdir(tmp_path)
    _, warnings = compile_with_warnings(load_spec("s.herd"))
    assert warnings == []


def test_check_warns_and_passes(tmp_path: Path) -> None:
    _folders(tmp_path)
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", "check", "s.herd"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert "s.herd:2:42: warning[H0604]: dataset chat: 'chat' is a folder, not a file" in out.stderr + out.stdout
