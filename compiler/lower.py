"""Passes 3 and 4: estimate every stage and lower the spec to a Plan of jobs.

Job ids read like paths: `data.web.dedup_minhash`, `tokenizer.llama3`, `tokens.web.llama3`,
`train.base`, `train.long_context.16K`, `post.chat.r1.dpo`. Each job's config is fully
resolved (no defaults left for the runtime to guess), so the fingerprint captures it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from compiler import estimates as est
from compiler.plan import Job, Plan
from compiler.resolve import Resolved, posttrain_data, stage_evals
from herdlang import components
from herdlang.schema import SOURCES, AdamW
from herdlang.spec import Defined


def _length_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 and n >= 1024 else str(n)


class Lowering:
    def __init__(self, res: Resolved):
        self.res = res
        self.spec = res.spec
        run = self.spec.of("run").get("run")
        self.run = run.config if run else None
        self.plan = Plan(spec_name=run_folder_name(self.spec.name), spec_path=self.spec.path, spec_sha256=self.spec.sha256)
        self.seed = self.run.seed if self.run else 0
        self.data_out: dict[str, str] = {}  # data stage → job id of its final documents
        self.tokenizer_job: dict[str, str] = {}
        self.tokens_job: dict[tuple[str, str], str] = {}
        self.stage_out: dict[str, str] = {}  # stage → job id of its final checkpoint
        self.stage_ctx: dict[str, int] = {}
        self.stage_data: dict[str, dict[str, Any]] = {}  # stage → {"weights", "max_epochs", "seed"}
        self.stage_batch: dict[str, list[dict[str, Any]]] = {}
        self.stage_optimizer: dict[str, dict[str, Any]] = {}
        self.stage_model: dict[str, dict[str, Any]] = {}  # stage → the model its checkpoint holds
        self.dataset_job: dict[str, str] = {}

    # -- settings -------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        run = self.run
        hw = run.hardware if run else None
        par = run.parallel if run else None
        gpus = hw.count if hw else 1
        tp, pp, cp = (par.tensor, par.pipeline, par.context) if par else (1, 1, 1)
        dp = (par.data if par and par.data else max(1, gpus // (tp * pp * cp)))
        gpu = est.GPUS.get(hw.gpu if hw else "h100")
        # a custom GPU (or an override) states its own figures; check.py insists on both for one
        # the table does not know
        peak = hw.peak_bf16_tflops if hw and hw.peak_bf16_tflops else (gpu.peak_bf16_tflops if gpu else None)
        memory_gib = hw.memory / 2**30 if hw and hw.memory else (gpu.memory_gib if gpu else None)
        return {
            "seed": self.seed,
            "device": run.device if run else "auto",
            "workers": run.workers if run else 2,
            "precision": run.precision if run else "bf16",
            "spec_dir": str(self.spec.root),
            "hardware": {
                "gpu": gpu.name if gpu else (hw.gpu if hw else "h100"),
                "count": gpus,
                "mfu": hw.mfu if hw else 0.4,
                "peak_bf16_tflops": peak,
                "memory_gib": memory_gib,
            },
            "parallel": {
                "tensor": tp, "pipeline": pp, "context": cp, "data": dp,
                "fsdp": par.fsdp if par else True,
                "activation_checkpointing": par.activation_checkpointing if par else False,
                "micro_batch": par.micro_batch if par else 1,
            },
        }

    # -- lowering -----------------------------------------------------------------------------------

    def lower(self) -> Plan:
        self.plan.settings = self.settings()
        for name, model in self.res.models.items():
            counts = est.param_counts(model)
            self.plan.models[name] = {**model, "params": counts["total"], "param_breakdown": counts}
        for defined in self.spec.of("data").values():
            self._data(defined)
        for defined in self.spec.of("tokenizer").values():
            self._tokenizer(defined)
        for defined in self.spec.of("dataset").values():
            self._dataset(defined)
        for defined in self.spec.of("scaling").values():
            self._scaling(defined)
        for defined in self._stages_in_order():
            getattr(self, f"_{defined.kind}")(defined)
        for defined in self.spec.of("probe").values():
            self._probe(defined)
        for defined in self.spec.of("evaluate").values():
            self._evaluate(defined)
        return self.plan.seal()

    def _stages_in_order(self) -> list[Defined]:
        """Stages sorted so that each comes after the stage it continues from."""
        stages = [d for d in self.spec.order if d.kind in SOURCES]
        done: set[str] = set()
        ordered: list[Defined] = []
        while stages:
            progressed = False
            for d in list(stages):
                src = self.res.stage_source.get(d.name)
                if src is None or src in done:
                    ordered.append(d)
                    done.add(d.name)
                    stages.remove(d)
                    progressed = True
            if not progressed:  # unresolved sources were already reported by resolve
                break
        return ordered

    # -- data ---------------------------------------------------------------------------------------

    def _data(self, defined: Defined) -> None:
        cfg = defined.config
        prev: str | None = None
        used: dict[str, int] = {}
        for step in cfg.steps:
            params = {k: v for k, v in (step.model_extra or {}).items()}
            comp_cls = components.get(step.step, step.kind)
            validated = comp_cls.model_validate(params)
            comp = validated.model_dump(mode="json")
            comp.pop("kind", None)
            # every path a component declares (a plugin's too) is relative to the spec's folder
            for field_name, index, path in components.input_paths(validated):
                if index is None:
                    comp[field_name] = self._path(path)
                else:
                    comp[field_name][index] = self._path(path)
            if step.step == "source":
                job_id = f"data.{defined.name}.source"
                config = self._source_config(step.kind, comp)
                kind = "data.source"
            else:
                base = f"{step.step}_{step.kind}"
                used[base] = used.get(base, 0) + 1
                suffix = f"_{used[base]}" if used[base] > 1 else ""
                job_id = f"data.{defined.name}.{base}{suffix}"
                if step.step == "dedup":
                    kind, config = f"data.dedup.{step.kind}", comp
                elif step.step == "filter":
                    kind, config = "data.filter", {"filter": step.kind, "params": comp,
                                                    "thresholds": list(getattr(comp_cls, "thresholds", ()))}
                else:
                    min_score = comp.pop("min_score", 0.5)
                    kind, config = "data.quality", {"classifier": step.kind, "params": comp, "min_score": min_score}
            inputs = {"documents": prev} if prev else {}
            self.plan.add(Job(job_id, kind, defined.name, config, inputs, output="documents",
                              description=f"{step.step} {step.kind}"))
            prev = job_id
        if prev:
            self.data_out[defined.name] = prev

    def _source_config(self, kind: str, comp: dict[str, Any]) -> dict[str, Any]:
        if kind == "python_stdlib":
            return {"source": kind, "paths": [], "include": comp["include"], "fields": {},
                    "max_bad_fraction": 0.0, "limit_docs": comp.get("limit_docs"), "seed": self.seed}
        return {
            "source": kind,
            "paths": comp["paths"],  # resolved with every declared input path
            "fields": {k: comp.get(k) for k in ("text", "url", "id", "timestamp")},
            "max_bad_fraction": comp["max_bad_fraction"],
            "limit_docs": comp.get("limit_docs"),
            "seed": self.seed,
        }

    def _path(self, p: str) -> str:
        """Input paths are relative to the spec's folder (absolute ones are kept). Symlinks are
        not followed: messages and recorded input files name the path the user wrote."""
        return os.path.normpath(os.path.join(self.spec.root, p)) if not Path(p).is_absolute() else p

    def _tokenizer(self, defined: Defined) -> None:
        cfg = defined.config
        job_id = f"tokenizer.{defined.name}"
        if cfg.train_on is not None:
            source = self.data_out.get(cfg.train_on)
            if source is None:
                return
            self.plan.add(Job(job_id, "tokenizer.train", defined.name,
                              {"vocab": cfg.vocab, "pattern": cfg.pattern, "special_tokens": cfg.special_tokens,
                               "max_bytes": cfg.max_bytes},
                              {"documents": source}, output="tokenizer",
                              description=f"train a {cfg.vocab:,}-rank BPE on {cfg.train_on}"))
        else:  # `vocab`, when given, is checked against the file's ranks
            self.plan.add(Job(job_id, "tokenizer.load", defined.name,
                              {"file": self._path(cfg.file), "pattern": cfg.pattern,
                               "special_tokens": cfg.special_tokens, "vocab": cfg.vocab},
                              output="tokenizer", description=f"load {cfg.file}"))
        self.tokenizer_job[defined.name] = job_id

    def _tokens(self, data: str, tokenizer: str) -> str:
        key = (data, tokenizer)
        if key not in self.tokens_job:
            dcfg = self.spec.of("data")[data].config
            job_id = f"tokens.{data}.{tokenizer}"
            self.plan.add(Job(job_id, "data.tokenize", data,
                              {"val_fraction": dcfg.val_fraction, "seed": dcfg.seed},
                              {"documents": self.data_out[data], "tokenizer": self.tokenizer_job[tokenizer]},
                              output="tokens", description=f"tokenize {data} with {tokenizer}"))
            self.tokens_job[key] = job_id
        return self.tokens_job[key]

    def _dataset(self, defined: Defined) -> None:
        cfg = defined.config
        config: dict[str, Any] = {"format": cfg.format}
        if cfg.format != "choices":  # a benchmark is all held out: no split, no val_fraction
            config["val_fraction"] = cfg.val_fraction
        if cfg.path:
            config["path"] = self._path(cfg.path)
        if cfg.generate:
            gen = dict(cfg.generate)
            kind = str(gen.pop("kind"))
            config["generate"] = {"kind": kind, **components.get("generator", kind).model_validate(gen).model_dump(mode="json")}
        job_id = f"dataset.{defined.name}"
        self.plan.add(Job(job_id, "data.dataset", defined.name, config, output="dataset",
                          description=f"{cfg.format} data"))
        self.dataset_job[defined.name] = job_id

    # -- training stages -------------------------------------------------------------------------------

    def _mix_of(self, name: str) -> dict[str, Any]:
        """A data or mix name → flat weights over data stages."""
        defined = self.spec.find(name)
        if defined is None:
            return {"weights": {}, "max_epochs": 4.0, "seed": self.seed}
        if defined.kind == "data":
            return {"weights": {name: 1.0}, "max_epochs": 4.0, "seed": self.seed}
        seed = defined.config.seed
        return {"weights": self._weights(defined.config.weights), "max_epochs": defined.config.max_epochs,
                "seed": seed if seed is not None else self.seed}

    def _data_inputs(self, mix: dict[str, Any], tokenizer: str | None) -> dict[str, str]:
        inputs: dict[str, str] = {}
        if tokenizer is None or tokenizer not in self.tokenizer_job:
            return inputs
        inputs["tokenizer"] = self.tokenizer_job[tokenizer]
        for data in sorted(mix["weights"]):
            if data in self.data_out:
                inputs[f"data:{data}"] = self._tokens(data, tokenizer)
        return inputs

    def _train_config(self, model: dict[str, Any], tokens: int, context: int, steps: int,
                      batch: list[dict[str, Any]], optimizer: dict[str, Any], schedule: dict[str, Any],
                      mix: dict[str, Any], seed: int, *, checkpoint_every: int, eval_every: int,
                      micro_batch: int | None = None, clip: float = 1.0, compile: bool = False,
                      **extra: Any) -> dict[str, Any]:
        """The config every training job kind reads (train.pretrain / extend / anneal)."""
        return {"model": model, "tokens": tokens, "context": context, "steps": steps, "batch": batch,
                "micro_batch": micro_batch, "optimizer": optimizer, "schedule": schedule, "mix": mix,
                "clip": clip, "seed": seed, "checkpoint_every": checkpoint_every, "eval_every": eval_every,
                "compile": compile, "precision": self.plan.settings["precision"], **extra}

    def _batch(self, steps: list[Any], context: int) -> list[dict[str, Any]]:
        out = []
        for s in steps:
            seqs = max(1, round(s.value / context))
            out.append({"seqs": seqs, "tokens": seqs * context, "from_tokens": s.at or 0})
        return out

    def _steps(self, batch: list[dict[str, Any]], tokens: int) -> int:
        total, consumed = 0, 0
        for i, b in enumerate(batch):
            end = batch[i + 1]["from_tokens"] if i + 1 < len(batch) else tokens
            end = min(end, tokens)
            if end <= consumed:
                continue
            n = math.ceil((end - consumed) / b["tokens"])
            total += n
            consumed += n * b["tokens"]
        return max(total, 1)

    def _schedule(self, sched: Any, lr: float, steps: int, first_batch_tokens: int) -> dict[str, Any]:
        w = sched.warmup
        if w.tokens is not None:
            warmup = math.ceil(w.tokens / first_batch_tokens)
        elif w.fraction is not None:
            warmup = round(w.fraction * steps)
        else:
            warmup = w.steps or 0
        min_lr = sched.min_lr if sched.min_lr is not None else (sched.to if sched.to is not None else 0.1 * lr)
        if sched.kind == "constant":
            min_lr = lr
        return {"kind": sched.kind, "peak_lr": lr, "min_lr": float(min_lr), "warmup_steps": min(warmup, steps),
                "total_steps": steps, "decay_fraction": sched.decay}

    @staticmethod
    def _post_schedule(sched: Any, lr: float) -> dict[str, Any] | None:
        """A post-training schedule whose step count the job learns from its data: warmup as
        steps or a share of them, the floor as a share of the peak (`runtime.jobs.post_jobs`)."""
        if sched is None:
            return None
        w = sched.warmup
        low = sched.min_lr if sched.min_lr is not None else sched.to
        return {"kind": sched.kind, "warmup_steps": w.steps or 0, "warmup_fraction": w.fraction,
                "min_ratio": 1.0 if sched.kind == "constant" else (0.1 if low is None else low / lr),
                "decay_fraction": sched.decay}

    def _estimates(self, stage: str, model: dict[str, Any], tokens: int, context: int, steps: int,
                   extra: dict[str, Any] | None = None, attention_flops: float | None = None) -> dict[str, Any]:
        """A stage's estimates at `context` (memory and KV cache at that length); a stage whose
        tokens run at several lengths (an extension's increments) passes its summed attention."""
        s = self.plan.settings
        hw, par = s["hardware"], s["parallel"]
        flops = est.training_flops(model, tokens, context)
        if attention_flops is not None:
            flops = {**flops, "attention": attention_flops, "total": flops["dense"] + attention_flops}
        mem = est.memory_per_gpu(model, tp=par["tensor"], pp=par["pipeline"], cp=par["context"], dp=par["data"],
                                 fsdp=par["fsdp"], micro_batch=par["micro_batch"], context=context,
                                 activation_checkpointing=par["activation_checkpointing"])
        if hw["memory_gib"] and mem["total"] > hw["memory_gib"] * 2**30:
            self._too_big(stage, mem, context)
        seconds = None
        if hw["peak_bf16_tflops"]:
            seconds = est.wall_clock_seconds(flops["total"], hw["count"], hw["peak_bf16_tflops"], hw["mfu"])
        out = {
            "model": model["name"],
            "params": est.param_counts(model)["total"],
            "tokens": tokens,
            "context": context,
            "steps": steps,
            "flops": flops["dense"],  # 6·N·D, the convention the Llama 3 paper quotes
            "flops_attention": flops["attention"],
            "flops_total": flops["total"],
            "memory_per_gpu": mem,
            "kv_cache_bytes": est.kv_cache_bytes(model, context),
            "wall_clock_seconds": seconds,
            **(extra or {}),
        }
        self.plan.stages[stage] = {**self.plan.stages.get(stage, {}), **out}
        return out

    def _too_big(self, stage: str, mem: dict[str, int], context: int) -> None:
        """H0602: the estimate of one GPU's training memory exceeds what the GPU has."""
        hw, par = self.plan.settings["hardware"], self.plan.settings["parallel"]
        defined = self.spec.find(stage)
        parts = ", ".join(f"{k} {est.humanize(mem[k], 'B')}" for k in ("weights", "grads", "optimizer", "activations"))
        self.res.warn(
            "H0602", f"'{stage}' needs about {est.humanize(mem['total'], 'B')} per GPU, more than one "
            f"{hw['gpu']} holds ({hw['memory_gib']:g} GiB)", defined.name_span if defined else None,
            "shard it further: raise parallel tensor or pipeline (or context, for long sequences), turn on "
            "fsdp or activation_checkpointing, or lower micro_batch",
            [f"{parts} at context {context:,}", f"layout: tensor {par['tensor']}, pipeline {par['pipeline']}, "
             f"context {par['context']}, data {par['data']}, fsdp {'on' if par['fsdp'] else 'off'}, "
             f"activation checkpointing {'on' if par['activation_checkpointing'] else 'off'}, "
             f"micro_batch {par['micro_batch']}"])

    def _one_batch_size(self, defined: Defined, used: str) -> None:
        span = defined.span("batch")
        self.plan.warnings.append(
            f"{span.path}:{span.line}:{span.column}: warning: {defined.kind} {defined.name} trains "
            f"with one batch size, {used}; a batch ramp belongs to pre-training")

    def _model_of(self, stage: str) -> dict[str, Any] | None:
        name = self.res.stage_model.get(stage)
        return self.res.models.get(name) if name else None

    def _continued_model(self, stage: str, source: str | None) -> dict[str, Any] | None:
        """The model a stage continues: its block's as the stages before changed it (an
        extension's context and RoPE travel with its checkpoint)."""
        if source is not None and source in self.stage_model:
            return self.stage_model[source]
        return self._model_of(stage)

    def _checkpoint(self, defined: Defined) -> None:
        """A checkpoint made elsewhere, loaded into the store as the start of a `from` chain.
        It brings weights only: the stages after it state their data, batch and optimizer
        (compiler/check.py insists)."""
        cfg = defined.config
        model = self._model_of(defined.name)
        if model is None:
            return
        context = cfg.context or model["max_context"]
        model = {**model, "max_context": max(model["max_context"], context)}
        job_id = f"checkpoint.{defined.name}"
        tok = self.tokenizer_job.get(model.get("tokenizer") or "")
        # the tokenizer goes with the loaded weights, so `herd generate`, `chat` and `export` find it
        self.plan.add(Job(job_id, "model.load", defined.name, {"path": self._path(cfg.path), "model": model},
                          {"tokenizer": tok} if tok else {}, output="checkpoint",
                          description=f"load {cfg.path} as {model['name']}"))
        self.stage_out[defined.name] = job_id
        self.stage_model[defined.name] = model
        self.stage_ctx[defined.name] = context
        self.plan.stages[defined.name] = {"kind": "checkpoint", "model": model["name"], "path": cfg.path,
                                          "context": context, "tokens": 0, "flops": 0.0,
                                          "params": est.param_counts(model)["total"]}

    def _pretrain(self, defined: Defined) -> None:
        cfg = defined.config
        model = self._model_of(defined.name)
        if model is None:
            return
        model = {**model, "max_context": max(model["max_context"], cfg.context)}
        mix = self._mix_of(cfg.data)
        batch = self._batch(cfg.batch, cfg.context)
        steps = self._steps(batch, cfg.tokens)
        optimizer = cfg.optimizer.model_dump(mode="json")
        schedule = self._schedule(cfg.schedule, cfg.optimizer.lr, steps, batch[0]["tokens"])
        seed = cfg.seed if cfg.seed is not None else self.seed
        config = self._train_config(
            model, cfg.tokens, cfg.context, steps, batch, optimizer, schedule, mix, seed,
            checkpoint_every=cfg.checkpoint_every or max(1, steps // 10),
            eval_every=cfg.eval_every or max(1, steps // 10), micro_batch=cfg.micro_batch, clip=cfg.clip,
            compile=cfg.compile)
        job_id = f"train.{defined.name}"
        inputs = self._data_inputs(mix, model.get("tokenizer"))
        extra: dict[str, Any] = {}
        if isinstance(cfg.law, str):
            extra = {"law_from": cfg.law}
        elif cfg.law is not None:
            flops = est.training_flops(model, cfg.tokens, cfg.context)["dense"]
            opt = est.compute_optimal(flops, cfg.law.alpha, cfg.law.A)
            extra = {"compute_optimal_tokens": opt["tokens"], "compute_optimal_params": opt["params"],
                     "law": {"alpha": cfg.law.alpha, "A": cfg.law.A, "tolerance": cfg.law.tolerance}}
            params = est.param_counts(model)["total"]
            ratio = params / opt["params"]
            if abs(ratio - 1) > cfg.law.tolerance:
                self.res.warn(
                    "H0601", f"{defined.name}: model '{model['name']}' has {est.humanize(params)} parameters; the law "
                    f"gives {est.humanize(opt['params'])} as compute-optimal for {est.humanize(flops)} FLOPs "
                    f"({ratio:.2f}x, tolerance {cfg.law.tolerance:.0%})", defined.span("law"))
        est_ = self._estimates(defined.name, model, cfg.tokens, cfg.context, steps, extra)
        self.plan.add(Job(job_id, "train.pretrain", defined.name, config, inputs, output="checkpoint",
                          resources={"gpus": self.plan.settings["hardware"]["count"]},
                          estimates={k: est_[k] for k in ("tokens", "steps", "flops", "wall_clock_seconds")},
                          description=f"pre-train {model['name']} on {est.humanize(cfg.tokens)} tokens"))
        self._remember(defined.name, job_id, cfg.context, mix, batch, optimizer, model)
        self._evals(defined.name, cfg.evals, job_id, model, mix)

    def _remember(self, stage: str, job_id: str, context: int, mix: dict[str, Any], batch: list[dict[str, Any]],
                  optimizer: dict[str, Any], model: dict[str, Any]) -> None:
        self.stage_out[stage] = job_id
        self.stage_model[stage] = model
        self.stage_ctx[stage] = context
        self.stage_data[stage] = mix
        self.stage_batch[stage] = batch
        self.stage_optimizer[stage] = optimizer

    def _eval_config(self, name: str) -> tuple[str, dict[str, Any]]:
        """(kind, params with their defaults) of an eval component or a spec-defined eval."""
        defined = self.spec.of("eval").get(name)
        kind = str(defined.config.kind) if defined else name
        params = dict(defined.config.model_extra or {}) if defined else {}
        return kind, components.get("eval", kind).model_validate(params).model_dump(mode="json")

    def _evals(self, stage: str, names: list[str], checkpoint_job: str, model: dict[str, Any],
               mix: dict[str, Any], prefix: str = "", dataset: str | None = None,
               baseline: tuple[str, int] | None = None) -> list[str]:
        """Eval jobs on a checkpoint. `baseline` = (job, context) of the model before a
        context extension, which short-context recovery compares against."""
        jobs = []
        for name in names:
            kind, comp = self._eval_config(name)
            job_id = f"eval.{stage}.{prefix}{name}"
            cls = components.get("eval", kind)
            inputs = {"checkpoint": checkpoint_job}
            if getattr(cls, "reads_corpus", True):
                inputs.update(self._data_inputs(mix, model.get("tokenizer")))
            field = getattr(cls, "dataset_field", None)
            if field:  # the component reads a dataset block (components/evals.py says which field)
                ds = self._eval_dataset(cls, comp.get(field), dataset)
                tok = self.tokenizer_job.get(model.get("tokenizer") or "")
                if ds:
                    inputs["dataset"] = ds
                if tok:
                    inputs["tokenizer"] = tok
            config = {"eval": kind, "params": comp, "model": model, "context": self.stage_ctx.get(stage, model["max_context"]),
                      "seed": self.seed}
            if field and inputs.get("dataset"):  # the block's name, for the eval's report
                config["dataset"] = next(n for n, j in self.dataset_job.items() if j == inputs["dataset"])
            if kind == "short_context_recovery" and baseline:
                inputs["baseline"] = baseline[0]
                config["base_context"] = baseline[1]
            self.plan.add(Job(job_id, f"eval.{kind}", stage, config, inputs, output="eval",
                              description=f"{kind} on {stage}" + (f" ({prefix.rstrip('.')})" if prefix else "")))
            jobs.append(job_id)
        return jobs

    def _eval_dataset(self, cls: Any, named: str | None, stage_dataset: str | None) -> str | None:
        """The dataset job a dataset-reading eval scores: the one it names, else the stage's
        post-training data, else the spec's first dataset — of a format it reads."""
        if named:
            return self.dataset_job.get(named)
        formats = getattr(cls, "dataset_formats", None)
        usable = [job for name, job in self.dataset_job.items()
                  if formats is None or self.spec.of("dataset")[name].config.format in formats]
        if stage_dataset and self.dataset_job.get(stage_dataset) in usable:
            return self.dataset_job[stage_dataset]
        return usable[0] if usable else None

    def _extend(self, defined: Defined) -> None:
        cfg = defined.config
        source = self.res.stage_source.get(defined.name)
        model = self._continued_model(defined.name, source)
        if source not in self.stage_out or model is None:
            return
        lengths = [s.value for s in cfg.context]
        increments = lengths[1:]
        # the budget split evenly, the remainder to the first increments: every token counted
        shares = [cfg.tokens // len(increments) + (i < cfg.tokens % len(increments))
                  for i in range(len(increments))]
        # after a checkpoint block, check.py made sure the stage sets what a source cannot pass on
        mix = self._mix_of(cfg.data) if cfg.data else self.stage_data[source]
        if cfg.batch and len(cfg.batch) > 1:
            self._one_batch_size(defined, "the ramp's last step")
        batch_tokens = (self._batch(cfg.batch, lengths[-1]) if cfg.batch else self.stage_batch[source])[-1]["tokens"]
        optimizer = cfg.optimizer.model_dump(mode="json") if cfg.optimizer else self.stage_optimizer[source]
        rope = cfg.rope.model_dump(mode="json") if cfg.rope else None
        prev = self.stage_out[source]
        base_ctx = lengths[0]
        total_steps, attention = 0, 0.0
        seed = cfg.seed if cfg.seed is not None else self.seed
        # what the job measures after each increment: the needle test (reported, gated or
        # not) and the short-context loss, with the settings of the evals the gates name
        measure = {kind: self._eval_config(kind)[1] for kind in ("needle", "short_context_recovery")}
        gate = {}
        for name, cond in cfg.gate.items():
            kind, params = self._eval_config(name)
            gate[name] = {"op": cond.op, "value": cond.value, "eval": kind}
            measure[kind] = params
        m = model
        for ctx, per in zip(increments, shares, strict=True):
            m = {**model, "max_context": ctx}
            if rope:
                if "theta" in cfg.rope.model_fields_set:  # unset, θ stays the model's (not the default 10,000)
                    m["rope_theta"] = float(rope["theta"])
                if rope.get("scaling"):
                    sc = rope["scaling"]
                    m["rope_scaling"] = {"factor": sc["factor"], "low_freq_factor": sc["low_freq_factor"],
                                         "high_freq_factor": sc["high_freq_factor"],
                                         "original_context": sc["original_context"]}
            seqs = max(1, round(batch_tokens / ctx))
            batch = [{"seqs": seqs, "tokens": seqs * ctx, "from_tokens": 0}]
            steps = self._steps(batch, per)
            schedule = (self._schedule(cfg.schedule, optimizer["lr"], steps, batch[0]["tokens"]) if cfg.schedule
                        else {"kind": "constant", "peak_lr": optimizer["lr"], "min_lr": optimizer["lr"],
                              "warmup_steps": 0, "total_steps": steps, "decay_fraction": 0.2})
            job_id = f"train.{defined.name}.{_length_label(ctx)}"
            config = self._train_config(
                m, per, ctx, steps, batch, optimizer, schedule, mix, seed,
                checkpoint_every=max(1, steps // 4), eval_every=max(1, steps // 4),
                base_context=base_ctx, gate=gate, max_extra=cfg.max_extra, needle=measure["needle"],
                recovery_tokens=measure["short_context_recovery"]["tokens"])
            inputs = {"checkpoint": prev, **self._data_inputs(mix, model.get("tokenizer"))}
            self.plan.add(Job(job_id, "train.extend", defined.name, config, inputs, output="checkpoint",
                              estimates={"tokens": per, "steps": steps},
                              description=f"extend to {ctx:,} tokens, then gate "
                                          + (", ".join(f"{k} {c['op']} {c['value']}" for k, c in gate.items()) or "(none)")))
            prev = job_id
            total_steps += steps
            attention += est.training_flops(m, per, ctx)["attention"]
        # each increment's tokens at its own length: attention FLOPs, their total and the
        # wall-clock sum the increments; memory and KV cache are the longest one's
        self._estimates(defined.name, {**model, "max_context": lengths[-1]}, cfg.tokens, lengths[-1], total_steps,
                        {"increments": increments, "tokens_per_increment": shares}, attention_flops=attention)
        self._remember(defined.name, prev, lengths[-1], mix, self.stage_batch.get(source, batch), optimizer, m)
        self._evals(defined.name, cfg.evals, prev, m, mix, baseline=(self.stage_out[source], base_ctx))

    def _weights(self, parts: dict[str, float]) -> dict[str, float]:
        """Inline mix weights over data stages or mixes → flat weights over data stages."""
        weights: dict[str, float] = {}
        for part, w in parts.items():
            for d, iw in self._mix_of(part)["weights"].items():
                weights[d] = weights.get(d, 0.0) + w * iw
        return weights

    def _anneal_job(self, job_id: str, stage: str, source: str, model: dict[str, Any], mix: dict[str, Any],
                    tokens: int, schedule_cfg: Any, *, context: int | None = None, batch_cfg: Any = None,
                    peak_lr: float | None = None, keep: int = 1, seed: int | None = None) -> dict[str, Any]:
        """A `train.anneal` job continuing `source`: LR to zero over `tokens` on `mix`."""
        context = context or self.stage_ctx[source]
        if batch_cfg:
            batch = self._batch(batch_cfg, context)
        else:
            seqs = max(1, round(self.stage_batch[source][-1]["tokens"] / context))
            batch = [{"seqs": seqs, "tokens": seqs * context, "from_tokens": 0}]
        steps = self._steps(batch, tokens)
        # after a checkpoint block there is no optimizer to continue: AdamW's defaults at `peak_lr`
        optimizer = dict(self.stage_optimizer.get(source) or AdamW(lr=peak_lr or 1.0).model_dump(mode="json"))
        if peak_lr:
            optimizer["lr"] = peak_lr
        schedule = self._schedule(schedule_cfg, optimizer["lr"], steps, batch[0]["tokens"])
        config = self._train_config(
            {**model, "max_context": max(model["max_context"], context)}, tokens, context, steps, batch,
            optimizer, schedule, mix, seed if seed is not None else self.seed,
            checkpoint_every=max(1, steps // max(keep, 1)), eval_every=max(1, steps // 4), keep_last=keep)
        inputs = {"checkpoint": self.stage_out[source], **self._data_inputs(mix, model.get("tokenizer"))}
        self.plan.add(Job(job_id, "train.anneal", stage, config, inputs, output="checkpoint",
                          estimates={"tokens": tokens, "steps": steps},
                          description=f"anneal {est.humanize(tokens)} tokens, LR {schedule['peak_lr']:g} -> {schedule['min_lr']:g}"))
        return {"context": context, "batch": batch, "steps": steps, "optimizer": optimizer}

    def _anneal(self, defined: Defined) -> None:
        cfg = defined.config
        source = self.res.stage_source.get(defined.name)
        model = self._continued_model(defined.name, source)
        if source not in self.stage_out or model is None:
            return
        if cfg.mix is not None:
            mix = {"weights": self._weights(cfg.mix), "max_epochs": 8.0, "seed": self.seed}
        elif cfg.data is not None:
            mix = self._mix_of(cfg.data)
        else:
            mix = self.stage_data[source]
        keep = cfg.average.k if cfg.average else 1
        job_id = f"train.{defined.name}"
        made = self._anneal_job(job_id, defined.name, source, model, mix, cfg.tokens, cfg.lr, context=cfg.context,
                                batch_cfg=cfg.batch, peak_lr=cfg.peak_lr, keep=keep, seed=cfg.seed)
        out = job_id
        if cfg.average and cfg.average.k > made["steps"]:  # one snapshot per step at most
            self.res.error("H0407", f"anneal '{defined.name}' averages the last {cfg.average.k} checkpoints but "
                           f"trains only {made['steps']:,} steps, keeping at most one checkpoint per step",
                           defined.span("average"), f"average at most last({made['steps']}), or raise tokens")
        if cfg.average:
            out = f"average.{defined.name}"
            self.plan.add(Job(out, "model.average", defined.name, {"last": cfg.average.k}, {"checkpoints": job_id},
                              output="checkpoint", description=f"average the last {cfg.average.k} checkpoints"))
        model = {**model, "max_context": max(model["max_context"], made["context"])}
        self._estimates(defined.name, model, cfg.tokens, made["context"], made["steps"], {"average": keep})
        self._remember(defined.name, out, made["context"], mix, made["batch"], made["optimizer"], model)
        self._evals(defined.name, list(cfg.evals), out, model, mix)

    # -- scaling laws and data probes ---------------------------------------------------------------

    def _scaling(self, defined: Defined) -> None:
        """IsoFLOP grid: for each budget C and model N, a run of C / (6N) tokens, its eval, one fit."""
        cfg = defined.config
        mix = self._mix_of(cfg.data)
        if len(cfg.batch) > 1:
            self._one_batch_size(defined, "the ramp's first step")
        batch = self._batch(cfg.batch[:1], cfg.context)
        seed = cfg.seed if cfg.seed is not None else self.seed
        runs, fit_inputs, total_flops = [], {}, 0.0
        for budget in cfg.budgets:
            label = f"{budget:.2g}".replace("+", "")
            for name in cfg.models:
                model = self.res.models.get(name)
                if model is None:
                    continue
                model = {**model, "max_context": max(model["max_context"], cfg.context)}
                params = est.param_counts(model)["total"]
                steps = max(1, int(budget / (6 * params)) // batch[0]["tokens"])
                tokens = steps * batch[0]["tokens"]
                schedule = self._schedule(cfg.schedule, cfg.optimizer.lr, steps, batch[0]["tokens"])
                run_id = f"scaling.{defined.name}.{label}.{name}"
                config = self._train_config(
                    model, tokens, cfg.context, steps, batch, cfg.optimizer.model_dump(mode="json"), schedule,
                    mix, seed, checkpoint_every=max(1, steps // 4), eval_every=max(1, steps // 4))
                inputs = self._data_inputs(mix, model.get("tokenizer"))
                self.plan.add(Job(run_id, "train.pretrain", defined.name, config, inputs, output="checkpoint",
                                  estimates={"tokens": tokens, "steps": steps, "flops": 6.0 * params * tokens},
                                  description=f"IsoFLOP run: {name} ({est.humanize(params)} params) on "
                                              f"{est.humanize(tokens)} tokens at C={budget:.2g}"))
                eval_id = f"{run_id}.eval"
                self.plan.add(Job(eval_id, "eval.perplexity", defined.name,
                                  {"eval": "perplexity", "params": {"tokens": cfg.eval_tokens}, "model": model,
                                   "context": cfg.context, "seed": seed},
                                  {"checkpoint": run_id, **inputs}, output="eval",
                                  description=f"validation loss of {name} at C={budget:.2g}"))
                role = f"run:{label}:{name}"
                fit_inputs[role] = eval_id
                runs.append({"input": role, "budget": budget, "model": name, "params": params, "tokens": tokens})
                if cfg.forecast:
                    task_job = self._evals(defined.name, [cfg.forecast], run_id, model, mix,
                                           prefix=f"{label}.{name}.")[0]
                    fit_inputs[f"task:{label}:{name}"] = task_job
                    runs[-1]["task_input"] = f"task:{label}:{name}"
                total_flops += 6.0 * params * tokens
        target = cfg.target or 10 * max(cfg.budgets)
        fit_config: dict[str, Any] = {"runs": runs, "target": target}
        if cfg.forecast:
            fit_config["forecast"] = cfg.forecast
        self.plan.add(Job(f"scaling.{defined.name}.fit", "scaling.fit", defined.name,
                          fit_config, fit_inputs, output="law",
                          description=f"fit N*(C) = A·C^alpha over {len(cfg.budgets)} budgets; predict C={target:.2g}"))
        self.plan.stages[defined.name] = {"kind": "scaling", "runs": len(runs), "flops": total_flops,
                                          "budgets": list(cfg.budgets), "target": target}

    def _probe(self, defined: Defined) -> None:
        """Two anneals of the same checkpoint — control mix vs a share of the candidate — and their deltas."""
        cfg = defined.config
        source = cfg.from_
        model = self._continued_model(source, source)
        if source not in self.stage_out or model is None:
            return
        self.stage_ctx[defined.name] = self.stage_ctx[source]  # its evals run at that context
        base = self.stage_data[source]
        cand = {d: w * (1 - cfg.share) for d, w in base["weights"].items()}
        cand[cfg.new] = cand.get(cfg.new, 0.0) + cfg.share
        arms = {"control": base, "candidate": {**base, "weights": cand}}
        union = {"weights": {**{d: 1.0 for d in base["weights"]}, cfg.new: 1.0}, "max_epochs": 8.0, "seed": self.seed}
        compare_inputs = {}
        for arm, mix in arms.items():
            job_id = f"probe.{defined.name}.{arm}"
            self._anneal_job(job_id, defined.name, source, model, mix, cfg.tokens, cfg.lr, seed=cfg.seed)
            for ev in self._evals(defined.name, cfg.evals, job_id, model, union, prefix=f"{arm}."):
                compare_inputs[f"{arm}:{ev.rsplit('.', 1)[-1]}"] = ev
        self.plan.add(Job(f"probe.{defined.name}.compare", "probe.compare", defined.name,
                          {"new": cfg.new, "share": cfg.share, "evals": list(cfg.evals),
                           "threshold": cfg.threshold}, compare_inputs,
                          output="eval", description=f"eval deltas of {cfg.share:.0%} {cfg.new} vs control"))
        self.plan.stages[defined.name] = {"kind": "probe", "model": model["name"], "tokens": 2 * cfg.tokens,
                                          "new": cfg.new, "share": cfg.share}

    def _evaluate(self, defined: Defined) -> None:
        """The evals of one checkpoint, and a summary table of them; nothing is trained."""
        cfg = defined.config
        source = cfg.from_
        model = self._continued_model(source, source)
        if source not in self.stage_out or model is None:
            return
        self.stage_ctx[defined.name] = self.stage_ctx.get(source, model["max_context"])
        mix = self._mix_of(cfg.data) if cfg.data else self.stage_data.get(source, {"weights": {}})
        jobs = self._evals(defined.name, list(cfg.evals), self.stage_out[source], model, mix)
        self.plan.add(Job(f"eval.{defined.name}.summary", "eval.summary", defined.name,
                          {"points": [source], "evals": list(cfg.evals), "title": f"Evaluations of {source}"},
                          {f"00:{source}:{job.rsplit('.', 1)[-1]}": job for job in jobs},
                          output="eval", description=f"the evals of {source}"))
        self.plan.stages[defined.name] = {"kind": "evaluate", "model": model["name"], "from": source,
                                          "evals": list(cfg.evals)}

    def _posttrain(self, defined: Defined) -> None:
        cfg = defined.config
        source = self.res.stage_source.get(defined.name)
        model = self._continued_model(defined.name, source)
        if source not in self.stage_out or model is None:
            return
        self.stage_ctx[defined.name] = self.stage_ctx.get(source, model["max_context"])  # for its evals
        self.stage_model[defined.name] = model
        tok = self.tokenizer_job.get(model.get("tokenizer") or "")
        common = {"model": model, "seed": cfg.seed if cfg.seed is not None else self.seed,
                  "precision": self.plan.settings["precision"]}
        policy = self.stage_out[source]
        base_inputs = {"tokenizer": tok} if tok else {}
        mix = self.stage_data.get(source, {"weights": {}})
        datasets = [d for d in posttrain_data(self.spec, defined) if d in self.dataset_job]
        eval_ds = datasets[0] if datasets else None
        evals = stage_evals(self.spec, defined)
        points: list[tuple[str, list[str]]] = [
            ("base", self._evals(defined.name, evals, policy, model, mix, prefix="r0.", dataset=eval_ds))]
        for r in range(1, cfg.rounds + 1):
            p = f"post.{defined.name}.r{r}"
            rm_job = None
            trained: list[str] = []  # the policies this round trains
            if cfg.reward_model:
                rm = cfg.reward_model
                rm_job = f"{p}.reward_model"
                self.plan.add(Job(rm_job, "post.reward_model", defined.name,
                                  {**common, **rm.model_dump(mode="json"), "round": r},
                                  {**base_inputs, "checkpoint": policy, "dataset": self.dataset_job.get(rm.data, "")},
                                  output="checkpoint", description=f"reward model {rm.name} (Bradley-Terry)"
                                  + _lora_note(rm.lora)))
            rs_job = None
            if cfg.rejection_sampling:
                rs = cfg.rejection_sampling
                prompts = rs.prompts or (cfg.sft.data if cfg.sft else None)
                rs_job = f"{p}.rejection_sampling"
                inputs = {**base_inputs, "checkpoint": policy, "dataset": self.dataset_job[prompts]}
                if rm_job and rs.scorer != "verifier":
                    inputs["reward_model"] = rm_job
                self.plan.add(Job(rs_job, "post.rejection_sampling", defined.name,
                                  {**common, **rs.model_dump(mode="json"), "round": r}, inputs,
                                  output="dataset", description=f"best of {rs.k} samples, scored by {rs.scorer}"))
                points.append((f"r{r} rejection sampling", [rs_job]))
            if cfg.sft:
                sft = cfg.sft
                inputs = {**base_inputs, "checkpoint": policy}
                if sft.data == "rejection_sampling" and rs_job:
                    inputs["dataset"] = rs_job
                else:
                    inputs["dataset"] = self.dataset_job[sft.data]
                    if rs_job:
                        inputs["samples"] = rs_job
                sft_job = f"{p}.sft"
                sft_config = {**common, **sft.model_dump(mode="json"), "round": r,
                              "schedule": self._post_schedule(sft.schedule, sft.lr)}
                self.plan.add(Job(sft_job, "post.sft", defined.name, sft_config,
                                  inputs, output="checkpoint", description="supervised fine-tuning on assistant tokens"
                                  + _lora_note(sft.lora)))
                policy = sft_job
                trained.append(sft_job)
                points.append((f"r{r} sft", self._evals(defined.name, evals, policy, model, mix,
                                                         prefix=f"r{r}.sft.", dataset=eval_ds)))
            if cfg.dpo:
                dpo = cfg.dpo
                data = dpo.data or (cfg.reward_model.data if cfg.reward_model else None)
                ds = self.dataset_job.get(data or "", "")
                ref_job = f"{p}.dpo_reference"
                self.plan.add(Job(ref_job, "post.dpo_reference", defined.name, {**common, "mask": dpo.mask, "round": r},
                                  {**base_inputs, "checkpoint": policy, "dataset": ds}, output="logprobs",
                                  description="reference log-probs, computed once"))
                dpo_job = f"{p}.dpo"
                self.plan.add(Job(dpo_job, "post.dpo", defined.name, {**common, **dpo.model_dump(mode="json"), "round": r},
                                  {**base_inputs, "checkpoint": policy, "dataset": ds, "reference": ref_job},
                                  output="checkpoint", description=f"DPO (beta {dpo.beta}, NLL {dpo.nll})"
                                  + _lora_note(dpo.lora)))
                policy = dpo_job
                trained.append(dpo_job)
                points.append((f"r{r} dpo", self._evals(defined.name, evals, policy, model, mix,
                                                         prefix=f"r{r}.dpo.", dataset=eval_ds)))
            if cfg.average:
                # true: the models this round trained (its SFT and DPO policies); a list: the
                # round's policy with the named stages' models (other data or hyperparameters)
                if isinstance(cfg.average, list):
                    models = [policy] + [self.stage_out[n] for n in cfg.average if n in self.stage_out]
                else:
                    models = trained
                members = {f"member{i}": job for i, job in enumerate(dict.fromkeys(models))}
                if len(members) < 2:
                    if r == 1:
                        self.plan.warnings.append(
                            f"posttrain {defined.name}: average = true with one model per round "
                            "averages nothing; use both sft and dpo, or name other stages to average with")
                else:
                    avg = f"{p}.average"
                    self.plan.add(Job(avg, "model.average", defined.name, {"round": r},
                                      {**base_inputs, **members}, output="checkpoint",
                                      description=f"average {len(members)} models of the round"))
                    policy = avg
                    points.append((f"r{r} average", self._evals(defined.name, evals, policy, model,
                                                                 mix, prefix=f"r{r}.", dataset=eval_ds)))
        summary_inputs = {f"{i:02d}:{label}:{job.rsplit('.', 1)[-1]}": job
                          for i, (label, jobs) in enumerate(points) for job in jobs}
        if summary_inputs:
            self.plan.add(Job(f"eval.{defined.name}.summary", "eval.summary", defined.name,
                              {"points": [label for label, _ in points], "evals": list(evals)}, summary_inputs,
                              output="eval", description="held-out results after each post-training step"))
        self.stage_out[defined.name] = policy
        # tokens: the datasets' size, known only once they are read (0 here, "—" in the text view)
        self.plan.stages[defined.name] = {"kind": "posttrain", "model": model["name"], "rounds": cfg.rounds,
                                          "tokens": 0, "flops": 0.0,
                                          "params": est.param_counts(model)["total"]}


def run_folder_name(name: str) -> str:
    """The run folder's name: letters, digits, '-' and '_' only (a spec cannot write elsewhere)."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or "spec"


def lower(res: Resolved) -> Plan:
    return Lowering(res).lower()


def _lora_note(lora: Any) -> str:
    """`, LoRA rank 16` in a post-training job's description (the plan's one-line summary)."""
    if lora is None:
        return ""
    base = " over a 4-bit (NF4) base" if lora.quantize == "nf4" else ""
    return f", LoRA rank {lora.rank} on {', '.join(lora.targets)}{base}"
