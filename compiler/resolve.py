"""Pass 1: resolve references and inheritance.

Turns `model x extends base { ... }` into one resolved model dict (the exact shape the
runtime builds a Llama from), and every `from`/`data`/`model`/`scorer` name into the
block it names — or a diagnostic with a did-you-mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compiler.estimates import ffn_hidden_dim
from herdlang.diagnostics import Diagnostic, Severity, suggestion
from herdlang.schema import SOURCES, STAGES, RopeScaling
from herdlang.spec import Defined, Spec

MODEL_DEFAULTS = {
    "norm": {"kind": "rmsnorm", "eps": 1e-5},
    "ffn": {"kind": "swiglu", "multiplier": 1.0, "multiple_of": 256, "hidden": None},
    "rope": {"kind": "rope", "theta": 10_000.0, "scaling": None},
    "tied": False,
    "context": 8192,
    "init_std": 0.02,
}


@dataclass
class Resolved:
    spec: Spec
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_tokenizer: dict[str, str | None] = field(default_factory=dict)
    stage_model: dict[str, str] = field(default_factory=dict)  # stage → model name
    stage_source: dict[str, str | None] = field(default_factory=dict)  # stage → the stage it continues
    #: stages whose `from` chain never reaches a pre-training stage (a cycle, or an undefined
    #: name on the way): that error is reported once, and checks that follow the chain skip them
    broken_chain: set[str] = field(default_factory=set)
    diags: list[Diagnostic] = field(default_factory=list)
    _cycles: set[frozenset[str]] = field(default_factory=set)  # cycles already reported
    #: model → its fields merged with those it extends (None: a broken chain), see _merged_fields
    merged_fields: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def error(self, code: str, message: str, span, hint: str | None = None, notes: list[str] | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, hint, notes=notes or []))

    def warn(self, code: str, message: str, span, hint: str | None = None, notes: list[str] | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, hint, Severity.WARNING, notes or []))

    def first_report_of_cycle(self, members: list[str]) -> bool:
        """True once per cycle (whichever member it is found from)."""
        key = frozenset(members)
        if key in self._cycles:
            return False
        self._cycles.add(key)
        return True


def ref(res: Resolved, owner: Defined, loc: tuple, name: str, kinds: tuple[str, ...],
        what: str, extra: tuple[str, ...] = (), span=None) -> Defined | None:
    """Look up `name` among blocks of `kinds`; report H0301/H0302 at the value's span
    (or at `span`, for a value the block inherited)."""
    if name in extra:
        return None
    target = res.spec.find(name)
    span = span or owner.span(*loc)
    if target is None:
        pool = [n for k in kinds for n in res.spec.of(k)] + list(extra)
        res.error("H0301", f"{what} '{name}' is not defined", span, suggestion(name, pool, what))
        return None
    if target.kind not in kinds:
        pool = [n for k in kinds for n in res.spec.of(k)] + list(extra)
        res.error("H0302", f"'{name}' is a {target.kind} block, not a {what}", span,
                  suggestion(name, pool, what) or f"name a {' or '.join(kinds)} block")
        return None
    return target


def resolve(spec: Spec) -> Resolved:
    res = Resolved(spec)
    used = {d.config.model for d in spec.of("pretrain").values()}
    used |= {m for d in spec.of("scaling").values() for m in d.config.models}
    used |= {d.config.model for d in spec.of("checkpoint").values()}
    for name in spec.of("model"):
        if name in used:
            _resolve_model(res, name)
            continue
        # a model no stage trains (a base to extend, a library definition) need not be
        # complete; when it is, its shape is still checked
        fields = _merged_fields(res, name)
        if fields is not None and all(fields.get(k) is not None for k in ("layers", "dim", "heads")):
            _resolve_model(res, name)
    _resolve_stage_chain(res)
    return res


def posttrain_data(spec: Spec, stage: Defined) -> list[str]:
    """The dataset blocks a post-training stage trains on, SFT's first: its evals score the
    first of them unless they name one."""
    cfg = stage.config
    named = (cfg.sft and cfg.sft.data, cfg.rejection_sampling and cfg.rejection_sampling.prompts,
             cfg.dpo and cfg.dpo.data, cfg.reward_model and cfg.reward_model.data)
    return [d for d in named if d and d in spec.of("dataset")]


def stage_evals(spec: Spec, stage: Defined) -> list[str]:
    """A stage's evals. A post-training stage that lists none gets what its data can measure:
    greedy accuracy (`tasks`) where records have checkable answers, the held-out response
    loss (`response_loss`) on conversations and preference pairs, where an exact match with a
    free-form reference reply would stay near zero whatever the model learnt."""
    cfg = stage.config
    if stage.kind != "posttrain" or "evals" in cfg.model_fields_set:
        return list(cfg.evals)
    data = posttrain_data(spec, stage)
    fmt = spec.of("dataset")[data[0]].config.format if data else None
    return ["response_loss"] if fmt in ("messages", "preferences") else ["tasks"]


def _merged_fields(res: Resolved, name: str) -> dict[str, Any] | None:
    """A model's fields with those of the models it extends filled in (None when its
    `extends` chain is broken: the error is reported once, at the link that breaks it).

    Iterative, and memoized on `res`: a chain thousands of models long resolves in
    linear time instead of overflowing the stack (each model's fields are read once)."""
    merged_of = res.merged_fields
    if name in merged_of:
        return merged_of[name]
    models = res.spec.of("model")
    chain = [name]  # this model, then each ancestor not yet merged
    position = {name: 0}
    base: dict[str, Any] | None = {}
    while True:
        defined = models[chain[-1]]
        parent = defined.parent
        if parent is None:
            break
        if parent in merged_of:
            base = merged_of[parent]
            break
        if parent in position:
            cycle = chain[position[parent]:]
            if res.first_report_of_cycle(cycle):
                _report_cycle(res, cycle, "model", "extends", lambda d: d.block.parent_span,
                              "remove `extends` from one of them")
            base = None
            break
        target = res.spec.find(parent)
        if target is None or target.kind != "model":
            pool = list(models)
            code, msg = (("H0301", f"model '{parent}' is not defined") if target is None
                         else ("H0302", f"'{parent}' is a {target.kind}, not a model"))
            res.error(code, msg, defined.block.parent_span, suggestion(parent, pool, "model"))
            base = None
            break
        position[parent] = len(chain)
        chain.append(parent)
    for link in reversed(chain):  # the root (or the first merged ancestor) first
        if base is not None:
            base = _merge(base, models[link].config.model_dump(exclude_unset=True))
        merged_of[link] = base
    return merged_of[name]


def _merge(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """`own` over `base`; a call of the same kind (`rmsnorm(eps = ...)`) keeps the base's
    other arguments."""
    merged = dict(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and value.get("kind") == merged[key].get("kind"):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _resolve_model(res: Resolved, name: str) -> dict[str, Any] | None:
    if name in res.models:
        return res.models[name]
    defined = res.spec.of("model")[name]
    fields = _merged_fields(res, name)
    if fields is None:
        return None
    span = defined.name_span
    missing = [k for k in ("layers", "dim", "heads") if fields.get(k) is None]
    if missing:
        res.error("H0204", f"model '{name}' needs {', '.join(repr(m) for m in missing)}", span,
                  "set them here or in the model it extends")
        return None
    vocab = fields.get("vocab")
    tok_name = fields.get("tokenizer")
    if tok_name is not None:
        # an inherited tokenizer is reported at this model's name, not inside its parent
        local = "tokenizer" in defined.config.model_fields_set
        tok = ref(res, defined, ("tokenizer",) if local else (), tok_name, ("tokenizer",), "tokenizer",
                  span=None if local else span)
        if tok is None:
            return None
        tcfg = tok.config
        if vocab is None:
            if tcfg.vocab is None:
                res.error("H0204", f"tokenizer '{tok_name}' needs 'vocab' (its number of BPE ranks)", tok.name_span)
                return None
            vocab = tcfg.vocab + tcfg.special_tokens
    if vocab is None:
        res.error("H0204", f"model '{name}' needs a tokenizer (or an explicit 'vocab')", span,
                  "add `tokenizer = NAME`")
        return None
    dim, heads = fields["dim"], fields["heads"]
    attention = fields.get("attention") or {"kind": "gqa", "kv_heads": None, "document_mask": True}
    kv_heads = attention.get("kv_heads") or heads
    if attention.get("kind") == "mha":
        kv_heads = heads
    head_dim = fields.get("head_dim") or (dim // heads if heads else 0)
    if fields.get("head_dim") is None and dim % heads:
        res.error("H0401", f"model '{name}': dim {dim} is not divisible by heads {heads}", span,
                  f"use a dim that is a multiple of {heads}, or set head_dim")
        return None
    if heads % kv_heads:
        res.error("H0401", f"model '{name}': heads {heads} is not divisible by kv_heads {kv_heads}", span,
                  "grouped-query attention shares each KV head among heads / kv_heads query heads")
        return None
    if head_dim % 2:
        res.error("H0401", f"model '{name}': head_dim {head_dim} must be even for rotary embeddings", span)
        return None
    ffn = {**MODEL_DEFAULTS["ffn"], **(fields.get("ffn") or {})}
    norm = {**MODEL_DEFAULTS["norm"], **(fields.get("norm") or {})}
    rope = {**MODEL_DEFAULTS["rope"], **(fields.get("rope") or {})}
    # a nested call keeps only what the spec wrote (exclude_unset): the rest are its defaults
    scaling = rope.get("scaling") and {**RopeScaling().model_dump(), **rope["scaling"]}
    model = {
        "name": name,
        "tokenizer": tok_name,
        "vocab_size": int(vocab),
        "dim": int(dim),
        "layers": int(fields["layers"]),
        "heads": int(heads),
        "kv_heads": int(kv_heads),
        "head_dim": int(head_dim),
        "ffn_dim": int(ffn["hidden"] or ffn_hidden_dim(dim, ffn["multiplier"], ffn["multiple_of"])),
        "norm_eps": float(norm["eps"]),
        "rope_theta": float(rope["theta"]),
        "rope_scaling": None if not scaling else {
            "factor": float(scaling["factor"]),
            "low_freq_factor": float(scaling["low_freq_factor"]),
            "high_freq_factor": float(scaling["high_freq_factor"]),
            "original_context": int(scaling["original_context"]),
        },
        "tied_embeddings": bool(fields.get("tied", False)),
        "max_context": int(fields.get("context") or MODEL_DEFAULTS["context"]),
        "document_mask": bool(attention.get("document_mask", True)),
        "init_std": float(fields.get("init_std") or MODEL_DEFAULTS["init_std"]),
    }
    res.models[name] = model
    res.model_tokenizer[name] = tok_name
    return model


def _resolve_stage_chain(res: Resolved) -> None:
    """Which model each stage trains, following `from` to the pre-training stage."""
    spec = res.spec
    for name, defined in spec.of("pretrain").items():
        target = ref(res, defined, ("model",), defined.config.model, ("model",), "model")
        if target is not None and name not in res.stage_model and target.name in res.models:
            res.stage_model[name] = target.name
        res.stage_source[name] = None
    for name, defined in spec.of("checkpoint").items():  # a chain may start from a checkpoint made elsewhere
        target = ref(res, defined, ("model",), defined.config.model, ("model",), "model")
        if target is not None and target.name in res.models:
            res.stage_model[name] = target.name
        res.stage_source[name] = None
    for kind in STAGES[1:]:
        for name, defined in spec.of(kind).items():
            source = defined.config.from_
            target = ref(res, defined, ("from",), source, SOURCES, "stage")
            res.stage_source[name] = target.name if target else None
    pretrained = set(spec.of("pretrain")) | set(spec.of("checkpoint"))
    for kind in STAGES[1:]:
        for name in spec.of(kind):
            seen = [name]
            current = res.stage_source.get(name)
            while current is not None and current not in pretrained and current not in res.stage_model:
                if current in res.broken_chain:
                    current = None
                    break
                if current in seen:
                    cycle = seen[seen.index(current):]
                    if res.first_report_of_cycle(cycle):
                        _report_cycle(res, cycle, "stage", "continues from", lambda d: d.span("from"),
                                      "a stage continues from an earlier one: fix one `from`")
                    current = None
                    break
                seen.append(current)
                current = res.stage_source.get(current)
            if current is None:
                res.broken_chain.update(seen)  # the chain ends in a cycle or an unresolved `from`
            elif current in res.stage_model:
                for stage in seen:
                    res.stage_model[stage] = res.stage_model[current]


def _report_cycle(res: Resolved, cycle: list[str], what: str, verb: str, span_of, hint: str) -> None:
    """One H0303 for a cycle of `extends` or `from`, at its first member in the file, naming
    the whole loop: `a continues from b, which continues from a`."""
    order = {d.name: i for i, d in enumerate(res.spec.order)}
    start = min(range(len(cycle)), key=lambda i: order.get(cycle[i], len(order)))
    loop = cycle[start:] + cycle[:start]
    first = res.spec.find(loop[0])
    if len(loop) == 1:
        message = f"{what} '{loop[0]}' {verb} itself"
        hint = f"a {what} cannot {'extend' if what == 'model' else 'continue from'} itself"
    else:
        keyword = "extends" if what == "model" else "from"
        chain = [*loop, loop[0]]
        message = f"cycle of `{keyword}`: {chain[0]} {verb} {chain[1]}" + "".join(
            f", which {verb} {n}" for n in chain[2:])
    res.error("H0303", message, span_of(first), hint)
