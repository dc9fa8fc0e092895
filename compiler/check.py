"""Pass 2: semantic checks across blocks — what a type cannot say.

Mix weights sum to 100%, increments strictly increase, gates name known evals, a stage
continues from a checkpoint of the same model and tokenizer, budgets are usable.
"""

from __future__ import annotations

import glob
import math
import os
import re
from pathlib import Path
from typing import Any

from compiler.resolve import Resolved, ref, stage_evals
from herdlang import components
from herdlang.diagnostics import Diagnostic, Severity, suggestion
from herdlang.schema import SOURCES, STAGES
from herdlang.spec import Defined

WEIGHT_TOLERANCE = 1e-6


def check(res: Resolved) -> None:
    spec = res.spec
    for tok in spec.of("tokenizer").values():
        _check_tokenizer(res, tok)
    for data in spec.of("data").values():
        _check_data(res, data)
    for ckpt in spec.of("checkpoint").values():
        _check_checkpoint(res, ckpt)
    for mix in spec.of("mix").values():
        _check_weights(res, mix, mix.config.weights, (), ("data",), "mix")
    for stage in spec.of("pretrain").values():
        _check_training_data(res, stage, stage.config.data, ("data",))
        _check_pretrain(res, stage)
        if isinstance(stage.config.law, str):
            ref(res, stage, ("law",), stage.config.law, ("scaling",), "scaling sweep")
    for stage in spec.of("extend").values():
        _check_extend(res, stage)
    for stage in spec.of("anneal").values():
        _check_anneal(res, stage)
    for stage in spec.of("posttrain").values():
        _check_posttrain(res, stage)
    for kind in STAGES[1:]:
        for stage in spec.of(kind).values():
            _check_same_model(res, stage)
            _check_after_checkpoint(res, stage)
    for ds in spec.of("dataset").values():
        _check_dataset(res, ds)
    for ev in spec.of("eval").values():
        _check_eval_dataset(res, ev)
    for sweep in spec.of("scaling").values():
        _check_scaling(res, sweep)
    for probe in spec.of("probe").values():
        _check_probe(res, probe)
    for evaluation in spec.of("evaluate").values():
        _check_evaluate(res, evaluation)
    run = spec.of("run").get("run")
    if run is not None:
        _check_hardware(res, run)
        _check_parallel(res, run)
    _check_inputs(res)


def _check_scaling(res: Resolved, sweep: Defined) -> None:
    from compiler.estimates import param_counts

    cfg = sweep.config
    _check_training_data(res, sweep, cfg.data, ("data",))
    tokenizers = set()
    for i, name in enumerate(cfg.models):
        if name in cfg.models[:i]:  # one run per (budget, model): a size listed twice is a slip
            res.error("H0205", f"model '{name}' is listed twice in the sweep's 'models'", sweep.span("models", i),
                      "remove one of them")
            continue
        target = ref(res, sweep, ("models", i), name, ("model",), "model")
        if target is not None and name in res.models:
            tokenizers.add(res.models[name]["tokenizer"])
    if len(tokenizers) > 1:
        res.error("H0407", f"the models of sweep '{sweep.name}' use different tokenizers", sweep.span("models"),
                  "an IsoFLOP sweep compares sizes of one family: share the tokenizer")
    if any(b <= a for a, b in zip(cfg.budgets, cfg.budgets[1:], strict=False)):
        res.error("H0402", "budgets must be strictly increasing", sweep.span("budgets"))
    batch_tokens = max(1, round(cfg.batch[0].value / cfg.context)) * cfg.context
    for name in cfg.models:
        model = res.models.get(name)
        if model is None:
            continue
        params = param_counts(model)["total"]
        tokens = min(cfg.budgets) / (6 * params)
        if tokens < batch_tokens:
            res.error("H0406", f"budget {min(cfg.budgets):.3g} FLOPs gives model '{name}' only {tokens:,.0f} tokens, "
                      f"less than one batch of {batch_tokens:,}", sweep.span("budgets"),
                      "raise the smallest budget or use smaller models")
            break
    if cfg.forecast:
        _check_forecast(res, sweep, cfg.forecast)


def _check_forecast(res: Resolved, sweep: Defined, name: str) -> None:
    """A forecast needs an eval whose component says it reports accuracy and the answer's
    NLL (`forecastable`), so a new such eval is one new component, not an edit here."""
    defined = res.spec.of("eval").get(name)
    kind = str(defined.config.kind) if defined else name
    if components.get("eval", kind) is None:
        _check_eval_name(res, sweep, name, ("forecast",))
        return
    if defined is None and not _check_bare_eval(res, sweep, name, ("forecast",)):
        return
    usable = [n for n in components.names("eval") if getattr(components.get("eval", n), "forecastable", False)]
    if kind not in usable:
        res.error("H0407", f"forecast needs an eval that reports accuracy and the answer's NLL; "
                  f"'{name}' is a {kind} eval", sweep.span("forecast"),
                  f"use one of: {', '.join(usable)} (e.g. forecast = choice)")


