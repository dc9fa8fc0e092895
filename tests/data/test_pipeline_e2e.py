"""The whole data pipeline on the embedded python_stdlib corpus, through the job functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.helpers import stats_of
from runtime.data.documents import read_documents
from runtime.data.loader import IGNORE, PackedLoader
from runtime.data.tokenizer import load_tokenizer


def test_stdlib_corpus_flows_from_source_to_packed_batches(job, tmp_path: Path) -> None:
    docs = job("data.source", {"source": "python_stdlib", "paths": [], "limit_docs": 300,
                               "max_bad_fraction": 0.01, "seed": 0})
    assert stats_of(docs)["docs_out"] == 300
    ids = [d.id for d in read_documents(docs)]
    assert len(set(ids)) == 300
    assert any(i.startswith("python:docs/") for i in ids) and any(i.startswith("python:stdlib/") for i in ids)

    url = job("data.dedup.url", {"keep": "newest"}, {"documents": docs})
    exact = job("data.dedup.exact", {}, {"documents": url})
    near = job("data.dedup.minhash", {"ngram": 5, "bands": 14, "rows": 8, "threshold": 0.8, "seed": 0},
               {"documents": exact})
    lines = job("data.dedup.lines", {"max_repeats": 6, "bucket": 30_000_000}, {"documents": near})
    filtered = job("data.filter", {"filter": "length", "params": {"min_words": 20, "max_words": 100_000}},
                   {"documents": lines})
    for out in (url, exact, near, lines, filtered):
        s = stats_of(out)
        assert s["docs_out"] <= s["docs_in"]
        assert (out / "report.md").read_text().startswith("### ")
    assert stats_of(filtered)["docs_out"] > 150

    tok_dir = job("tokenizer.train", {"vocab": 1024, "pattern": "llama3", "special_tokens": 256,
                                      "max_bytes": 2_000_000}, {"documents": filtered})
    tok = load_tokenizer(tok_dir)
    assert tok.n_vocab == 1024 + 256 and tok.bos_id == 1024 and tok.eot_id == 1033

    tokens = job("data.tokenize", {"val_fraction": 0.05, "seed": 0},
                 {"documents": filtered, "tokenizer": tok_dir})
    s = stats_of(tokens)
    assert s["val_docs"] >= 1 and s["train_docs"] + s["val_docs"] == stats_of(filtered)["docs_out"]

    loader = PackedLoader({"stdlib": tokens}, {"stdlib": 1.0}, seq_len=64, batch_size=4,
                          split="train", seed=0)
    batch = next(loader)
    assert batch.tokens.shape == batch.targets.shape == batch.doc_ids.shape == (4, 64)
    assert batch.tokens.dtype == torch.long
    valid = batch.targets != IGNORE
    assert torch.equal(batch.targets[:, :-1][valid[:, :-1]], batch.tokens[:, 1:][valid[:, :-1]])
    text = tok.decode(batch.tokens[0].tolist())
    assert len(text) > 50

    val = list(PackedLoader({"stdlib": tokens}, {}, seq_len=64, batch_size=4, split="val"))
    n_val_targets = sum(int((b.targets != IGNORE).sum()) for b in val)
    assert 0 < n_val_targets <= s["val_tokens"]
    assert np.isfinite(n_val_targets)
