"""`eval.multiple_choice` on a tiny model: every number checked against a plain-torch
reference (one unpadded forward per choice), the normalisations, a model whose answers are
forced (uniform: the shortest or the longest choice wins), prompts cut to fit the context,
and an eval.json a scaling sweep's forecast and a probe read."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from runtime.jobs import registry
from runtime.jobs.context import JobFailed
from runtime.jobs.scaling_jobs import probe_compare, scaling_fit
from runtime.model import load_checkpoint, save_checkpoint

from .conftest import make_ctx

LETTERS = "ABCDE"


def benchmark(n: int = 14, seed: int = 3) -> list[dict]:
    """Questions with 2 to 5 choices of varied lengths; answers as index, letter or text."""
    rng = random.Random(seed)
    words = ["red", "blue", "seven", "a cat", "the sea", "quickly", "x", "forty-two", "green tea"]
    out = []
    for i in range(n):
        choices = rng.sample(words, rng.randint(2, 5))
        answer = rng.randrange(len(choices))
        given = [answer, LETTERS[answer], choices[answer]][i % 3]
        out.append({"question": f"Which one is number {i}? " + " ".join(rng.sample(words, 3)),
                    "choices": choices, "answer": given, "subject": ["colours", "animals"][i % 2]})
    return out


def make_dataset(job, tmp_path: Path, records: list[dict], name: str = "bench") -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return job("data.dataset", {"format": "choices", "path": str(path)}, name=f"dataset_{name}")


def run_eval(tmp_path: Path, inputs: dict[str, Path], name: str = "mc", context: int = 128, **params):
    ctx = make_ctx(tmp_path, "eval.multiple_choice",
                   {"eval": "multiple_choice", "params": {"data": "bench", **params}, "context": context,
                    "seed": 0}, inputs, name)
    registry.get("eval.multiple_choice")(ctx)
    return ctx, json.loads((ctx.out / "eval.json").read_text())


def index_of(rec: dict) -> int:
    a = rec["answer"]
    return a if isinstance(a, int) else LETTERS.index(a) if len(a) == 1 and a in LETTERS else rec["choices"].index(a)


@torch.no_grad()
def reference(checkpoint: Path, tok, records: list[dict], *, context: int = 128, plain: bool = False):
    """The straightforward way: per choice, one forward pass over
    <|begin_of_text|> prompt + " choice", summing log p of the choice's tokens."""
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    picks = {"none": [], "tokens": [], "chars": []}
    nll, logprobs = [], []
    for rec in records:
        text = rec["question"] if plain else f"Question: {rec['question']}\nAnswer:"
        prompt = [tok.bos_id] + tok.encode(text)
        conts = [tok.encode(" " + c) for c in rec["choices"]]
        room = context + 1 - max(map(len, conts))
        if len(prompt) > room:  # keep <|begin_of_text|> and the end of the prompt
            prompt = prompt[:1] + prompt[len(prompt) - room + 1:]
        scores = []
        for cont in conts:
            seq = torch.tensor([prompt + cont])
            logp = torch.log_softmax(model(seq[:, :-1])[0].float(), -1)
            scores.append(sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(cont)))
        logprobs.append(scores)
        norm = {"none": scores, "tokens": [s / len(c) for s, c in zip(scores, conts, strict=True)],
                "chars": [s / len(c) for s, c in zip(scores, rec["choices"], strict=True)]}
        for k, v in norm.items():
            picks[k].append(max(range(len(v)), key=lambda j, v=v: (v[j], -j)))
        answer = index_of(rec)
        nll.append(-scores[answer] / len(conts[answer]))
    answers = [index_of(r) for r in records]
    acc = {k: sum(p == a for p, a in zip(v, answers, strict=True)) / len(records) for k, v in picks.items()}
    return acc, sum(nll) / len(nll), picks, logprobs


def test_the_job_matches_a_plain_torch_reference(job, tmp_path, checkpoint, tokenizer_dir, tok) -> None:
    records = benchmark()
    ds = make_dataset(job, tmp_path, records)
    ctx, result = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds},
                           normalize="tokens")
    acc, nll, picks, _ = reference(checkpoint, tok, records)
    assert result["accuracy_by_normalize"] == pytest.approx(acc, abs=1e-12)
    assert result["accuracy"] == acc["tokens"] and result["normalize"] == "tokens"
    assert result["correct"] == round(acc["tokens"] * len(records))
    assert result["nll"] == pytest.approx(nll, rel=1e-5)
    assert result["chance"] == pytest.approx(sum(1 / len(r["choices"]) for r in records) / len(records))
    assert result["count"] == len(records) and result["fit"]["skipped_too_long"] == 0
    by_subject = {s: [p == index_of(r) for p, r in zip(picks["tokens"], records, strict=True)
                      if r["subject"] == s] for s in ("animals", "colours")}
    assert result["per_subject"] == {s: {"accuracy": pytest.approx(sum(v) / len(v)), "count": len(v)}
                                     for s, v in by_subject.items()}
    assert ctx.progress.unit == "questions" and ctx.progress.done == len(records)
    stats = json.loads((ctx.out / "stats.json").read_text())
    assert stats == {"multiple_choice_accuracy": round(acc["tokens"], 4), "multiple_choice_nll": round(nll, 4)}
    report = (ctx.out / "report.md").read_text()
    assert report.startswith("### Multiple choice: `bench`") and "| tokens (reported) |" in report
    assert "| animals | 7 |" in report