def _check_tokenizer(res: Resolved, tok: Defined) -> None:
    cfg = tok.config
    if (cfg.train_on is None) == (cfg.file is None):
        res.error("H0407", f"tokenizer '{tok.name}' needs exactly one of 'train_on' or 'file'",
                  tok.name_span, "train_on = DATA trains a BPE; file = \"tokenizer.model\" loads ranks")
        return
    if cfg.train_on is not None:
        ref(res, tok, ("train_on",), cfg.train_on, ("data",), "data stage")
        if cfg.vocab is None:
            res.error("H0204", f"tokenizer '{tok.name}' trains a BPE and needs 'vocab'", tok.name_span,
                      "e.g. vocab = 128_000")


def _check_data(res: Resolved, data: Defined) -> None:
    steps = data.config.steps
    sources = [i for i, s in enumerate(steps) if s.step == "source"]
    if len(sources) != 1:
        res.error("H0407", f"data '{data.name}' needs exactly one source (found {len(sources)})",
                  data.name_span, "use one data block per source and combine them with a mix")
    elif sources[0] != 0:
        res.error("H0407", f"data '{data.name}': the source must come before dedup and filter steps",
                  data.span("steps", sources[0], key=True))


def _check_weights(res: Resolved, owner: Defined, weights: dict[str, float], loc: tuple,
                   kinds: tuple[str, ...], what: str) -> None:
    if not weights:
        res.error("H0403", f"{what} in '{owner.name}' has no weights", owner.span(*loc),
                  "e.g. web = 60%  code = 40%")
        return
    for name in weights:
        at = (*loc, name) if loc else (name,)
        # a mix names its parts by key (`web = 60%`): the caret goes under the name, not the share
        ref(res, owner, at, name, kinds, "data stage", span=owner.span(*at, key=True))
        if weights[name] <= 0:
            res.error("H0406", f"weight of '{name}' must be positive", owner.span(*loc, name))
    total = sum(weights.values())
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        res.error("H0403", f"weights in '{owner.name}' sum to {total * 100:.4g}%, not 100%",
                  owner.span(*loc) if loc else owner.name_span,
                  f"adjust them by {(1 - total) * 100:+.4g} points")


def _check_training_data(res: Resolved, owner: Defined, name: str, loc: tuple) -> None:
    ref(res, owner, loc, name, ("mix", "data"), "data or mix")


def _check_pretrain(res: Resolved, stage: Defined) -> None:
    cfg = stage.config
    ats = [s.at for s in cfg.batch[1:]]
    if cfg.batch[0].at is not None:
        res.error("H0407", "the first batch size applies from the start: remove its 'at'", stage.span("batch"))
    if any(a is None for a in ats):
        res.error("H0407", "each later batch size needs `at N tokens` (when it takes over)", stage.span("batch"),
                  "e.g. batch = 4M tokens -> 8M tokens at 252M tokens")
    elif any(b <= a for a, b in zip(ats, ats[1:], strict=False)):
        res.error("H0402", "batch ramp points must be strictly increasing", stage.span("batch"))
    for step in cfg.batch:
        if step.value < cfg.context:
            res.error("H0407", f"batch of {step.value:,} tokens is smaller than one {cfg.context:,}-token sequence",
                      stage.span("batch"), "a batch holds at least one sequence")
            break
    if cfg.batch[0].value > cfg.tokens:
        res.error("H0406", f"the stage's {cfg.tokens:,} tokens are fewer than one batch", stage.span("tokens"))
    for step in cfg.batch[1:]:
        if step.at is not None and step.at >= cfg.tokens:
            res.warn("H0603", f"batch size {step.value:,} takes over at {step.at:,} tokens, but '{stage.name}' "
                     f"trains on {cfg.tokens:,}: it is never used", stage.span("batch"),
                     "move its `at` inside the stage's tokens, or drop the step")
    _check_evals(res, stage, cfg.evals)


def _check_evals(res: Resolved, owner: Defined, evals: list[str]) -> None:
    """A stage's `evals`: each a known eval, each once (one job per name: `eval.STAGE.NAME`)."""
    for i, name in enumerate(evals):
        if name in evals[:i]:
            res.error("H0205", f"eval '{name}' is listed twice in 'evals'", owner.span("evals", i),
                      "remove one of them")
        elif _check_eval_name(res, owner, name, ("evals", i)) and name not in res.spec.of("eval"):
            _check_bare_eval(res, owner, name, ("evals", i))


