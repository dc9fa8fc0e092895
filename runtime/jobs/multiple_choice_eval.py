"""`eval.multiple_choice`: a multiple-choice benchmark (MMLU, ARC, HellaSwag style) from a
`format = choices` dataset, scored as a cloze task.

Each question becomes one sequence per choice: `<|begin_of_text|>` + the prompt
(`Question: {question}\\nAnswer:`, or the question alone with `prompt = plain`) + ` {choice}`.
A choice's score is the sum of its tokens' log-probabilities after the prompt, divided by
its token count (`normalize = tokens`) or its characters (`chars`, acc_norm) or not at all
(`none`, acc); the best-scoring choice is the model's answer (a tie goes to the first). The
result has what the Llama 3 paper's accuracy forecast needs: accuracy, chance (the mean of
1/choices) and the correct answer's NLL per token.

A question whose prompt and longest choice exceed the context loses the start of its prompt
(the text nearest the answer is kept, `<|begin_of_text|>` too), the same cut for every
choice; one whose longest choice leaves no room for any prompt token is skipped. Both are
counted in `eval.json` (`fit`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.data.tokenizer import Tokenizer, load_tokenizer
from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register
from runtime.model.llama import Llama
from runtime.post import datasets as D
from runtime.post.chat import IGNORE
from runtime.post.scoring import target_logprobs
from runtime.train import report

PROMPTS = {"qa": "Question: {question}\nAnswer:", "plain": "{question}"}
NORMALIZE = ("none", "tokens", "chars")
QUESTIONS_PER_CHUNK = 256  # progress is reported after each chunk (sorted and batched within it)


@dataclass
class Question:
    prompt: list[int]  # token ids, <|begin_of_text|> first, already cut to fit the context
    choices: list[list[int]]  # token ids of " {choice}" for each choice
    chars: list[int]  # characters of each choice (normalize = chars)
    answer: int
    truncated: bool = False


def encode(tok: Tokenizer, rec: dict[str, Any], prompt: str, context: int) -> Question | None:
    """A record as token ids that fit `context` (the model's input is a sequence without its
    last token), or None when its longest choice leaves no room for a prompt token."""
    ids = [tok.bos_id] + tok.encode(PROMPTS[prompt].format(question=rec["question"]))
    choices = [tok.encode(" " + c) for c in rec["choices"]]
    room = context + 1 - max(len(c) for c in choices)  # prompt tokens that fit before every choice
    if room < 2:  # <|begin_of_text|> alone: the question would not be asked at all
        return None
    truncated = len(ids) > room
    if truncated:
        ids = ids[:1] + ids[len(ids) - (room - 1):]
    return Question(ids, choices, [len(c) for c in rec["choices"]], int(rec["answer"]), truncated)


def choice_logprobs(model: Llama, questions: list[Question]) -> list[list[tuple[float, int]]]:
    """(summed log-probability, token count) of every choice of every question after its
    prompt (`runtime.post.scoring`: batched, the model's own per-token loss)."""
    where = [(q, c) for q in range(len(questions)) for c in range(len(questions[q].choices))]
    sequences = []
    for q, c in where:
        prompt, cont = questions[q].prompt, questions[q].choices[c]
        sequences.append(((prompt + cont)[:-1], [IGNORE] * (len(prompt) - 1) + cont))
    out: list[list[tuple[float, int]]] = [[(0.0, 0)] * len(q.choices) for q in questions]
    for (q, c), scored in zip(where, target_logprobs(model, sequences), strict=True):
        out[q][c] = scored
    return out


def pick(scores: list[tuple[float, int]], chars: list[int], normalize: str) -> int:
    """The model's answer: the choice with the highest (normalised) log-likelihood; the first
    of equal ones."""
    values = [lp if normalize == "none" else lp / (n if normalize == "tokens" else max(1, ch))
              for (lp, n), ch in zip(scores, chars, strict=True)]
    return max(range(len(values)), key=lambda k: (values[k], -k))


def score(model: Llama, questions: list[Question], normalize: str,
          on_chunk: Callable[[int], object] | None = None) -> dict[str, Any]:
    """Accuracy (under each normalisation, and `normalize`'s as `accuracy`), chance and the
    correct answer's NLL per token (the mean over questions), with each question's pick."""
    was_training = model.training
    model.eval()
    picks: dict[str, list[int]] = {n: [] for n in NORMALIZE}
    nll = 0.0
    try:
        for start in range(0, len(questions), QUESTIONS_PER_CHUNK):
            chunk = questions[start : start + QUESTIONS_PER_CHUNK]
            for q, scores in zip(chunk, choice_logprobs(model, chunk), strict=True):
                for n in NORMALIZE:
                    picks[n].append(pick(scores, q.chars, n))
                lp, count = scores[q.answer]
                nll += -lp / count
            if on_chunk is not None:
                on_chunk(len(chunk))
    finally:
        model.train(was_training)
    answers = [q.answer for q in questions]
    by = {n: sum(p == a for p, a in zip(picks[n], answers, strict=True)) / len(questions) for n in NORMALIZE}
    return {"accuracy": by[normalize], "accuracy_by_normalize": by,
            "correct": sum(p == a for p, a in zip(picks[normalize], answers, strict=True)),
            "count": len(questions), "chance": sum(1 / len(q.choices) for q in questions) / len(questions),
            "nll": nll / len(questions), "picks": picks[normalize]}


def _cell(text: str, limit: int = 80) -> str:
    text = text.replace("`", "'").replace("|", "\\|").replace("\n", "⏎")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register("eval.multiple_choice")
def multiple_choice_eval(ctx: JobContext) -> None:
    ctx.need("checkpoint", "tokenizer", "dataset")
    params = ctx.config.get("params") or {}
    normalize, prompt = str(params.get("normalize", "none")), str(params.get("prompt", "qa"))
    if normalize not in NORMALIZE or prompt not in PROMPTS:
        raise JobFailed(f"{ctx.job_id}: normalize must be one of {', '.join(NORMALIZE)} and prompt one "
                        f"of {', '.join(PROMPTS)} (got {normalize!r}, {prompt!r})")
    meta = D.load_meta(ctx.inputs["dataset"])
    name = params.get("data") or Path(ctx.inputs["dataset"]).name
    if meta.get("format") != "choices":
        raise JobFailed(f"{ctx.job_id}: dataset {name!r} has format {meta.get('format')!r}; the "
                        "multiple_choice eval reads format = choices")
    records = D.load(ctx.inputs["dataset"], "val", "choices")
    total = len(records)
    count = params.get("count")
    if count is not None and int(count) < total:  # a seeded sample, in file order
        records = [records[i] for i in sorted(random.Random(ctx.seed).sample(range(total), int(count)))]
    model = ctx.load_model()
    tok = load_tokenizer(ctx.inputs["tokenizer"])
    context = min(int(ctx.config.get("context") or model.args.max_context), model.args.max_context)
    encoded = [(rec, encode(tok, rec, prompt, context)) for rec in records]
    kept = [(rec, q) for rec, q in encoded if q is not None]
    skipped = len(encoded) - len(kept)
    if not kept:
        raise JobFailed(f"{ctx.job_id}: none of the {len(records)} questions fits the context "
                        f"({context} tokens) with its longest choice; hint: shorten the choices or "
                        "evaluate a model with a longer context")
    if skipped:
        ctx.log.warning("%s: %d of %d questions skipped: a choice alone fills the context (%d tokens)",
                        ctx.job_id, skipped, len(records), context)
    questions = [q for _, q in kept]
    truncated = sum(q.truncated for q in questions)
    ctx.progress.start(len(questions), "questions")
    result = score(model, questions, normalize, on_chunk=ctx.progress.advance)
    picks = result.pop("picks")
    per_subject: dict[str, list[int]] = {}
    for (rec, q), p in zip(kept, picks, strict=True):
        if "subject" in rec:
            per_subject.setdefault(rec["subject"], []).append(int(p == q.answer))
    out = Path(ctx.out)
    write_json(out / "eval.json", {
        **result, "dataset": name, "normalize": normalize, "prompt": prompt,
        "per_subject": {s: {"accuracy": sum(v) / len(v), "count": len(v)} for s, v in sorted(per_subject.items())},
        "fit": {"questions": total, "sampled": len(records), "skipped_too_long": skipped,
                "truncated": truncated, "context": context}})
    write_json(out / "stats.json", {"multiple_choice_accuracy": round(result["accuracy"], 4),
                                    "multiple_choice_nll": round(result["nll"], 4)})
    ctx.metric(stage="eval.multiple_choice", multiple_choice_accuracy=result["accuracy"],
               multiple_choice_nll=result["nll"])
    how = {"none": "summed log-likelihood", "tokens": "log-likelihood per token",
           "chars": "log-likelihood per character"}[normalize]
    sample = f" (a seeded sample of {len(records):,} of {total:,})" if len(records) < total else ""
    lines = [f"### Multiple choice: `{name}`", "",
             f"{len(questions):,} questions{sample}, each choice scored by its {how} after the "
             f"prompt (`{prompt}`).", "",
             f"Accuracy **{result['accuracy']:.1%}** (chance {result['chance']:.1%}); NLL of the "
             f"correct answer {result['nll']:.4f} nats/token.", "",
             "| normalize | accuracy |", "|---|---:|"]
    lines += [f"| {n}{' (reported)' if n == normalize else ''} | {a:.1%} |"
              for n, a in result["accuracy_by_normalize"].items()]
    if skipped or truncated:
        lines += ["", f"{truncated:,} question(s) cut from the left to fit the context ({context} tokens); "
                      f"{skipped:,} skipped (a choice alone fills it)."]
    if per_subject:
        lines += ["", "| subject | questions | accuracy |", "|---|---:|---:|"]
        lines += [f"| {_cell(s)} | {len(v)} | {sum(v) / len(v):.1%} |" for s, v in sorted(per_subject.items())[:60]]
        if len(per_subject) > 60:
            lines += [f"| … {len(per_subject) - 60} more in eval.json | | |"]
    lines += ["", "| question | answer | model's pick |", "|---|---|---|"]
    lines += [f"| {_cell(rec['question'])} | {_cell(rec['choices'][q.answer], 40)} | "
              f"{_cell(rec['choices'][p], 40)} |" for (rec, q), p in list(zip(kept, picks, strict=True))[:5]]
    report.write(out, lines + [""])
