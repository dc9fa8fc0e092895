"""The training loop: AdamW + schedule + batch ramp + accumulation + clipping, with atomic
resumable checkpoints in the job's work directory.

A resumable checkpoint `work/state/step-NNNNNN/` holds the model, the optimizer state and
`state.json` (step, tokens seen, loader position, history) plus the torch RNG
(`rng.safetensors`); `work/state/
LATEST` names the newest one and is replaced atomically after it is complete. Resuming
loads it and continues: the loader replays nothing and the model has no dropout, so on CPU
in fp32 a resumed run ends with the same weights as one that was never stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from runtime.data.loader import IGNORE, PackedLoader
from runtime.jobs.context import JobContext, JobFailed
from runtime.model import Llama, load_optimizer_state, save_optimizer_state
from runtime.model.checkpoint import CheckpointError, atomic_directory, load_state, write_checkpoint
from runtime.train import dist
from runtime.train.divergence import check_finite, norm_value
from runtime.train.evals import val_loss
from runtime.train.precision import training_autocast
from runtime.train.schedule import lr_at

StepHook = Callable[[int, "TrainState"], None]


def activation_checkpointing(settings: dict[str, Any]) -> bool:
    """`run { parallel { activation_checkpointing } }`: the plan's estimates assumed it, so
    training does it (a setting, not part of fingerprints: it changes memory, not results)."""
    return bool((settings.get("parallel") or {}).get("activation_checkpointing", False))


def peak_flops(settings: dict[str, Any], device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of one device for MFU. CUDA only (a CPU has no meaningful peak).
    The device actually running wins (its name matched against `compiler.estimates.GPUS`),
    then the spec's `settings["hardware"]` (`peak_bf16_tflops`); None when unknown."""
    if device.type != "cuda":
        return None
    from compiler.estimates import GPUS

    name = torch.cuda.get_device_name(device).lower()
    match = next((g for k, g in GPUS.items() if k != "cpu" and k in name), None)
    if match is not None:
        return match.peak_bf16_tflops * 1e12
    hw = settings.get("hardware") or {}
    peak = hw.get("peak_bf16_tflops") if isinstance(hw, dict) else None
    return float(peak) * 1e12 if peak else None


@dataclass
class TrainState:
    step: int = 0
    tokens: int = 0
    history: dict[str, list[float]] = field(default_factory=lambda: {
        "step": [], "loss": [], "lr": [], "tokens": []})
    val: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "loss": []})


def data_sources(ctx: JobContext) -> dict[str, Path]:
    """The job's `data:<name>` inputs by name."""
    sources = {k.split(":", 1)[1]: Path(v) for k, v in ctx.inputs.items() if k.startswith("data:")}
    if not sources:
        raise JobFailed(f"{ctx.job_id}: needs at least one 'data:<name>' input")
    return sources


def batch_seqs(cfg: dict[str, Any], tokens: int) -> int:
    """Sequences per optimizer step under the batch ramp: the last entry whose from_tokens
    has been reached."""
    ramp = sorted(cfg["batch"], key=lambda b: b.get("from_tokens", 0))
    seqs = int(ramp[0]["seqs"])
    for entry in ramp:
        if tokens >= int(entry.get("from_tokens", 0)):
            seqs = int(entry["seqs"])
    return seqs


def train_loader(sources: dict[str, Path], cfg: dict[str, Any]) -> PackedLoader:
    """The training stream of a `train.*` job config: its `mix` (weights, `max_epochs`, the
    loader's `seed`) over the `data:<name>` token artifacts, each of which brings the seed
    its data stage was tokenized with; rows of `context` tokens, the ramp's first batch."""
    mix = cfg.get("mix", {})
    weights = mix.get("weights") or dict.fromkeys(sources, 1.0)
    return PackedLoader(sources, weights, int(cfg["context"]), batch_seqs(cfg, 0),
                        split="train", seed=int(mix.get("seed", 0)),
                        max_epochs=float(mix.get("max_epochs", 4.0)))


def param_order(model: torch.nn.Module) -> list[str]:
    """Parameter names in the optimizer's order (matrices, then the rest): the key that maps
    a single-process optimizer state onto a sharded one and back."""
    named = list(model.named_parameters())
    return [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]


def planned_tokens(cfg: dict[str, Any], steps: int, seq_len: int) -> int:
    """Tokens `steps` optimizer steps consume under the batch ramp (the progress total)."""
    tokens = 0
    for _ in range(steps):
        tokens += batch_seqs(cfg, tokens) * seq_len
    return tokens