def _check_bare_eval(res: Resolved, owner: Defined, name: str, loc: tuple) -> bool:
    """An eval component named directly (`evals = [multiple_choice]`) runs with its defaults;
    one with a required field (the dataset a multiple_choice eval scores) needs a named eval
    block that sets it: H0204, not a crash when the plan is made."""
    cls = components.get("eval", name)
    missing = [f for f, info in cls.model_fields.items() if info.is_required()] if cls else []
    if not missing:
        return True
    sets = "  ".join(f"{f} = ..." for f in missing)
    res.error("H0204", f"eval '{name}' needs {', '.join(repr(f) for f in missing)}, which only an eval "
              "block can set", owner.span(*loc),
              f"define one and list its name here: eval my_{name} {{ kind = {name}  {sets} }}")
    return False


def _check_eval_name(res: Resolved, owner: Defined, name: str, loc: tuple) -> bool:
    if components.get("eval", name) is not None or name in res.spec.of("eval"):
        return True
    pool = components.names("eval") + list(res.spec.of("eval"))
    res.error("H0404", f"'{name}' is not a known eval", owner.span(*loc), suggestion(name, pool, "eval"))
    return False


def _check_eval_dataset(res: Resolved, ev: Defined) -> None:
    """An eval block whose component reads a dataset (`dataset_field` in
    herdlang/components/evals.py): the name must be a dataset block (H0301/H0302) of a
    format the component reads (H0302), so `data = mmlu` pointing at a chat dataset is said
    now, not when the job starts."""
    kind = str(ev.config.kind)
    cls = components.get("eval", kind)
    field = getattr(cls, "dataset_field", None)
    data = (ev.config.model_extra or {}).get(field) if field else None
    if not isinstance(data, str):
        return
    target = ref(res, ev, (field,), data, ("dataset",), "dataset")
    formats = getattr(cls, "dataset_formats", None)
    if target is None or not formats or target.config.format in formats:
        return
    fits = [n for n, d in res.spec.of("dataset").items() if d.config.format in formats]
    hint = suggestion(data, fits, "dataset") if fits else \
        f'define one: dataset NAME {{ format = {formats[0]}  path = "..." }}'
    res.error("H0302", f"a {kind} eval reads a dataset with format = {' or '.join(formats)}, but "
              f"dataset '{data}' has format = {target.config.format}", ev.span(field), hint)


def _check_dataset(res: Resolved, ds: Defined) -> None:
    """A `format = choices` dataset is a benchmark read from a file and held out whole."""
    cfg = ds.config
    if cfg.format != "choices":
        return
    if cfg.generate is not None:
        res.error("H0407", f"dataset '{ds.name}' has format = choices, which is read from a file; "
                  "generate makes tasks", ds.span("generate"),
                  'use path = "questions.jsonl", or format = tasks to generate tasks')
    elif cfg.path is None:
        res.error("H0204", f"dataset '{ds.name}' has format = choices and needs 'path' (a JSONL file of "
                  "questions)", ds.name_span,
                  'e.g. path = "mmlu.jsonl" with lines like {"question": "...", "choices": [...], "answer": 0}')
    if "val_fraction" in cfg.model_fields_set:
        res.error("H0407", f"dataset '{ds.name}' has format = choices: a benchmark is all held out, so "
                  "val_fraction does not apply", ds.span("val_fraction"),
                  "remove it; the eval's count limits how many questions are scored")


# what train.extend measures after each increment, so what its gates can compare
GATE_KINDS = ("short_context_recovery", "needle")


def _check_extend(res: Resolved, stage: Defined) -> None:
    cfg = stage.config
    lengths = [s.value for s in cfg.context]
    if any(b <= a for a, b in zip(lengths, lengths[1:], strict=False)):
        res.error("H0402", "context increments must be strictly increasing", stage.span("context"),
                  " -> ".join(f"{n:,}" for n in lengths))
    source = res.stage_source.get(stage.name)
    # a broken `from` chain (reported once, in resolve) says nothing about where the ramp starts
    src_ctx = _stage_context(res, source) if source and stage.name not in res.broken_chain else None
    if src_ctx is not None and lengths and lengths[0] != src_ctx:
        res.error("H0407", f"the first context ({lengths[0]:,}) must be the context '{source}' ends at ({src_ctx:,})",
                  stage.span("context"), "the ramp starts where the previous stage left off")
    gated: dict[str, str] = {}
    for key in cfg.gate:
        defined = res.spec.of("eval").get(key)
        kind = str(defined.config.kind) if defined else key
        if components.get("eval", kind) is None:
            pool = components.names("eval") + list(res.spec.of("eval"))
            res.error("H0404", f"gate names an unknown eval '{key}'", stage.span("gate", key, key=True),
                      suggestion(key, pool, "eval"))
        elif kind not in GATE_KINDS:
            what = f"'{key}'" if key == kind else f"'{key}' (a {kind} eval)"
            res.error("H0404", f"{what} cannot gate a context extension",
                      stage.span("gate", key, key=True),
                      f"gates measure {' or '.join(GATE_KINDS)} (or an eval of those kinds); "
                      f"list {kind} in the stage's evals to report it")
        elif kind in gated:
            res.error("H0404", f"'{key}' and '{gated[kind]}' both gate on {kind}",
                      stage.span("gate", key, key=True), "one gate per measurement")
        else:
            gated[kind] = key
    if cfg.data:
        _check_training_data(res, stage, cfg.data, ("data",))
    _check_evals(res, stage, cfg.evals)


