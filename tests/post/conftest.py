"""Fixtures for the post-training tests: a byte-level tokenizer and a tiny Llama."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.data.tokenizer import Tokenizer, load_tokenizer, save_tokenizer
from runtime.jobs import registry
from runtime.jobs.context import JobContext
from runtime.model import from_config, save_checkpoint

TINY: dict[str, Any] = {
    "name": "tiny", "vocab_size": 272, "dim": 48, "layers": 2, "heads": 4, "kv_heads": 2,
    "head_dim": 12, "ffn_dim": 128, "norm_eps": 1e-5, "rope_theta": 10000.0,
    "rope_scaling": None, "tied_embeddings": True, "init_std": 0.02, "max_context": 128,
    "document_mask": True,
}


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    """Byte-level ranks only (no merges) + 10 Llama 3 special tokens: 266 ids."""
    d = tmp_path / "tokenizer"
    d.mkdir()
    save_tokenizer(d, {bytes([i]): i for i in range(256)}, "llama3", 10)
    return d


@pytest.fixture
def tok(tokenizer_dir: Path) -> Tokenizer:
    return load_tokenizer(tokenizer_dir)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    d = tmp_path / "base"
    save_checkpoint(from_config(TINY, seed=0), d)
    return d


def make_ctx(tmp_path: Path, kind: str, config: dict[str, Any], inputs: dict[str, Path] | None,
             name: str, device: str = "cpu") -> JobContext:
    """A JobContext like the executor's, with its out/work directories under tmp_path. The
    tests pin the CPU so their numbers do not depend on the machine; test_cuda asks for CUDA."""
    out, work = tmp_path / name / "out", tmp_path / name / "work"
    out.mkdir(parents=True)
    work.mkdir(parents=True)
    return JobContext(job_id=name, kind=kind, stage="post", config=config, inputs=inputs or {},
                      out=out, work=work, run_dir=tmp_path, settings={"workers": 1, "device": device},
                      log=logging.getLogger(f"test.{name}"), metrics_path=tmp_path / "metrics.jsonl")


@pytest.fixture
def job(tmp_path: Path) -> Callable[..., Path]:
    """Run a job kind as the executor would, returning its output directory."""

    def run(kind: str, config: dict[str, Any], inputs: dict[str, Path] | None = None,
            name: str | None = None, device: str = "cpu") -> Path:
        ctx = make_ctx(tmp_path, kind, config, inputs, name or kind.replace(".", "_"), device)
        registry.get(kind)(ctx)
        return ctx.out

    return run


def run_killed_at(ctx: JobContext, done: int) -> JobContext:
    """Run ctx's job and interrupt it (as Ctrl-C would) once progress reaches `done` steps;
    returns the context, ready to run again as `herd run` would after the interruption."""

    def kill(progress: Any) -> None:
        if progress.done == done:
            raise KeyboardInterrupt

    ctx.progress.on_change = kill
    with pytest.raises(KeyboardInterrupt):
        registry.get(ctx.kind)(ctx)
    ctx.progress.on_change = None
    return ctx
