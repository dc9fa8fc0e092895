"""torch.distributed for training jobs: FSDP2 sharding, full-state gathering, and the
launcher a job uses to re-run itself under torchrun when `herd run --nproc N` asks for it
(and across nodes with `--nnodes M`, inside a Slurm allocation).

Why the job re-runs itself rather than the executor spawning ranks: the executor stays a
single process that knows nothing of torch; a training job that sees `nproc > 1` starts
`torchrun --standalone` on `runtime.train.worker`, which rebuilds the same JobContext in
every rank and calls the same job function. Inside a rank, `Trainer` shards the model with
`fully_shard`, gives each rank a disjoint slice of every global batch and lets rank 0 write
checkpoints in the single-process format, so checkpoints load at any world size.

Across nodes the job, still one process on the allocation's first node, starts one torchrun
per node with `srun` (`HERD_SRUN` names another launcher) and a c10d rendezvous on its own
host; every node must see the same run folder and Python environment (a shared file system,
as Slurm clusters have).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from runtime.jobs.context import JobContext, JobFailed

WORKER_ENV = "HERD_DIST_WORKER"
T = TypeVar("T")


def active() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


#: the tensor-parallel degree of this process's layout, set by `shard` (1: data parallel only)
_tensor = 1


def tensor() -> int:
    """Ranks that share each block's weights (tensor parallelism) and see the same data."""
    return _tensor if active() else 1


def data_rank() -> int:
    """This rank's slot among the data-parallel replicas: its slice of every batch. Ranks
    of one tensor-parallel group (consecutive ranks, one node) share a slot."""
    return rank() // tensor()


def data_world() -> int:
    """Data-parallel replicas: the ways a batch is split."""
    return world() // tensor()