def _upstream(res: Resolved, name: str | None, pick):
    """Walk `from` links back from `name` until `pick(defined)` gives a value."""
    seen = set()
    while name is not None and name not in seen:
        seen.add(name)
        defined = res.spec.find(name)
        if defined is None:
            return None
        found = pick(defined)
        if found is not None:
            return found
        name = res.stage_source.get(name)
    return None


def _context_of(res: Resolved, defined: Defined) -> int | None:
    cfg = defined.config
    if defined.kind == "checkpoint":
        model = res.models.get(cfg.model)
        return cfg.context or (model["max_context"] if model else None)
    if defined.kind == "pretrain":
        return cfg.context
    if defined.kind == "extend":
        return cfg.context[-1].value
    if defined.kind == "anneal" and cfg.context:
        return cfg.context
    return None


def _data_of(defined: Defined) -> str | None:
    """The data a stage trains on: its `data`, or `mix` for an anneal's inline mix."""
    if defined.kind == "anneal" and defined.config.mix is not None:
        return "mix"
    data = getattr(defined.config, "data", None)
    return data if isinstance(data, str) and defined.kind in ("pretrain", "extend", "anneal") else None


def _stage_context(res: Resolved, name: str | None) -> int | None:
    return _upstream(res, name, lambda d: _context_of(res, d))


def _check_anneal(res: Resolved, stage: Defined) -> None:
    cfg = stage.config
    if cfg.mix is not None and cfg.data is not None:
        res.error("H0407", "give either an inline 'mix { }' or 'data', not both", stage.span("mix", key=True))
    if cfg.mix is not None:
        _check_weights(res, stage, cfg.mix, ("mix",), ("data", "mix"), "mix")
    if cfg.data is not None:
        _check_training_data(res, stage, cfg.data, ("data",))
    if (cfg.mix is None and cfg.data is None and stage.name not in res.broken_chain
            and _stage_data(res, stage.name) is None):
        res.error("H0204", f"anneal '{stage.name}' needs data (a mix or data stage)", stage.name_span)
    _check_evals(res, stage, cfg.evals)


# What each post-training step reads from its dataset, and which formats provide it
# (runtime/post/datasets.py derives SFT conversations from preference pairs, not the reverse).
_STEP_READS = {"reward_model": "preference pairs", "dpo": "preference pairs", "sft": "conversations",
               "rejection_sampling": "prompts"}
_FORMAT_GIVES = {"messages": {"conversations", "prompts"},
                 "preferences": {"conversations", "preference pairs", "prompts"},
                 "prompts": {"prompts"}, "tasks": {"conversations", "preference pairs", "prompts"},
                 "choices": set()}  # a benchmark: evaluated (multiple_choice), never trained on


def _check_dataset_format(res: Resolved, stage: Defined, step: str, data: str | None,
                          field: str = "data") -> None:
    """H0302 when a dataset's format cannot feed the step: caught at compile time, not when
    the job starts after days of pre-training ("the dataset has no preference pairs")."""
    target = res.spec.find(data) if data else None
    if target is None or target.kind != "dataset":
        return
    fmt, needs = target.config.format, _STEP_READS[step]
    if needs not in _FORMAT_GIVES[fmt]:
        usable = [f for f, gives in _FORMAT_GIVES.items() if needs in gives]
        note = " (a benchmark, for the multiple_choice eval)" if fmt == "choices" else ""
        res.error("H0302", f"{step} needs {needs}, but dataset '{data}' has format = {fmt}{note}",
                  stage.span(step, field), f"use a dataset with format = {' or '.join(usable)}")


def _stage_data(res: Resolved, name: str | None) -> str | None:
    return _upstream(res, name, _data_of)