def test_choice_logprobs_batched_equal_one_at_a_time(tmp_path, checkpoint, tok, monkeypatch) -> None:
    """Sorting, padding and batch splits change nothing: a tiny logit budget forces one
    sequence per batch, a large one all in one."""
    from runtime.jobs import multiple_choice_eval as M
    from runtime.post import scoring

    records = benchmark(6, seed=9)
    questions = [M.encode(tok, {**r, "answer": index_of(r)}, "qa", 128) for r in records]
    model, _ = load_checkpoint(checkpoint)
    model.eval()
    together = M.choice_logprobs(model, questions)
    monkeypatch.setattr(scoring, "LOGIT_BUDGET", 1)
    alone = M.choice_logprobs(model, questions)
    _, _, _, expected = reference(checkpoint, tok, records)
    for a, b, e in zip(together, alone, expected, strict=True):
        assert [x[0] for x in a] == pytest.approx(e, rel=1e-5, abs=1e-4)
        assert [x[0] for x in b] == pytest.approx(e, rel=1e-5, abs=1e-4)
        assert [x[1] for x in a] == [x[1] for x in b]


@pytest.mark.parametrize("normalize", ["none", "tokens", "chars"])
def test_each_normalisation_reports_its_own_accuracy(job, tmp_path, checkpoint, tokenizer_dir, tok,
                                                     normalize) -> None:
    records = benchmark(8, seed=5)
    ds = make_dataset(job, tmp_path, records)
    _, result = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds},
                         normalize=normalize, prompt="plain")
    acc, nll, _, _ = reference(checkpoint, tok, records, plain=True)
    assert result["accuracy"] == acc[normalize] and result["prompt"] == "plain"
    assert result["nll"] == pytest.approx(nll, rel=1e-5)


def test_a_uniform_model_picks_the_shortest_choice_or_per_character_the_longest(
        job, tmp_path, checkpoint, tokenizer_dir) -> None:
    """Zero the final norm and every logit is 0: each token costs log V. Summed (none), the
    choice with the fewest tokens wins; per character (chars), the longest (its leading
    space is spread over more characters); the correct answer's NLL is exactly log V."""
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        model.norm.weight.zero_()
    uniform = tmp_path / "uniform"
    save_checkpoint(model, uniform)
    records = [  # byte-level tokenizer: " choice" is 1 + len(choice) tokens
        {"question": "a?", "choices": ["aaaa", "b", "cc"], "answer": 1},       # shortest
        {"question": "b?", "choices": ["x", "yyyyyy"], "answer": 1},           # longest
        {"question": "c?", "choices": ["ppp", "qq", "rrrrr", "s"], "answer": 2},  # longest
        {"question": "d?", "choices": ["mm", "nnn", "o"], "answer": 0},        # neither
    ]
    ds = make_dataset(job, tmp_path, records)
    _, result = run_eval(tmp_path, {"checkpoint": uniform, "tokenizer": tokenizer_dir, "dataset": ds})
    assert result["accuracy"] == result["accuracy_by_normalize"]["none"] == 0.25
    assert result["accuracy_by_normalize"]["chars"] == 0.5
    assert result["nll"] == pytest.approx(math.log(model.args.vocab_size), rel=1e-6)
    assert result["chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 4 + 1 / 3) / 4)


def test_a_prompt_longer_than_the_context_loses_its_start_and_a_choice_that_fills_it_is_skipped(
        job, tmp_path, checkpoint, tokenizer_dir, tok) -> None:
    records = benchmark(6, seed=1)
    records[1]["question"] = "long " * 40 + "and finally, which?"
    records[4]["choices"][0] = "z" * 40  # 41 tokens: no room for the question in 40
    ds = make_dataset(job, tmp_path, records)
    _, result = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds},
                         context=40)
    assert result["fit"] == {"questions": 6, "sampled": 6, "skipped_too_long": 1, "truncated": 5,
                             "context": 40}
    kept = records[:4] + records[5:]
    acc, nll, _, _ = reference(checkpoint, tok, kept, context=40)
    assert result["count"] == 5 and result["accuracy_by_normalize"] == pytest.approx(acc, abs=1e-12)
    assert result["nll"] == pytest.approx(nll, rel=1e-5)


