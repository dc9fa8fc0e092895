"""`eval.response_loss`: held-out loss on a dataset's reference responses.

Each held-out conversation (a `messages` record; a preference pair's prompt + chosen; a
generated task with its answer) is encoded in the chat format SFT trains on, and the
assistant turns' content tokens are scored given everything before them: the NLL per token
over all of them (token-weighted, as SFT's loss) and its perplexity. This is what SFT
optimises, measured on records it never trained on, so it moves where exact-match accuracy on
free-form replies stays at zero. Preference pairs add how often the chosen response is more
likely per token than the rejected one, and the mean margin. Records longer than the context
are left out and counted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from runtime.data.tokenizer import load_tokenizer
from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register
from runtime.post import datasets as D
from runtime.post.chat import IGNORE, encode_completion, encode_dialog, shifted
from runtime.post.scoring import Scored, target_logprobs
from runtime.train import report

CHUNK = 64  # records scored between progress updates


def _per_token(scored: list[tuple[float, int]]) -> list[float]:
    return [lp / n if n else 0.0 for lp, n in scored]


@register("eval.response_loss")
def response_loss_eval(ctx: JobContext) -> None:
    ctx.need("checkpoint", "tokenizer", "dataset")
    params = ctx.config.get("params") or {}
    count = int(params.get("count", 200))
    name = params.get("data") or ctx.config.get("dataset") or Path(ctx.inputs["dataset"]).name
    conversations = D.load(ctx.inputs["dataset"], "val", "sft")[:count]
    pairs = D.load(ctx.inputs["dataset"], "val", "preferences")[:count]
    if not conversations:
        raise JobFailed(f"{ctx.job_id}: dataset {name!r} has no held-out conversations to score; "
                        "hint: raise its val_fraction or add records (format messages, preferences or tasks)")
    model = ctx.load_model()
    tok = load_tokenizer(ctx.inputs["tokenizer"])
    context = min(int(ctx.config.get("context") or model.args.max_context), model.args.max_context)

    def fits(seq: Scored) -> bool:
        return len(seq[0]) <= context and any(t != IGNORE for t in seq[1])

    # content tokens of assistant turns: the formatting tokens SFT masks by default are not scored
    encoded = [shifted(encode_dialog(tok, r["messages"]), mask_formatting=True) for r in conversations]
    kept = [s for s in encoded if fits(s)]
    pair_seqs = [(shifted(encode_completion(tok, r["prompt"], r["chosen"]), True),
                  shifted(encode_completion(tok, r["prompt"], r["rejected"]), True)) for r in pairs]
    kept_pairs = [(c, j) for c, j in pair_seqs if fits(c) and fits(j)]
    if not kept:
        raise JobFailed(f"{ctx.job_id}: all {len(encoded)} held-out conversations are longer than the context "
                        f"({context} tokens); hint: shorten them or evaluate a model with a longer context")
    left_out = len(encoded) - len(kept) + len(pair_seqs) - len(kept_pairs)
    if left_out:
        ctx.log.warning("%s: %d held-out record(s) longer than the context (%d tokens) left out",
                        ctx.job_id, left_out, context)
    model.eval()  # loaded for this job alone: nothing to restore
    ctx.progress.start(len(kept) + 2 * len(kept_pairs), "records")
    scored: list[tuple[float, int]] = []
    flat = kept + [s for pair in kept_pairs for s in pair]
    for i in range(0, len(flat), CHUNK):
        scored += target_logprobs(model, flat[i : i + CHUNK])
        ctx.progress.advance(len(flat[i : i + CHUNK]))
    responses = scored[: len(kept)]
    tokens = sum(n for _, n in responses)
    nll = -sum(lp for lp, _ in responses) / tokens
    out: dict[str, Any] = {"dataset": name, "response_nll": nll, "perplexity": math.exp(min(nll, 700.0)),
                           "records": len(kept), "tokens": tokens, "left_out_too_long": left_out,
                           "context": context}
    if kept_pairs:
        per_token = _per_token(scored[len(kept):])
        margins = [c - j for c, j in zip(per_token[0::2], per_token[1::2], strict=True)]
        out |= {"pairs": len(margins), "chosen_preferred": sum(m > 0 for m in margins) / len(margins),
                "mean_margin": sum(margins) / len(margins)}
    write_json(Path(ctx.out) / "eval.json", out)
    write_json(Path(ctx.out) / "stats.json", {"response_nll": round(nll, 4)})
    ctx.metric(stage="eval.response_loss", response_nll=nll)
    lines = [f"### Held-out response loss: `{name}`", "",
             f"{len(kept):,} held-out conversations, {tokens:,} response tokens: NLL **{nll:.4f}** "
             f"nats/token (perplexity {out['perplexity']:.2f})."]
    if kept_pairs:
        lines += ["", f"{out['pairs']:,} held-out preference pairs: the chosen response is the more likely one "
                      f"per token in **{out['chosen_preferred']:.1%}** (mean margin {out['mean_margin']:+.4f} "
                      "nats/token)."]
    if left_out:
        lines += ["", f"{left_out:,} record(s) longer than the context ({context} tokens) left out."]
    report.write(Path(ctx.out), lines + [""])