def _check_posttrain(res: Resolved, stage: Defined) -> None:
    cfg = stage.config
    rm_name = cfg.reward_model.name if cfg.reward_model else None
    if cfg.reward_model:
        ref(res, stage, ("reward_model", "data"), cfg.reward_model.data, ("dataset",), "dataset")
    if cfg.rejection_sampling:
        rs = cfg.rejection_sampling
        if rs.scorer != "verifier" and rs.scorer != rm_name:
            pool = ["verifier"] + ([rm_name] if rm_name else [])
            res.error("H0301", f"scorer '{rs.scorer}' is neither 'verifier' nor this stage's reward model",
                      stage.span("rejection_sampling", "scorer"), suggestion(rs.scorer, pool, "scorer"))
        if rs.prompts:
            ref(res, stage, ("rejection_sampling", "prompts"), rs.prompts, ("dataset",), "dataset")
        elif not (cfg.sft and cfg.sft.data in res.spec.of("dataset")):
            res.error("H0204", "rejection_sampling needs 'prompts' (a dataset)", stage.span("rejection_sampling"))
    if cfg.sft:
        extra = ("rejection_sampling",) if cfg.rejection_sampling else ()
        ref(res, stage, ("sft", "data"), cfg.sft.data, ("dataset",), "dataset", extra)
    if cfg.dpo and cfg.dpo.data:
        ref(res, stage, ("dpo", "data"), cfg.dpo.data, ("dataset",), "dataset")
    for step, data in (("reward_model", cfg.reward_model and cfg.reward_model.data),
                       ("sft", cfg.sft and cfg.sft.data), ("dpo", cfg.dpo and cfg.dpo.data)):
        _check_dataset_format(res, stage, step, data)
    if cfg.rejection_sampling and cfg.rejection_sampling.prompts:
        _check_dataset_format(res, stage, "rejection_sampling", cfg.rejection_sampling.prompts, "prompts")
    if cfg.sft and cfg.sft.schedule and cfg.sft.schedule.warmup.tokens is not None:
        res.error("H0207", "post-training warmup is counted in steps or as a share of the steps",
                  stage.span("sft", "schedule"), "e.g. schedule = cosine(warmup = 10%) or warmup = 20 steps")
    if not any((cfg.sft, cfg.dpo, cfg.reward_model)):
        res.error("H0204", f"posttrain '{stage.name}' has nothing to do", stage.name_span,
                  "add sft { }, dpo { } or reward_model NAME { }")
    _check_evals(res, stage, stage_evals(res.spec, stage))


def _check_same_model(res: Resolved, stage: Defined) -> None:
    """A stage that names a model must name the one its checkpoint was trained as."""
    declared = getattr(stage.config, "model", None)
    if not declared:
        return
    target = ref(res, stage, ("model",), declared, ("model",), "model")
    inherited = res.stage_model.get(stage.name)
    if target is None or inherited is None or target.name == inherited:
        return
    a, b = res.models.get(target.name), res.models.get(inherited)
    if a is None or b is None:
        return
    same = all(a[k] == b[k] for k in ("vocab_size", "dim", "layers", "heads", "kv_heads", "ffn_dim", "tokenizer"))
    if not same:
        res.diags.append(Diagnostic(
            "H0405", f"'{stage.name}' continues from a checkpoint of model '{inherited}', not '{target.name}'",
            stage.span("model"), "the architecture, tokenizer and vocabulary must match the checkpoint",
            Severity.ERROR))


def _check_checkpoint(res: Resolved, ckpt: Defined) -> None:
    """A checkpoint made elsewhere: every stage after it reads text, so its model needs a tokenizer."""
    model = res.models.get(ckpt.config.model)
    if model is not None and model["tokenizer"] is None:
        res.error("H0204", f"checkpoint '{ckpt.name}': model '{model['name']}' names no tokenizer", ckpt.span("model"),
                  "the stages after it read text: give the model `tokenizer = NAME`, e.g. a block "
                  "`tokenizer NAME { file = \"<checkpoint folder>/tokenizer.json\" }`")


def _root_checkpoint(res: Resolved, name: str) -> str | None:
    """The checkpoint block a stage's `from` chain starts at, or None (a pre-training stage,
    or a broken chain, reported elsewhere)."""
    if name in res.broken_chain:
        return None
    seen: set[str] = set()
    current: str | None = name
    while current is not None and current not in seen:
        seen.add(current)
        defined = res.spec.find(current)
        if defined is None:
            return None
        if defined.kind == "checkpoint":
            return current
        current = res.stage_source.get(current)
    return None


def _sets_batch(defined: Defined) -> bool | None:
    if defined.kind == "pretrain" or (defined.kind in ("extend", "anneal") and defined.config.batch):
        return True
    return None