def make_optimizer(model: torch.nn.Module, cfg: dict[str, Any]) -> torch.optim.AdamW:
    """AdamW, decaying matrices only (norm gains are not decayed); fused on GPU."""
    opt = cfg["optimizer"]
    params = dict(model.named_parameters())
    order = param_order(model)
    decay = [params[n] for n in order if params[n].dim() >= 2]
    other = [params[n] for n in order if params[n].dim() < 2]
    groups = [{"params": decay, "weight_decay": float(opt.get("weight_decay", 0.0))},
              {"params": other, "weight_decay": 0.0}]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=float(opt.get("lr", 1e-3)),
                             betas=tuple(opt.get("betas", (0.9, 0.95))),  # type: ignore[arg-type]
                             eps=float(opt.get("eps", 1e-8)), fused=fused)


RNG_FILE, RNG_KEY = "rng.safetensors", "torch"


@dataclass
class SavedState:
    """One resumable checkpoint, fully read (so a damaged one is found before it is used)."""

    name: str
    tensors: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    meta: dict[str, Any]
    rng: torch.Tensor


def read_saved_state(directory: Path) -> SavedState:
    """Read `work/state/step-N/`; any damage raises (CheckpointError, OSError, ValueError...)."""
    tensors, _ = load_state(directory)
    view = dist.StateView()
    load_optimizer_state(view, directory / "optimizer.safetensors")  # type: ignore[arg-type]
    meta = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    for key in ("step", "tokens", "loader", "history", "val"):
        meta[key]  # noqa: B018 - a KeyError names the missing part
    if (directory / RNG_FILE).is_file():
        try:
            rng = load_file(str(directory / RNG_FILE))[RNG_KEY]
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{directory / RNG_FILE} is not readable ({exc})") from exc
    else:  # written before the RNG moved to safetensors: tensors only, no code runs
        rng = torch.load(directory / "rng.pt", weights_only=True)
    return SavedState(directory.name, tensors, view.sd, meta, rng)


