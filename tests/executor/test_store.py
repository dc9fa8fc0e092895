"""The store: an entry is complete only when sealed, and verify catches any change."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runtime.executor.store import MANIFEST, Store, StoreError


def commit(store: Store, fp: str, files: dict[str, bytes]) -> dict:
    temp = store.new_temp(fp)
    for rel, data in files.items():
        (temp / rel).parent.mkdir(parents=True, exist_ok=True)
        (temp / rel).write_bytes(data)
    return store.commit(
        temp, job_id="j", kind="test.write", stage="s", config={"k": 1},
        fingerprint=fp, inputs={"src": "up"}, started=time.time(),
    )


def test_commit_seals_files_with_sizes_hashes_and_provenance(tmp_path: Path) -> None:
    store = Store(tmp_path)
    manifest = commit(store, "fp1", {"a.txt": b"hello", "sub/b.bin": b"\x00" * 10})
    assert store.is_complete("fp1")
    assert {f["path"]: f["size"] for f in manifest["files"]} == {"a.txt": 5, "sub/b.bin": 10}
    assert manifest["job"] == "j" and manifest["config"] == {"k": 1}
    assert manifest["inputs"] == {"src": "up"} and manifest["herd_version"]
    on_disk = json.loads((store.path("fp1") / MANIFEST).read_text())
    assert on_disk == manifest
    assert list((tmp_path / "tmp").iterdir()) == []  # the temp dir became the entry


def test_a_directory_without_a_valid_manifest_is_not_complete(tmp_path: Path) -> None:
    store = Store(tmp_path)
    (store.path("nomanifest")).mkdir(parents=True)
    (store.path("nomanifest") / "data.txt").write_text("half written")
    (store.path("garbled")).mkdir()
    (store.path("garbled") / MANIFEST).write_text('{"format": "herd.st')
    (store.path("other")).mkdir()
    (store.path("other") / MANIFEST).write_text(json.dumps({"format": "herd.store/1", "fingerprint": "x", "files": []}))
    assert not any(store.is_complete(fp) for fp in ("nomanifest", "garbled", "other", "absent"))


def test_verify_passes_an_intact_entry_and_names_each_problem(tmp_path: Path) -> None:
    store = Store(tmp_path)
    commit(store, "fp", {"a.txt": b"hello", "b.txt": b"world", "c.txt": b"!"})
    assert store.verify("fp") == []
    entry = store.path("fp")
    (entry / "a.txt").write_bytes(b"HELLO")  # same size, other content
    (entry / "b.txt").write_bytes(b"worl")  # truncated
    (entry / "c.txt").unlink()
    (entry / "extra.txt").write_text("x")
    problems = store.verify("fp")
    assert any(p.startswith("a.txt:") and "sha256" in p for p in problems)
    assert any(p.startswith("b.txt: size 4") for p in problems)
    assert "c.txt: missing" in problems
    assert "extra.txt: not in the manifest" in problems


def test_quick_verify_checks_sizes_but_not_content(tmp_path: Path) -> None:
    store = Store(tmp_path)
    commit(store, "fp", {"a.txt": b"hello"})
    (store.path("fp") / "a.txt").write_bytes(b"HELLO")
    assert store.verify("fp", full=False) == []
    assert store.verify("fp", full=True) != []


def test_a_job_may_not_write_the_manifest_or_symlinks(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(StoreError, match="reserved"):
        commit(store, "fp", {MANIFEST: b"{}"})
    temp = store.new_temp("fp2")
    (temp / "link").symlink_to(tmp_path)
    with pytest.raises(StoreError, match="symlink"):
        store.commit(temp, job_id="j", kind="k", stage="s", config={}, fingerprint="fp2",
                     inputs={}, started=time.time())
    assert not store.is_complete("fp") and not store.is_complete("fp2")


def test_recommitting_a_fingerprint_replaces_the_entry(tmp_path: Path) -> None:
    store = Store(tmp_path)
    commit(store, "fp", {"a.txt": b"old"})
    commit(store, "fp", {"a.txt": b"new!"})
    assert (store.path("fp") / "a.txt").read_bytes() == b"new!"
    assert store.verify("fp") == []


def test_committing_deletes_the_jobs_work_dir(tmp_path: Path) -> None:
    store = Store(tmp_path)
    (store.work_dir("fp") / "checkpoint").write_text("step 3")
    commit(store, "fp", {"a.txt": b"x"})
    assert not (tmp_path / "work" / "fp").exists()


def test_clean_stale_removes_temp_dirs_and_incomplete_entries_only(tmp_path: Path) -> None:
    store = Store(tmp_path)
    commit(store, "good", {"a.txt": b"x"})
    leftover = store.new_temp("killed")
    (leftover / "part").write_text("half")
    store.path("broken").mkdir()
    removed = store.clean_stale()
    assert leftover in removed and store.path("broken") in removed
    assert store.is_complete("good") and not leftover.exists()