def _sets_optimizer(defined: Defined) -> bool | None:
    cfg = defined.config
    if defined.kind == "pretrain" or (defined.kind == "extend" and cfg.optimizer) \
            or (defined.kind == "anneal" and cfg.peak_lr):
        return True
    return None


def _check_after_checkpoint(res: Resolved, stage: Defined) -> None:
    """A checkpoint made elsewhere brings weights only. A stage after it that trains on text
    needs the data, batch and optimizer a pre-training stage would otherwise pass on; a
    post-training stage's evals that read the pre-training mix need a stage with data on the
    way. Each gap is reported once, at the first stage that has it."""
    root = _root_checkpoint(res, stage.name)
    if root is None:
        return
    source = res.stage_source.get(stage.name)
    inherited = source is not None and source != root and res.spec.find(source).kind in ("extend", "anneal")
    needs = {"batch": _sets_batch, ("optimizer" if stage.kind == "extend" else "peak_lr"): _sets_optimizer}
    missing = []
    if stage.kind == "extend" and _stage_data(res, stage.name) is None:
        missing.append("data")  # anneal reports its own missing data
    if stage.kind in ("extend", "anneal"):
        for item, sets in needs.items():
            if _upstream(res, stage.name, sets) is None and not (inherited and _upstream(res, source, sets) is None):
                missing.append(item)
    via = "" if source == root else f" (through '{source}')"
    if missing:
        example = {"data": "data = web", "batch": "batch = 1M tokens",
                   "optimizer": "optimizer = adamw(lr = 1e-5)", "peak_lr": "peak_lr = 1e-5"}
        res.error("H0204", f"{stage.kind} '{stage.name}' continues from checkpoint '{root}'{via}, which brings "
                  f"weights only: set {', '.join(repr(m) for m in missing)}", stage.name_span,
                  "e.g. " + "  ".join(example[m] for m in missing))
    if stage.kind != "posttrain" or _stage_data(res, stage.name) is not None:
        return
    for i, name in enumerate(stage_evals(res.spec, stage)):
        defined = res.spec.of("eval").get(name)
        kind = str(defined.config.kind) if defined else name
        cls = components.get("eval", kind)
        if cls is not None and getattr(cls, "reads_corpus", True):
            res.error("H0204", f"eval '{name}' reads held-out pre-training text, and '{stage.name}' continues from "
                      f"checkpoint '{root}'{via} with no data stage on the way", stage.span("evals", i),
                      "use evals that read a dataset (tasks, multiple_choice), or anneal on a data stage first")


def _check_probe(res: Resolved, probe: Defined) -> None:
    cfg = probe.config
    ref(res, probe, ("from",), cfg.from_, STAGES, "stage")
    ref(res, probe, ("new",), cfg.new, ("data",), "data stage")
    _check_evals(res, probe, cfg.evals)


def _check_evaluate(res: Resolved, evaluation: Defined) -> None:
    """`from` names a stage or checkpoint block; the evals exist; one that reads held-out
    text has some: the block's `data`, else the data of a stage on the `from` chain."""
    cfg = evaluation.config
    ref(res, evaluation, ("from",), cfg.from_, SOURCES, "stage or checkpoint")
    if cfg.data is not None:
        _check_training_data(res, evaluation, cfg.data, ("data",))
    _check_evals(res, evaluation, cfg.evals)
    if cfg.data is not None or cfg.from_ not in res.stage_source or _stage_data(res, cfg.from_) is not None:
        return
    for i, name in enumerate(cfg.evals):
        defined = res.spec.of("eval").get(name)
        cls = components.get("eval", str(defined.config.kind) if defined else name)
        if cls is not None and getattr(cls, "reads_corpus", True):
            res.error("H0204", f"eval '{name}' reads held-out pre-training text, and '{cfg.from_}' has none on its "
                      "`from` chain", evaluation.span("evals", i),
                      "name the text: data = NAME (a data block or mix)")


# -- the run's hardware and layout ----------------------------------------------------------------


