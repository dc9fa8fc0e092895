"""benchmarks/attention.py runs end to end on tiny shapes; its numbers only count on a GPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks import attention as bench  # noqa: E402


def test_smoke_times_every_cpu_path_and_checks_the_masked_ones_against_fp32(tmp_path, capsys):
    out = tmp_path / "attention.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["path"]: r for r in report["results"]}
    assert set(rows) == {"varlen", "sdpa-causal", "dense"}  # flex: GPU only
    for path in ("varlen", "dense"):
        assert rows[path]["max_err"] < 1e-5
        assert rows[path]["fwd+bwd_ms"] > 0 and rows[path]["mask_ms"] >= 0
    assert rows["sdpa-causal"]["max_err"] is None  # crosses documents: timing only
    printed = capsys.readouterr().out
    assert "fwd+bwd ms" in printed and "varlen" in printed


def test_useful_flops_count_causal_pairs_within_documents_only():
    doc_ids = torch.tensor([[0, 0, 0, 1], [5, 5, 6, 6]])
    # documents of 3, 1, 2 and 2 tokens: 6 + 1 + 3 + 3 = 13 causal pairs, 4·H·D FLOPs each
    assert bench.useful_flops(doc_ids, heads=2, head_dim=8) == 4 * 2 * 8 * 13


def test_fixed_documents_follow_the_teams_note():
    ids = bench.document_ids(bench.SHAPES["note"])
    assert ids.shape == (1, 8192) and int(ids.max()) == 7
    assert torch.equal(ids[0, 1023:1025], torch.tensor([0, 1]))


def test_an_unknown_path_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--paths", "flash3"])
    assert "unknown path(s) flash3; choose from flex, varlen, sdpa-causal, dense" in capsys.readouterr().err