def tensor_degree(ctx: JobContext, adapters: bool = False) -> int:
    """`run { parallel { tensor } }` for a job that shards its model over ranks; 1 for a job
    whose projections are LoRA/QLoRA wrappers (`adapters`), which stays data parallel."""
    if adapters:
        return 1
    return max(1, int((ctx.settings.get("parallel") or {}).get("tensor", 1) or 1))


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(value: float) -> float:
    """Sum a Python float over ranks (the step loss is split across them)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item())


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """`all_reduce_sum` of every value at once (every rank passes the same keys)."""
    if not active():
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def sum_shared(chunks: Sequence[T], work: Callable[[T], dict[str, float]]) -> dict[str, float]:
    """The sum over `chunks` of `work(chunk)`'s values, the ranks taking every N-th chunk.

    Every rank calls `work` equally often: on a sharded (FSDP) module a forward pass is a
    collective, so a rank short of a chunk in the last round works the last chunk again and
    counts it as zero. Under tensor parallelism the chunks go to the data-parallel replicas
    (a group's ranks compute each forward together). The sums are whole-run sums (as one
    process's, to rounding) on every rank."""
    if not chunks:
        return {}
    n, step, first = len(chunks), data_world(), data_rank()
    total: dict[str, float] = {}
    for i in range(first, -(-n // step) * step, step):
        counts = i < n
        for key, value in work(chunks[i] if counts else chunks[-1]).items():
            total[key] = total.get(key, 0.0) + (float(value) if counts else 0.0)
    # a tensor-parallel group's ranks worked the same chunks: each counts 1/tensor of them
    return {key: value / tensor() for key, value in all_reduce_sums(total).items()}


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank (a collective)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def device_for_rank() -> torch.device:
    """cuda:LOCAL_RANK under NCCL, else CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


#: Megatron-style tensor parallelism of a Llama block: the projections into the heads and
#: the FFN are split by output column, the ones out of them by input row, so each rank holds
#: whole heads and a slice of the FFN. A block's forward pass all-reduces twice (after wo and
#: w2) and so does its backward pass: attention's and the FFN's input is one replicated
#: DTensor each (`PrepareModuleInput`), so the input gradients of wq/wk/wv (and w1/w3) add
#: up locally and are all-reduced once (five times without it, counted with CommDebugMode)
TENSOR_PLAN = {"attention.wq": "colwise", "attention.wk": "colwise", "attention.wv": "colwise",
               "attention.wo": "rowwise", "feed_forward.w1": "colwise", "feed_forward.w3": "colwise",
               "feed_forward.w2": "rowwise"}


def shard(model: torch.nn.Module, precision: str | None = None,
          blocks: torch.nn.ModuleList | None = None,
          fp32_units: tuple[torch.nn.Module, ...] = (), tensor_parallel: int = 1) -> bool:
    """FSDP2: each transformer block and then the root (embedding, norm, head) become
    separately all-gathered units; parameters turn into DTensors sharded on dim 0.

    Under bf16 training (where autocast runs: `runtime.train.precision`) the units gather
    their parameters in bf16 and reduce gradients in fp32 (`MixedPrecisionPolicy`): half the
    all-gather traffic and unsharded-parameter memory of gathering fp32 for autocast to cast,
    the sharded fp32 master weights and the optimizer unchanged. Returns whether it did.
    `blocks` are the transformer blocks when they are not `model.layers` (a reward model
    wraps its Llama). `fp32_units` are modules kept in fp32 whatever the policy, each its own
    unit: FSDP wants one dtype per unit, and a reward model's fp32 head beside a bf16
    checkpoint's embeddings would mix them (and its scores rounded to bf16 would tie).

    `tensor_parallel` > 1 splits each block's projections over groups of that many
    consecutive ranks first (`TENSOR_PLAN`), and FSDP shards over the data-parallel
    replicas; embedding, norms and head are replicated within a group. Every rank of a
    group must then see the same batch: slice by `data_rank()` / `data_world()`."""
    global _tensor
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from runtime.train.precision import AUTOCAST_DEVICES

    if tensor_parallel < 1 or world() % tensor_parallel:
        raise JobFailed(f"tensor parallelism of {tensor_parallel} does not divide {world()} ranks")
    dev = device_for_rank()
    model.to(dev)
    grid = init_device_mesh(dev.type, (world() // tensor_parallel, tensor_parallel),
                            mesh_dim_names=("data", "tensor"))
    mesh = grid["data"]
    mixed = precision == "bf16" and dev.type in AUTOCAST_DEVICES
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed
              else MixedPrecisionPolicy())
    layers = blocks if blocks is not None else getattr(model, "layers", [])
    if tensor_parallel > 1:
        _split_blocks(layers, grid["tensor"], world() // tensor_parallel)
    _tensor = tensor_parallel
    for block in layers:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    for unit in fp32_units:
        fully_shard(unit, mesh=mesh, mp_policy=MixedPrecisionPolicy())
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return mixed


def tensor_misfit(heads: int, kv_heads: int, widths: dict[str, int], tensor_parallel: int,
                  replicas: int) -> str | None:
    """Why a model cannot be split `tensor_parallel` ways over `replicas` data-parallel
    replicas, or None. Each rank holds whole heads; and each rank's slice of a column-split
    projection (`widths`: output rows) must split evenly over the replicas, because
    restoring a saved state into those 2-D shards needs it (torch refuses uneven ones)."""
    if heads % tensor_parallel or kv_heads % tensor_parallel:
        return (f"tensor parallelism of {tensor_parallel} gives each rank whole heads, and {heads} query / "
                f"{kv_heads} key-value heads do not split {tensor_parallel} ways; hint: set "
                "run { parallel { tensor } } to a divisor of both")
    for name, rows in widths.items():
        if rows % (tensor_parallel * replicas):
            return (f"{name}'s {rows} output rows split {tensor_parallel} ways (tensor parallelism) do not "
                    f"split evenly over {replicas} data-parallel replicas, which a resumed state needs; "
                    f"hint: use a number of processes whose replicas (processes / {tensor_parallel}) divide "
                    f"{rows // tensor_parallel}, or another run {{ parallel {{ tensor }} }}")
    return None


def config_misfit(model: dict[str, Any], tensor_parallel: int, replicas: int) -> str | None:
    """`tensor_misfit` for a compiled model config (checked before torchrun starts)."""
    try:
        heads, kv_heads, head_dim = int(model["heads"]), int(model["kv_heads"]), int(model["head_dim"])
        ffn = int(model["ffn_dim"])
    except (KeyError, TypeError, ValueError):
        return None  # not a model config this can read: the ranks check the built model
    widths = {"wq": heads * head_dim, "wk": kv_heads * head_dim, "w1": ffn}
    return tensor_misfit(heads, kv_heads, widths, tensor_parallel, replicas)


def _split_blocks(layers: Any, mesh: Any, replicas: int) -> None:
    """Apply `TENSOR_PLAN` to every block over the tensor-parallel `mesh`."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        parallelize_module,
    )

    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    size = mesh.size()
    for block in layers:
        for name in TENSOR_PLAN:
            if not isinstance(block.get_submodule(name), torch.nn.Linear):
                raise JobFailed(f"tensor parallelism splits plain linear projections; {name} is a "
                                f"{type(block.get_submodule(name)).__name__}")
        widths = {name.rpartition(".")[2]: block.get_submodule(name).out_features
                  for name, style in TENSOR_PLAN.items() if style == "colwise"}
        misfit = tensor_misfit(block.attention.heads, block.attention.kv_heads, widths, size, replicas)
        if misfit:
            raise JobFailed(misfit)
        for name in TENSOR_PLAN:
            if not isinstance(block.get_submodule(name), torch.nn.Linear):
                raise JobFailed(f"tensor parallelism splits plain linear projections; {name} is a "
                                f"{type(block.get_submodule(name)).__name__}")
        plan: dict[str, Any] = {name: styles[style]() for name, style in TENSOR_PLAN.items()}
        # one replicated input per submodule for its column-split projections: their input
        # gradients add up on it and are all-reduced once, not once per projection
        plan["attention"] = PrepareModuleInput(input_layouts=(Replicate(),) + (None,) * 5,
                                               desired_input_layouts=(Replicate(),) + (None,) * 5,
                                               use_local_output=False)
        plan["feed_forward"] = PrepareModuleInput(input_layouts=(Replicate(),), desired_input_layouts=(Replicate(),),
                                                  use_local_output=False)
        parallelize_module(block, mesh, plan)


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_`, also for parameters on different device meshes
    (tensor parallelism: split projections on the 2-D mesh, replicated norms and embeddings
    on the data-parallel one), which torch's cannot stack. Each rank sums the squares of its
    local gradient shards, counting a shard held by k ranks 1/k times, and the sums are
    added over all ranks: the whole model's norm, the same on every rank."""
    if tensor() == 1:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    parts = []
    for g in grads:
        local = g.to_local() if isinstance(g, DTensor) else g
        split = _shards(g) if isinstance(g, DTensor) else 1
        parts.append(local.float().pow(2).sum() * (split / world()))
    total = torch.stack(parts).sum().double()  # one reduction on the device, one sync below
    dist.all_reduce(total)
    norm = total.sqrt()
    scale = max_norm / (float(norm) + 1e-6)
    if scale < 1.0:
        for g in grads:
            (g.to_local() if isinstance(g, DTensor) else g).mul_(scale)
    return norm


def _shards(g: Any) -> int:
    """How many pieces a DTensor is cut into: the product of the mesh sizes along which it
    is sharded. FSDP over a tensor-parallel split uses `_StridedShard`, which is not a
    `Shard` subclass in torch 2.13: both count."""
    from torch.distributed.tensor import Shard

    pieces = 1
    for size, placement in zip(g.device_mesh.shape, g.placements, strict=True):
        if isinstance(placement, Shard) or type(placement).__name__ == "_StridedShard":
            pieces *= size
    return pieces


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict (a collective: every rank calls it; only rank 0 gets the
    tensors, the others an empty dict)."""
    if not active():
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def full_optim_state(model: torch.nn.Module, opt: torch.optim.Optimizer,
                     names: list[str]) -> dict[str, Any]:
    """The optimizer state in `Optimizer.state_dict()` form (integer ids in parameter
    order) whatever the world size, so `save_optimizer_state` writes the same file a
    single process would. `names` are the parameters' FQNs in optimizer order."""
    if not active():
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    osd = get_optimizer_state_dict(model, opt, options=_options())
    if not is_main():
        return {}
    index = {n: i for i, n in enumerate(names)}
    state = {index[k]: v for k, v in osd["state"].items()}
    groups = [{**g, "params": [index[p] for p in g["params"]]} for g in osd["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_full_model_state(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load an unsharded state dict into a model, sharded or not (each rank keeps its shard)."""
    if not active():
        model.load_state_dict(sd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True))


def load_full_optim_state(model: torch.nn.Module, opt: torch.optim.Optimizer,
                          sd: dict[str, Any], names: list[str]) -> None:
    """Load a single-process optimizer state dict into a sharded optimizer (each rank
    keeps its shard of every moment)."""
    if not active():
        opt.load_state_dict(sd)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state = {names[int(i)]: v for i, v in sd["state"].items()}
    groups = [{**g, "params": [names[int(p)] for p in g["params"]]} for g in sd["param_groups"]]
    set_optimizer_state_dict(model, opt, {"state": state, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))


class StateView:
    """Duck-typed optimizer for `save_optimizer_state` / `load_optimizer_state`, which only
    call `state_dict()` / `load_state_dict()`: lets the training loop write and read the
    shared file format from a gathered dict."""

    def __init__(self, sd: dict[str, Any] | None = None) -> None:
        self.sd: dict[str, Any] = sd or {}

    def state_dict(self) -> dict[str, Any]:
        return self.sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.sd = sd


# --- launching ------------------------------------------------------------------------


def use_cuda(settings: dict[str, Any]) -> bool:
    """Ranks use NCCL and one GPU each when CUDA is there and the run did not ask for CPU."""
    return torch.cuda.is_available() and str(settings.get("device", "auto")) not in ("cpu",)


def wanted(ctx: JobContext) -> int:
    """Processes per node the job should run on: `nproc` from `herd run --nproc`, unless
    this process is already a rank."""
    if os.environ.get(WORKER_ENV):
        return 1
    return max(1, int(ctx.settings.get("nproc", 1) or 1))


def nodes(ctx: JobContext) -> int:
    """Nodes the job should run on: `nnodes` from `herd run --nnodes`, unless this process
    is already a rank."""
    if os.environ.get(WORKER_ENV):
        return 1
    return max(1, int(ctx.settings.get("nnodes", 1) or 1))


def relaunch(ctx: JobContext, batches: list[int], unit: str = "sequences", tensor_parallel: int = 1) -> bool:
    """Re-run the job under torchrun when `herd run --nproc N [--nnodes M]` asked for more
    than one process and this is not already one of them; True when that happened (the job
    is done). Checked here, before torchrun starts, so the user hears it at once: a
    `tensor_parallel` group fits in a node's processes, and every batch size splits evenly
    over the data-parallel replicas (ranks / tensor_parallel)."""
    n, count = wanted(ctx), nodes(ctx)
    if n * count <= 1:
        return False
    if n % tensor_parallel:
        raise JobFailed(f"{ctx.job_id}: run {{ parallel {{ tensor = {tensor_parallel} }} }} splits each block "
                        f"over {tensor_parallel} processes of one node, and --nproc {n} does not divide "
                        f"into groups of {tensor_parallel}; hint: use a --nproc that is a multiple of "
                        f"{tensor_parallel}, or --set run.parallel.tensor=1 for data parallelism only")
    replicas = n * count // tensor_parallel
    model = ctx.config.get("model")
    misfit = config_misfit(model, tensor_parallel, replicas) if tensor_parallel > 1 and isinstance(model, dict) else None
    if misfit:
        raise JobFailed(f"{ctx.job_id}: {misfit}")
    uneven = sorted({b for b in batches if b % replicas})
    if uneven:
        over = f"{n} processes" if count == 1 else f"{n * count} processes ({count} nodes × {n})"
        if tensor_parallel > 1:
            over = f"{replicas} data-parallel replicas ({over} in tensor-parallel groups of {tensor_parallel})"
        raise JobFailed(f"{ctx.job_id}: a batch of {uneven[0]} {unit} does not split over {over}; "
                        f"use a --nproc{'' if count == 1 else ' and --nnodes'} that divides every batch size")
    layout = ctx.settings.get("parallel") or {}
    skipped = [f"{key} = {layout[key]}" for key in ("pipeline", "context") if int(layout.get(key, 1) or 1) > 1]
    if skipped:
        ctx.log.warning("%s: run { parallel { %s } } shapes the estimates only: the ranks run "
                        "tensor x data parallelism", ctx.job_id, "  ".join(skipped))
    launch(ctx, n, nnodes=count)
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def torchrun_command(ctx: JobContext, nproc: int, nnodes: int, job_file: Path) -> list[str]:
    """torchrun on this node (`--standalone`), or under `srun` on every node of the Slurm
    allocation with a rendezvous on this host."""
    import shutil

    worker = ["-m", "runtime.train.worker", "--job-json", str(job_file)]
    run = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        return [*run, "--standalone", f"--nproc-per-node={nproc}", *worker]
    srun = os.environ.get("HERD_SRUN", "srun")
    if not os.environ.get("SLURM_JOB_ID"):
        raise JobFailed(f"{ctx.job_id}: --nnodes {nnodes} starts ranks on the nodes of a Slurm allocation, and "
                        "this process is not in one\nhint: `herd compile SPEC --target slurm` writes scripts "
                        "that ask for the nodes; or drop --nnodes to train on this node")
    if shutil.which(srun) is None:
        raise JobFailed(f"{ctx.job_id}: --nnodes {nnodes} needs `{srun}` to start ranks on the other nodes, "
                        "and it is not on PATH\nhint: run inside the Slurm job (sbatch), where srun is found")
    # the other nodes reach this one by its host name, or by HERD_RDZV_HOST where that name is not
    # the interface they share (an InfiniBand or cluster-internal address)
    endpoint = f"{os.environ.get('HERD_RDZV_HOST') or _hostname()}:{_free_port()}"
    return [srun, f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            *run, f"--nnodes={nnodes}", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={endpoint}", f"--rdzv-id=herd-{os.getpid()}", *worker]


def launch(ctx: JobContext, nproc: int, poll_s: float = 0.2, nnodes: int = 1) -> None:
    """Run this job under torchrun, `nproc` ranks on each of `nnodes` nodes, and relay rank
    0's progress; a JobFailed in a rank comes back as a JobFailed here with its message."""
    if use_cuda(ctx.settings) and nproc > torch.cuda.device_count():
        raise JobFailed(f"{ctx.job_id}: --nproc {nproc} needs {nproc} GPUs (one per rank) but "
                        f"{torch.cuda.device_count()} are visible; lower --nproc or run with "
                        "--device cpu")
    base = Path(ctx.work) / "dist"
    base.mkdir(parents=True, exist_ok=True)
    progress, error, log = base / "progress.jsonl", base / "error.txt", base / "torchrun.log"
    done = [base / f"rank-{r}.done" for r in range(nproc * nnodes)]
    for f in (progress, error, *done):
        f.unlink(missing_ok=True)
    job = {"job_id": ctx.job_id, "kind": ctx.kind, "stage": ctx.stage, "config": ctx.config,
           "inputs": {k: str(v) for k, v in ctx.inputs.items()}, "out": str(ctx.out),
           "work": str(ctx.work), "run_dir": str(ctx.run_dir), "settings": ctx.settings,
           "metrics_path": str(ctx.metrics_path) if ctx.metrics_path else None,
           "tensorboard_dir": str(ctx.tensorboard_dir) if ctx.tensorboard_dir else None,
           "fingerprint": ctx.fingerprint, "progress_path": str(progress),
           "error_path": str(error), "parent_pid": os.getpid(), "parent_host": _hostname()}
    job_file = base / "job.json"
    job_file.write_text(json.dumps(job, default=str))
    cmd = torchrun_command(ctx, nproc, nnodes, job_file)
    env = {**os.environ, WORKER_ENV: "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    ctx.log.info("%s: launching %d ranks: %s", ctx.job_id, nproc * nnodes, " ".join(cmd))
    offset = 0
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                exited = proc.poll() is not None
                offset = _relay(ctx, progress, offset)
                if exited:
                    break
                time.sleep(poll_s)
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0 and all(f.is_file() for f in done):
        ctx.log.warning("%s: every rank finished its work, but torchrun exited %d during "
                        "teardown (log %s); keeping the outputs", ctx.job_id, proc.returncode, log)
    elif proc.returncode != 0:
        if error.is_file():
            raise JobFailed(error.read_text().strip())
        text = log.read_text(errors="replace")
        cause = rank_error(text)
        raise RuntimeError(f"{ctx.job_id}: {cause + ' ' if cause else ''}(torchrun exited "
                           f"{proc.returncode}; log {log}):\n{text[-3000:]}")


def _hostname() -> str:
    import socket

    return socket.gethostname()


def rank_error(log_text: str) -> str | None:
    """The first exception a rank printed (`[rank1]: IndexError: ...` in torchrun's log) as
    `rank 1 failed: IndexError: ...`, so the job's one-line error says what went wrong;
    None when no rank printed one (killed, or torchrun itself failed)."""
    import re

    m = re.search(r"^\[rank(\d+)\]:\s*([A-Za-z_][\w.]*(?:Error|Exception)\b.*)$", log_text, re.M)
    return f"rank {m.group(1)} failed: {m.group(2).strip()}" if m else None


def _relay(ctx: JobContext, path: Path, offset: int) -> int:
    """Apply progress records rank 0 appended since `offset`; returns the new offset."""
    if not path.is_file():
        return offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        rec = json.loads(line)
        p = ctx.progress
        if rec.get("total") != p.total or rec.get("unit") != p.unit:
            p.start(rec.get("total"), rec.get("unit", "items"))
        p.set(float(rec.get("done", 0.0)), **rec.get("info", {}))
    return offset + end