def _check_hardware(res: Resolved, run: Defined) -> None:
    """A GPU the estimates know, or one whose peak and memory the spec states."""
    from compiler.estimates import GPUS

    hw = run.config.hardware
    if hw.gpu in GPUS:
        return
    stated = {"peak_bf16_tflops": hw.peak_bf16_tflops, "memory": hw.memory}
    known = ", ".join(GPUS)
    example = f"hardware {{ gpu = {hw.gpu}  peak_bf16_tflops = 400  memory = 96 GiB }}"
    if not any(v is not None for v in stated.values()):
        best = suggestion(hw.gpu, GPUS)
        hint = best if best and best.startswith("did you mean") else f"known GPUs: {known}"
        res.error("H0203", f"unknown GPU '{hw.gpu}'", run.span("hardware", "gpu"), hint,
                  notes=[f"known GPUs: {known}", f"for another GPU, state its figures: `{example}`"])
        return
    for key, value in stated.items():
        if value is None:
            res.error("H0204", f"GPU '{hw.gpu}' is not one herd knows: it needs '{key}' as well",
                      run.span("hardware", "gpu"), f"e.g. `{example}`", notes=[f"known GPUs: {known}"])


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check_parallel(res: Resolved, run: Defined) -> None:
    """tensor × pipeline × context × data = the GPU count; tensor parallelism splits every
    trained model's query and KV heads; each pipeline stage holds at least one layer."""
    hw, par = run.config.hardware, run.config.parallel
    tp, pp, cp, dp = par.tensor, par.pipeline, par.context, par.data
    inner = tp * pp * cp
    where = run.span("parallel", key=True)
    if dp is not None and inner * dp != hw.count:
        fix = (f"data = {hw.count // inner:,} fits" if hw.count % inner == 0
               else f"{hw.count:,} is not a multiple of tensor × pipeline × context = {inner:,}")
        res.error("H0408", f"parallel layout tensor {tp} × pipeline {pp} × context {cp} × data {dp} = "
                  f"{inner * dp:,} GPUs, but hardware.count is {hw.count:,}", where,
                  f"the four must multiply to the GPU count ({fix})")
    elif dp is None and hw.count % inner:
        res.error("H0408", f"tensor {tp} × pipeline {pp} × context {cp} = {inner:,} does not divide the "
                  f"{hw.count:,} GPUs of hardware.count", where,
                  "data parallelism takes the rest, so the count must be a multiple of their product")
    trained = list(dict.fromkeys([*res.stage_model.values(),
                                  *(m for d in res.spec.of("scaling").values() for m in d.config.models)]))
    for name in trained:
        model = res.models.get(name)
        if model is None:
            continue
        heads, kv = model["heads"], model["kv_heads"]
        if heads % tp or kv % tp:
            fits = ", ".join(str(d) for d in _divisors(math.gcd(heads, kv)))
            res.error("H0408", f"tensor = {tp} does not divide the {heads} query heads and {kv} KV heads "
                      f"of model '{name}'", run.span("parallel", "tensor"),
                      f"tensor parallelism gives each GPU whole heads: use one of {fits}")
        if pp > model["layers"]:
            res.error("H0408", f"pipeline = {pp} is more than the {model['layers']} layers of model '{name}'",
                      run.span("parallel", "pipeline"), "each pipeline stage holds at least one layer")


# -- local inputs -------------------------------------------------------------------------------------


_MAGIC = re.compile(r"[*?[]")
#: what to write for the files in a folder named where a step reads files: a glob where the
#: step takes one (the default: `*.jsonl`), else a file name
_IN_A_FOLDER = {("source", "parquet"): "*.parquet", ("source", "text"): "*.txt", ("filter", "dirty_words"): "en.txt"}


