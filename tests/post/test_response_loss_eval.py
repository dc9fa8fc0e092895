"""`eval.response_loss` on a tiny model: the held-out NLL of reference responses checked
against a plain-torch reference (one unpadded forward per conversation, log-softmax by
hand), preference pairs' chosen-vs-rejected share, records too long for the context left
out, and the post-training summary that tabulates and plots it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from runtime.jobs import registry
from runtime.jobs.context import JobFailed
from runtime.model import load_checkpoint
from runtime.post.chat import encode_completion, encode_dialog, shifted

from .conftest import make_ctx

REPLIES = ["The capital of France is Paris.", "Seven.", "Use a list comprehension: [x * 2 for x in xs]",
           "I would rather not guess.", "Blue, mostly.", "It rains in April."]


def chats(n: int) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"Question {i}: what about {REPLIES[i % 6][:8]}?"},
                          {"role": "assistant", "content": REPLIES[i % 6]}]} for i in range(n)]


def dataset(job, tmp_path: Path, fmt: str, records: list[dict], name: str = "held") -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return job("data.dataset", {"format": fmt, "path": str(path), "val_fraction": 0.5, "seed": 1},
               name=f"dataset_{name}")


def run_eval(tmp_path: Path, inputs: dict[str, Path], name: str = "rl", context: int = 128, **params):
    ctx = make_ctx(tmp_path, "eval.response_loss", {"eval": "response_loss", "params": params,
                                                     "context": context, "seed": 0}, inputs, name)
    registry.get("eval.response_loss")(ctx)
    return ctx, json.loads((ctx.out / "eval.json").read_text())


@torch.no_grad()
def reference_logprob(model, tokens: list[int], targets: list[int]) -> tuple[float, int]:
    logits = model(torch.tensor([tokens])).float()[0]
    logp = torch.log_softmax(logits.double(), -1)
    scored = [(i, t) for i, t in enumerate(targets) if t != -100]
    return sum(float(logp[i, t]) for i, t in scored), len(scored)


def test_the_loss_is_the_token_weighted_nll_of_the_held_out_replies(job, tmp_path, checkpoint, tokenizer_dir,
                                                                    tok) -> None:
    ds = dataset(job, tmp_path, "messages", chats(24))
    ctx, result = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds})
    held = [json.loads(line) for line in (ds / "val.sft.jsonl").read_text().splitlines()]
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    total, tokens = 0.0, 0
    for rec in held:
        lp, n = reference_logprob(model, *shifted(encode_dialog(tok, rec["messages"]), mask_formatting=True))
        total, tokens = total + lp, tokens + n
    assert result["records"] == len(held) > 0 and result["tokens"] == tokens
    assert tokens == sum(len(tok.encode(r["messages"][-1]["content"])) for r in held)  # the replies' content
    assert result["response_nll"] == pytest.approx(-total / tokens, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(-total / tokens), rel=1e-5)
    assert math.log(272) * 0.9 < result["response_nll"] < math.log(272) * 1.1  # untrained: near uniform
    assert "pairs" not in result
    assert "Held-out response loss" in (ctx.out / "report.md").read_text()


def test_preference_pairs_report_how_often_the_chosen_reply_is_likelier(job, tmp_path, checkpoint,
                                                                       tokenizer_dir, tok) -> None:
    pairs = [{"prompt": [{"role": "user", "content": f"Say something {i}"}],
              "chosen": [{"role": "assistant", "content": REPLIES[i % 6]}],
              "rejected": [{"role": "assistant", "content": REPLIES[(i + 1) % 6] + " " * (i % 3)}]}
             for i in range(20)]
    ds = dataset(job, tmp_path, "preferences", pairs, name="prefs")
    _, result = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds})
    held = [json.loads(line) for line in (ds / "val.preferences.jsonl").read_text().splitlines()]
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    margins = []
    for rec in held:
        per_token = []
        for side in ("chosen", "rejected"):
            lp, n = reference_logprob(model, *shifted(encode_completion(tok, rec["prompt"], rec[side]), True))
            per_token.append(lp / n)
        margins.append(per_token[0] - per_token[1])
    assert result["pairs"] == len(held) > 0
    assert result["chosen_preferred"] == pytest.approx(sum(m > 0 for m in margins) / len(margins))
    assert result["mean_margin"] == pytest.approx(sum(margins) / len(margins), rel=1e-4, abs=1e-6)
    assert result["records"] == len(held)  # the conversations scored are prompt + chosen


def test_records_longer_than_the_context_are_left_out_and_counted(job, tmp_path, checkpoint, tokenizer_dir) -> None:
    records = chats(10) + [{"messages": [{"role": "user", "content": "long " * 40},
                                         {"role": "assistant", "content": "ok"}]} for _ in range(10)]
    ds = dataset(job, tmp_path, "messages", records)
    held = (ds / "val.sft.jsonl").read_text().count("long ")
    _, result = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds},
                         context=128, count=200)
    assert result["left_out_too_long"] == held // 40 > 0
    with pytest.raises(JobFailed, match="longer than the context"):
        run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds},
                 name="tiny_context", context=8)


def test_the_summary_tabulates_and_plots_the_loss_through_the_stage(tmp_path) -> None:
    points = []
    for k, (label, nll) in enumerate([("base", 5.6), ("r1 sft", 3.1), ("r1 dpo", 3.3)]):
        d = tmp_path / label.replace(" ", "_")
        d.mkdir()
        (d / "eval.json").write_text(json.dumps({"response_nll": nll, "perplexity": math.exp(nll)}))
        points.append((f"{k:02d}:{label}:response_loss", d))
    ctx = make_ctx(tmp_path, "eval.summary", {"evals": ["response_loss"]}, dict(points), "summary")
    registry.get("eval.summary")(ctx)
    stats = json.loads((ctx.out / "stats.json").read_text())
    assert (stats["first_response_loss"], stats["last_response_loss"]) == (5.6, 3.3)
    report = (ctx.out / "report.md").read_text()
    assert "| r1 sft | response_loss | response loss | 3.1000 |" in report
    assert (ctx.out / "response_loss.png").stat().st_size > 1000 and "response_loss.png" in report
