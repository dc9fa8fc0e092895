"""Tiny token artifacts, a tokenizer and configs so training jobs run in seconds on a CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from runtime.data.token_shards import write_meta
from runtime.data.tokenizer import load_tokenizer, save_tokenizer, train_bpe
from runtime.jobs.context import JobContext

TEXT = ("def add(a, b):\n    return a + b\n\nclass Point:\n    x = 1\n    y = 2\n"
        "The pass key is 12345. Remember it. What is the pass key? 0123456789\n")

MODEL: dict[str, Any] = {
    "name": "t", "vocab_size": 320, "dim": 32, "layers": 1, "heads": 2, "kv_heads": 1,
    "head_dim": 16, "ffn_dim": 64, "norm_eps": 1e-5, "rope_theta": 10000.0,
    "rope_scaling": None, "tied_embeddings": True, "max_context": 32, "document_mask": True,
    "init_std": 0.02,
}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Train on one intra-op thread. The models here are tiny: on a shared 2-core machine
    torch's default thread pool spends most of each matmul waiting for a busy core, which
    made a 6-step run 4-10x slower than single-threaded. Restored afterwards, since the
    setting is process-wide and other test packages share the process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_ctx(tmp: Path, name: str, kind: str, config: dict[str, Any],
             inputs: dict[str, Path]) -> JobContext:
    out, work = tmp / name / "out", tmp / name / "work"
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    return JobContext(job_id=name, kind=kind, stage="train", config=config, inputs=inputs,
                      out=out, work=work, run_dir=tmp, settings={"workers": 1},
                      log=logging.getLogger(f"test.{name}"), metrics_path=tmp / f"{name}.jsonl")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tokenizer and a tokens artifact (train + val) built from a repeated snippet."""
    root = tmp_path_factory.mktemp("train-data")
    tok_dir = root / "tok"
    tok_dir.mkdir()
    _, ranks = train_bpe([TEXT] * 4, 300, "llama3")
    save_tokenizer(tok_dir, ranks, "llama3", 16)
    tok = load_tokenizer(tok_dir)
    data = root / "tokens"
    data.mkdir()
    rng = np.random.default_rng(0)
    lines = TEXT.splitlines()
    stats = []
    for split, n_docs in (("train", 120), ("val", 12)):
        docs = [tok.encode("\n".join(rng.choice(lines, 4))) + [tok.eos_id] for _ in range(n_docs)]
        tokens = np.concatenate([np.asarray(d, np.uint32) for d in docs])
        index = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
        np.save(data / f"part-00000.{split}.tokens.npy", tokens)
        np.save(data / f"part-00000.{split}.index.npy", index)
    stats = [{"train_docs": 120, "val_docs": 12,
              "train_tokens": int(np.load(data / "part-00000.train.index.npy")[-1]),
              "val_tokens": int(np.load(data / "part-00000.val.index.npy")[-1])}]
    write_meta(data, ["part-00000"], stats, tok, {})
    assert tok.n_vocab <= MODEL["vocab_size"]
    return {"tokenizer": tok_dir, "data:code": data}


def train_config(steps: int = 6, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model": dict(MODEL), "tokens": steps * 4 * 32, "context": 32, "steps": steps,
        "batch": [{"seqs": 2, "tokens": 64, "from_tokens": 0},
                  {"seqs": 4, "tokens": 128, "from_tokens": 128}],
        "micro_batch": None,
        "optimizer": {"kind": "adamw", "lr": 3e-3, "betas": [0.9, 0.95], "weight_decay": 0.1, "eps": 1e-8},
        "schedule": {"kind": "cosine", "peak_lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
                     "total_steps": steps, "decay_fraction": 0.2},
        "mix": {"weights": {"code": 1.0}, "max_epochs": 50.0, "seed": 0},
        "clip": 1.0, "seed": 0, "checkpoint_every": 2, "eval_every": 3, "compile": False,
        "precision": "fp32",
    }
    cfg.update(over)
    return cfg