def _check_inputs(res: Resolved) -> None:
    """H0604: a data file, glob, word list, dataset or tokenizer file that is not there.

    A warning, not an error: the files may be written later or exist only where the plan
    runs. One stat or one lazy glob per path, nothing read. Paths under one folder that is
    missing altogether (the whole data tree of a cluster spec) are one warning."""
    spec = res.spec
    if not Path(spec.path).is_file():  # a spec held in memory (an unsaved editor buffer) has no folder
        return
    # (what, path, span, what a file path in a folder looks like: a glob for inputs that take one)
    found: list[tuple[str, str, Any, str]] = []
    for data in spec.of("data").values():
        for i, step in enumerate(data.config.steps):
            cls = components.get(step.step, step.kind)
            if cls is None or not getattr(cls, "input_paths", ()):
                continue
            try:
                config = cls.model_validate(step.model_extra or {})
            except ValueError:  # reported by validation already
                continue
            for field_name, index, path in components.input_paths(config):
                found.append((f"{step.step} {step.kind}", path, _input_span(data, i, cls, field_name, index),
                              _IN_A_FOLDER.get((step.step, step.kind), "*.jsonl")))
    for ds in spec.of("dataset").values():
        if ds.config.path:
            found.append((f"dataset {ds.name}", ds.config.path, ds.span("path"), "train.jsonl"))
    for tok in spec.of("tokenizer").values():
        if tok.config.file:
            found.append((f"tokenizer {tok.name}", tok.config.file, tok.span("file"), "tokenizer.json"))
    for ckpt in spec.of("checkpoint").values():
        found.append((f"checkpoint {ckpt.name}", ckpt.config.path, ckpt.span("path"), ""))
    missing: dict[Path | None, list[tuple[str, str, Any, Path]]] = {}
    folders = {f"checkpoint {c.name}" for c in spec.of("checkpoint").values()}  # paths that name a folder
    for what, path, span, example in found:
        full = Path(path) if Path(path).is_absolute() else spec.root / path
        try:
            if not _exists(full):
                group = _missing_folder(full / "-" if what in folders else full)
                missing.setdefault(group, []).append((what, path, span, full))
            elif what in folders and not any((full / name).is_file() for name in ("config.json", "meta.json")):
                found_what = "is a file" if full.is_file() else "holds no config.json (Hugging Face) or meta.json (herd)"
                res.warn("H0604", f"{what}: '{path}' {found_what}", span,
                         "`path` names the folder of a Hugging Face Llama (config.json + safetensors) or a herd "
                         "checkpoint" + (f": '{Path(path).parent}'?" if full.is_file() else ""))
            elif what not in folders and full.is_dir():  # the run reads files: it would say "not found"
                inside = f"{path.rstrip('/')}/{example}"
                res.warn("H0604", f"{what}: '{path}' is a folder, not a file", span,
                         f"name the files in it with a glob: \"{inside}\"" if example.startswith("*")
                         else f"name the file in it, e.g. \"{inside}\"")
        except (OSError, ValueError) as exc:  # a name too long, a folder that may not be searched, a NUL
            why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "a file name cannot contain a NUL character"
            res.warn("H0604", f"{what}: '{_abridged(path)}' cannot be checked: {why}", span,
                     "herd could not look for it here; fine if it exists where the plan runs, otherwise "
                     "check the path (and that its folders may be read)")
    hint = "fine if it is made later or exists only where the plan runs; otherwise check the path"
    for folder, paths in missing.items():
        if folder is None or len(paths) == 1:
            for what, path, span, full in paths:
                shown = _shown_path(full)
                verb = "matches no file" if _MAGIC.search(path) else "does not exist"
                res.warn("H0604", f"{what}: '{path}' {verb}", span, hint,
                         notes=[f"looked for {shown}"] if shown != path else [])
            continue
        span = paths[0][2]
        shown = _shown_path(folder) + "/"
        res.warn("H0604", f"the folder {shown} does not exist: {len(paths)} input paths under it are missing",
                 span, hint,
                 notes=[f"{p.path}:{p.line}: {w}: '{q}'" for w, q, p, _ in paths])


def _input_span(data: Defined, i: int, cls: Any, field_name: str, index: int | None) -> Any:
    """The span of a path inside a data step, written positionally (`jsonl("a")`) or by key."""
    locs = []
    positional = getattr(cls, "positional", ())
    if field_name in positional:
        pos = f"#{positional.index(field_name)}"
        locs += [("steps", i, pos, index), ("steps", i, pos)] if index is not None else [("steps", i, pos)]
    locs += [("steps", i, field_name, index), ("steps", i, field_name)] if index is not None else \
        [("steps", i, field_name)]
    for loc in locs:
        if tuple(loc) in data.smap.values:
            return data.smap.values[tuple(loc)]
    return data.span("steps", i, key=True)


def _shown_path(path: Path) -> str:
    """A path as the diagnostics show it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _exists(path: Path) -> bool:
    """Whether the file, folder or (lazily) one file of the glob is there. OSError when the
    system cannot say: a name too long, a folder on the way that may not be searched
    (`Path.exists` is False only for a missing path), ValueError for a NUL in the name;
    the caller warns with the reason."""
    text = str(path)
    if "\0" in text:  # (`Path.exists` would say False: "does not exist")
        raise ValueError("embedded null byte")
    if not _MAGIC.search(text) or path.exists():  # a real name with glob characters: `data[v3]`
        return path.exists()
    return any(os.path.isfile(p) for p in glob.iglob(text, recursive=True))


def _abridged(path: str, most: int = 80) -> str:
    """A path short enough for a one-line message (the caret shows it whole), a NUL shown
    as `\\0` (a terminal would drop it unseen)."""
    path = path.replace("\0", "\\0")
    return path if len(path) <= most else f"{path[:most // 2]}…{path[-(most // 4):]}"


def _missing_folder(path: Path) -> Path | None:
    """The outermost missing folder above `path` (None when its own folder exists)."""
    text = str(path)
    magic = _MAGIC.search(text)
    base = Path(text[:magic.start()]).parent if magic else path.parent
    if base.exists():
        return None
    while not base.parent.exists() and base.parent != base:
        base = base.parent
    return base