class Trainer:
    """One training run of a job: `run(steps)` trains up to `steps` optimizer steps and can
    be called again with more steps (extra training after a failed gate)."""

    def __init__(self, ctx: JobContext, model: Llama, cfg: dict[str, Any],
                 on_step: StepHook | None = None, on_checkpoint: StepHook | None = None,
                 val_tokens: int = 16_384) -> None:
        self.ctx, self.model, self.cfg = ctx, model, cfg
        self.model_config: dict[str, Any] = dict(model.config)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.rank, self.world = dist.rank(), dist.world()
        self.is_main = self.rank == 0
        self.exported: dict[str, torch.Tensor] | None = None
        self.sources = data_sources(ctx)
        self.seq_len = int(cfg["context"])
        self.loader = train_loader(self.sources, cfg)
        self.state = TrainState()
        self.on_step, self.on_checkpoint = on_step, on_checkpoint
        self.val_tokens = val_tokens
        self.root = Path(ctx.work) / "state"
        torch.manual_seed(ctx.seed)
        # weights are loaded before sharding (a full state dict fits the plain module), the
        # optimizer state after it (set_optimizer_state_dict scatters it to the shards)
        saved = self._read_latest()
        if saved is not None:
            self.model.load_state_dict(saved.tensors, strict=True)
        self.names = param_order(model)
        model.activation_checkpointing = activation_checkpointing(ctx.settings)
        self.precision = cfg.get("precision")
        self.bf16_gather = False  # FSDP gathers bf16 parameters (a MixedPrecisionPolicy)
        if self.world > 1:
            self.bf16_gather = dist.shard(model, self.precision, tensor_parallel=dist.tensor_degree(ctx))
        else:
            model.to(ctx.torch_device())
        self.device = next(model.parameters()).device
        self.opt = make_optimizer(model, cfg)
        self.step_fn = torch.compile(model) if cfg.get("compile") else model
        self.peak_flops = peak_flops(ctx.settings, self.device)
        self.resumed = saved is not None and self._resume(saved)

    # --- checkpoints ------------------------------------------------------------------

    def _latest(self) -> Path | None:
        latest = self.root / "LATEST"
        return self.root / latest.read_text().strip() if latest.is_file() else None

    def _read_latest(self) -> SavedState | None:
        """Everything the newest resumable checkpoint holds, read before anything is applied.

        A damaged one (truncated file, bad JSON, missing part) would otherwise fail the job on
        every re-run: it is moved aside to `state/damaged-<name>` (kept for inspection, never
        deleted), the warning says so, and the job starts again from step 0."""
        directory = self._latest()
        if directory is None:
            return None
        try:
            return read_saved_state(directory)
        except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:
            self.ctx.log.warning("the resumable state %s is damaged (%s); it is kept as %s and "
                                 "this job starts again from step 0", directory,
                                 str(exc).splitlines()[0], self.root / f"damaged-{directory.name}")
            if self.is_main:
                self._set_aside(directory)
            self.ctx.rewind_metrics(None)
            return None

    def _set_aside(self, directory: Path) -> None:
        (self.root / "LATEST").unlink(missing_ok=True)
        if directory.exists():
            target = self.root / f"damaged-{directory.name}"
            shutil.rmtree(target, ignore_errors=True)  # an older damaged copy of the same step
            directory.rename(target)

    def _resume(self, saved: SavedState) -> bool:
        dist.load_full_optim_state(self.model, self.opt, saved.optimizer, self.names)
        meta = saved.meta
        self.loader.load_state_dict(meta["loader"])
        self.state = TrainState(step=meta["step"], tokens=meta["tokens"],
                                history=meta["history"], val=meta["val"])
        torch.set_rng_state(saved.rng)
        # steps after the checkpoint were logged by the stopped attempt and run again now
        self.ctx.rewind_metrics(self.state.step)
        self.ctx.log.info("resumed from %s (step %d, %d tokens)", saved.name,
                          self.state.step, self.state.tokens)
        return True

    def export_state(self) -> dict[str, torch.Tensor] | None:
        """The full (unsharded) weights on rank 0, None on other ranks. A collective under
        torch.distributed: every rank must call it."""
        sd = dist.full_model_state(self.model)
        return {k: v.detach().to("cpu") for k, v in sd.items()} if self.is_main else None

    def checkpoint(self) -> Path:
        """Write the resumable state atomically, point LATEST at it, drop older ones. The
        files are the single-process format whatever the world size (rank 0 writes
        gathered full state), so a run can resume on a different number of processes."""
        name = f"step-{self.state.step:06d}"
        directory = self.root / name
        self.exported = self.export_state()
        optim = dist.full_optim_state(self.model, self.opt, self.names)
        if self.exported is not None:
            with atomic_directory(directory) as tmp:
                write_checkpoint(self.exported, self.model_config, tmp / "model", step=self.state.step)
                for f in (tmp / "model").iterdir():
                    f.rename(tmp / f.name)
                (tmp / "model").rmdir()
                save_optimizer_state(dist.StateView(optim), tmp / "optimizer.safetensors")  # type: ignore[arg-type]
                save_file({RNG_KEY: torch.get_rng_state()}, str(tmp / RNG_FILE))
                (tmp / "state.json").write_text(json.dumps({
                    "step": self.state.step, "tokens": self.state.tokens,
                    "loader": self.loader.state_dict(), "history": self.state.history,
                    "val": self.state.val}))
            pointer = self.root / "LATEST.tmp"
            pointer.write_text(name)
            os.replace(pointer, self.root / "LATEST")
            for old in self.root.glob("step-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.state.step, self.state)
        dist.barrier()
        return directory

    # --- training ---------------------------------------------------------------------

    def validate(self) -> float:
        """Mean validation loss over the job's sources at the training length."""
        losses = [val_loss(self.model, path, name, self.seq_len, self.val_tokens)["loss"]
                  for name, path in self.sources.items()]
        loss = sum(losses) / len(losses)
        self.state.val["step"].append(self.state.step)
        self.state.val["loss"].append(loss)
        self.ctx.metric(step=self.state.step, val_loss=loss)
        return loss

    def _micro_step(self, seqs: int) -> torch.Tensor:
        """One optimizer step's forward/backward over `seqs` rows in micro-batches; the loss
        is the mean over all the step's targets, so accumulation equals one big batch.
        Returns this rank's share of the loss on the device (fp64), unread: reading it would
        stall the host until the device finished, and each stall leaves the device idle
        while the host then launches the next micro-batch. `_step_values` reads it once.

        Under torch.distributed every rank reads the same global batch (the loader is
        deterministic, so its position stays identical everywhere) and trains on its own
        contiguous slice of rows. The loss is still divided by the global target count;
        FSDP averages gradients over ranks, so each rank scales by the world size to make
        the result the whole batch's gradient, the same as one process computes. Under
        tensor parallelism the slices and the average are the data-parallel replicas'
        (a tensor-parallel group's ranks train on the same rows together)."""
        replicas = dist.data_world()
        if seqs % replicas:
            raise JobFailed(f"{self.ctx.job_id}: a batch of {seqs} sequences does not split "
                            f"over {replicas} data-parallel replicas; use a --nproc that divides it")
        self.loader.set_batch_size(seqs)
        batch = next(self.loader)
        n_targets = max(1, int((batch.targets != IGNORE).sum()))
        local = seqs // replicas
        lo = dist.data_rank() * local
        micro = min(local, int(self.cfg.get("micro_batch") or local))
        rows = (batch.tokens, batch.doc_ids, batch.targets)
        if self.device.type == "cuda":
            # page-locked rows copy without making the host wait for the device (a copy from
            # pageable memory synchronizes): the next batch goes up while the last optimizer
            # step still runs
            rows = tuple(t.pin_memory() for t in rows)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(lo, lo + local, micro):
            tok, ids, tgt = (t[i : i + micro].to(self.device, non_blocking=True) for t in rows)
            with training_autocast(self.device, self.precision):
                loss = self.step_fn(tok, ids, tgt, reduction="sum") / n_targets
            (loss * replicas if replicas > 1 else loss).backward()
            total += loss.detach()
        return total

    def _step_values(self, loss: torch.Tensor, norm: torch.Tensor | None) -> tuple[float, float | None]:
        """(the step's loss over all ranks, the gradient norm) as numbers: one wait for the
        device in a single process (both come back in one read), where the divergence check
        needs them before the optimizer may apply the step."""
        if dist.active():
            total = dist.all_reduce_sum(float(loss)) / dist.tensor()
            return total, None if norm is None else norm_value(norm)
        if norm is None:
            return float(loss), None
        both = torch.stack([loss, norm.detach().to(loss.device, torch.float64)]).tolist()
        return both[0], both[1]

    def run(self, steps: int) -> TrainState:
        cfg, st = self.cfg, self.state
        every = max(1, int(cfg.get("checkpoint_every", 0) or steps))
        eval_every = int(cfg.get("eval_every", 0) or 0)
        clip = float(cfg.get("clip", 0) or 0)
        self.ctx.progress.start(float(planned_tokens(cfg, steps, self.seq_len)), "tokens")
        self.ctx.progress.set(float(st.tokens))
        self.model.train()
        while st.step < steps:
            t0 = time.perf_counter()
            lr = lr_at(st.step, cfg["schedule"])
            for group in self.opt.param_groups:
                group["lr"] = lr
            seqs = batch_seqs(cfg, st.tokens)
            self.opt.zero_grad(set_to_none=True)
            loss_on_device = self._micro_step(seqs)
            norm = dist.clip_grad_norm(list(self.model.parameters()), clip) if clip > 0 else None
            loss, norm_number = self._step_values(loss_on_device, norm)
            check_finite(self.ctx, st.step + 1, loss, norm_number)
            self.opt.step()
            n = seqs * self.seq_len
            st.step += 1
            st.tokens += n
            for key, value in (("step", st.step), ("loss", loss), ("lr", lr), ("tokens", st.tokens)):
                st.history[key].append(value)
            tps = n / max(time.perf_counter() - t0, 1e-9)
            perf = {"tokens_per_s": tps}
            if self.peak_flops:
                # model FLOPs utilisation: 6·N FLOPs per token (forward + backward) against
                # the peak of every device the step ran on
                perf["mfu"] = 6.0 * self.n_params * tps / (self.peak_flops * self.world)
            st.history.setdefault("tokens_per_s", []).append(tps)
            if "mfu" in perf:
                st.history.setdefault("mfu", []).append(perf["mfu"])
            self.ctx.metric(step=st.step, loss=loss, lr=lr, tokens=st.tokens, **perf)
            self.ctx.progress.advance(n, loss=round(loss, 4), step=st.step)
            if eval_every and st.step % eval_every == 0:
                self.validate()
            if st.step % every == 0 or st.step == steps:
                self.checkpoint()
            if self.on_step is not None:
                self.on_step(st.step, st)
        return st