def test_count_scores_a_seeded_sample(job, tmp_path, checkpoint, tokenizer_dir) -> None:
    ds = make_dataset(job, tmp_path, benchmark())
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds}
    _, first = run_eval(tmp_path, inputs, count=5)
    _, again = run_eval(tmp_path, inputs, name="again", count=5)
    assert first == again and first["count"] == 5 and first["fit"]["sampled"] == 5
    _, everything = run_eval(tmp_path, inputs, name="all", count=1000)
    assert everything["count"] == 14


def test_what_the_job_refuses(job, tmp_path, checkpoint, tokenizer_dir) -> None:
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"prompt": "add 1 2", "answer": "3"}) + "\n", encoding="utf-8")
    prompts = job("data.dataset", {"format": "prompts", "path": str(chats)}, name="prompts")
    with pytest.raises(JobFailed, match="has format 'prompts'; the multiple_choice eval reads format = choices"):
        run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": prompts})
    ds = make_dataset(job, tmp_path, [{"question": "q?", "choices": ["y" * 50, "n"], "answer": 1}])
    with pytest.raises(JobFailed, match=r"none of the 1 questions fits the context \(20 tokens\)"):
        run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds},
                 name="long", context=20)
    with pytest.raises(JobFailed, match="needs input"):
        run_eval(tmp_path, {"checkpoint": checkpoint, "dataset": ds}, name="no_tok")


# -- what the scaling forecast and a probe read -----------------------------------------------------


def test_a_sweep_forecasts_a_multiple_choice_eval(job, tmp_path, checkpoint, tokenizer_dir) -> None:
    """scaling.fit reads accuracy, nll and chance from each run's eval.json: the job's own
    file (mixed 2-5 choices: chance is their mean 1/choices), with the two numbers that vary
    across a sweep set from a known sigmoid, gives a forecast on that chance."""
    ds = make_dataset(job, tmp_path, benchmark())
    _, real = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds})
    sizes = {"xs": 100_512, "s": 246_080, "m": 525_984, "l": 1_033_344}
    runs, inputs = [], {}
    for budget in (1e12, 2e12, 4e12):
        centre = math.log(1.5 * budget**0.5)
        for model, params in sizes.items():
            tokens = budget / (6 * params)
            loss = 4.0 + 0.2 * (math.log(tokens) - centre) ** 2
            label = f"{budget:.0e}".replace("e+", "e") + f":{model}"
            loss_dir, task_dir = tmp_path / "sweep" / f"loss_{label}", tmp_path / "sweep" / f"task_{label}"
            loss_dir.mkdir(parents=True)
            task_dir.mkdir(parents=True)
            (loss_dir / "eval.json").write_text(json.dumps({"sources": {"docs": {"loss": loss}}}))
            nll = loss - 0.3e-12 * budget
            accuracy = real["chance"] + (1 - real["chance"]) / (1 + math.exp(-2.0 * (3.5 - nll)))
            (task_dir / "eval.json").write_text(json.dumps({**real, "accuracy": accuracy, "nll": nll}))
            inputs[f"run:{label}"], inputs[f"task:{label}"] = loss_dir, task_dir
            runs.append({"input": f"run:{label}", "task_input": f"task:{label}", "budget": budget,
                         "model": model, "params": params, "tokens": round(tokens)})
    fit = make_ctx(tmp_path, "scaling.fit", {"runs": runs, "target": 4e13, "forecast": "mmlu"}, inputs, "fit")
    scaling_fit(fit)
    forecast = json.loads((fit.out / "law.json").read_text())["forecast"]
    assert forecast["eval"] == "mmlu"
    assert forecast["step2"]["chance"] == pytest.approx(real["chance"]) and real["chance"] != 0.25
    assert forecast["step2"]["midpoint"] == pytest.approx(3.5, abs=0.01)


def test_a_probe_compares_accuracy_and_nll_only(job, tmp_path, checkpoint, tokenizer_dir) -> None:
    ds = make_dataset(job, tmp_path, benchmark())
    ctx, real = run_eval(tmp_path, {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": ds})
    better = tmp_path / "better"
    better.mkdir()
    (better / "eval.json").write_text(json.dumps({**real, "accuracy": real["accuracy"] + 0.1}))
    probe = make_ctx(tmp_path, "probe.compare", {"new": "docs", "share": 0.3, "evals": ["mmlu"],
                                                 "threshold": 0.01},
                     {"control:mmlu": ctx.out, "candidate:mmlu": better}, "probe")
    probe_compare(probe)
    stats = json.loads((probe.out / "stats.json").read_text())
    assert stats["verdict"] == "helps" and stats["mmlu_delta"] == pytest.approx(0.1)
    assert "| accuracy |" in (probe.out / "report.md").read_text()
    assert "| truncated |" not in (probe.out / "report.md").read_text()
