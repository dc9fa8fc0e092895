"""`eval.choice`: the multiple-choice continuation eval (runtime/train/choice.py) on a
checkpoint, on the first data source's validation split."""

from __future__ import annotations

from pathlib import Path

from runtime.data.token_shards import read_meta as read_tokens_meta
from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register
from runtime.train import report
from runtime.train.choice import make_items, score_items
from runtime.train.evals import val_tokens
from runtime.train.loop import data_sources


@register("eval.choice")
def choice_eval(ctx: JobContext) -> None:
    model = ctx.load_model()
    p = ctx.config.get("params", {}) or {}
    n_items, n_opt = int(p.get("items", 300)), int(p.get("options", 4))
    context, cont = int(p.get("context", 48)), int(p.get("continuation", 16))
    if context + cont > model.args.max_context:
        raise JobFailed(f"{ctx.job_id}: choice items of {context} + {cont} tokens exceed the "
                        f"model's context {model.args.max_context}")
    sources = data_sources(ctx)
    name = sorted(sources)[0]
    tokens = val_tokens(sources[name], name)
    eos = read_tokens_meta(sources[name]).get("eos_id")
    try:
        items = make_items(tokens, eos, items=n_items, options=n_opt, context=context,
                           continuation=cont, seed=ctx.seed)
    except ValueError as exc:
        raise JobFailed(f"{ctx.job_id}: {exc}") from exc
    ctx.progress.start(len(items), "items")
    result = score_items(model, items)
    ctx.progress.set(float(len(items)))
    out = Path(ctx.out)
    write_json(out / "eval.json", {"source": name, "options": n_opt, "context": context,
                                   "continuation": cont, **result})
    write_json(out / "stats.json", {"choice_accuracy": round(result["accuracy"], 4),
                               "choice_nll": round(result["nll"], 4)})
    report.write(out, ["### Multiple-choice continuation", "",
                       f"{len(items)} items from `{name}` validation text: {context} tokens of "
                       f"context, the true next {cont} tokens among {n_opt} options "
                       f"(chance {result['chance']:.0%}).", "",
                       f"Accuracy **{result['accuracy']:.1%}**; NLL of the true continuation "
                       f"{result['nll']:.4f} nats/token.", ""])
    ctx.metric(choice_accuracy=result["accuracy"], choice_nll=result["nll"])
