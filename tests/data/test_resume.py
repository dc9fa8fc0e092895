"""A data job killed mid-way and re-run produces the same bytes as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.helpers import make_ctx, run_job
from runtime.jobs import registry
from runtime.jobs.context import JobContext

ROOT = Path(__file__).resolve().parents[2]


def artifact_bytes(out: Path) -> dict[str, bytes]:
    """Everything but report.md (which states timings) must match byte for byte."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "report.md"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("corpus")
    return run_job(tmp, "data.source", {"source": "python_stdlib", "paths": [], "limit_docs": 400})


@pytest.fixture(scope="module")
def tokenizer(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tok")
    return run_job(tmp, "tokenizer.train", {"vocab": 512, "max_bytes": 1_000_000},
                   {"documents": corpus})


CASES = {
    "minhash": ("data.dedup.minhash", {"ngram": 5, "bands": 14, "rows": 8, "threshold": 0.8},
                "runtime.data.dedup.minhash", "signature_shard"),
    "lines": ("data.dedup.lines", {"max_repeats": 6, "bucket": 100},
              "runtime.data.dedup.lines", "remove_lines_shard"),
    "filter": ("data.filter", {"filter": "duplicated_ngrams", "params": {"preset": "gopher"}},
               "runtime.data.filters.runner", "score_shard"),
    "tokenize": ("data.tokenize", {"val_fraction": 0.05}, "runtime.data.token_shards", "tokenize_shard"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_job_that_crashes_mid_way_resumes_to_identical_bytes(
        case: str, corpus: Path, tokenizer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kind, config, module_name, fn_name = CASES[case]
    inputs = {"documents": corpus, "tokenizer": tokenizer}
    clean = run_job(tmp_path / "clean", kind, config, inputs)

    module = sys.modules[module_name]
    real = getattr(module, fn_name)
    calls = {"n": 0}

    def crash_on_third_shard(item, out):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(item, out)

    monkeypatch.setattr(module, fn_name, crash_on_third_shard)
    crashed = make_ctx(tmp_path / "crash", kind, config, inputs, name="job")
    with pytest.raises(RuntimeError, match="simulated crash"):
        registry.get(kind)(crashed)
    monkeypatch.setattr(module, fn_name, real)

    calls["n"] = 0
    rerun = JobContext(**{**crashed.__dict__, "out": tmp_path / "crash" / "out2",
                          "progress": type(crashed.progress)()})
    rerun.out.mkdir()
    registry.get(kind)(rerun)
    assert rerun.progress.info.get("resumed_shards", 0) >= 2  # committed shards were skipped
    assert artifact_bytes(rerun.out) == artifact_bytes(clean)


SCRIPT = """
import sys
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from data.helpers import make_ctx
from runtime.jobs import registry
ctx = make_ctx(Path({tmp!r}), "data.dedup.minhash", {{"ngram": 5}}, {{"documents": Path({docs!r})}},
               name="job")
ctx.out = Path({out!r}); ctx.out.mkdir(exist_ok=True)
registry.get("data.dedup.minhash")(ctx)
"""


def test_sigkill_mid_job_then_rerun_gives_identical_bytes(corpus: Path, tmp_path: Path) -> None:
    clean = run_job(tmp_path / "clean", "data.dedup.minhash", {"ngram": 5}, {"documents": corpus})
    work = tmp_path / "killed" / "job" / "work" / "signatures"

    def launch(out: str) -> subprocess.Popen:
        code = SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), tmp=str(tmp_path / "killed"),
                             docs=str(corpus), out=str(tmp_path / "killed" / out))
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)

    proc = launch("out1")
    deadline = time.monotonic() + 120
    while not list(work.glob("*.done.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert len(list(work.glob("*.done.json"))) < len(list(corpus.glob("part-*.jsonl")))

    proc = launch("out2")
    assert proc.wait(timeout=300) == 0
    assert artifact_bytes(tmp_path / "killed" / "out2") == artifact_bytes(clean)
