"""`herd compile --target slurm`: one sbatch script per job, chained with `afterok`.

Each script runs `herd run plan.json --only JOB` (training jobs under torchrun through
`--nproc`), so a cluster runs exactly the compiled plan and the store's caching still
applies: a job whose artifact exists is skipped even if resubmitted, and an interrupted
training job resumes from its last checkpoint.

What the scripts ask of Slurm follows what the runtime does:

- `train.pretrain`, `train.extend` and `train.anneal` run under torchrun: they ask for
  `hardware { count }` GPUs, on one node up to `gpus_per_node` (`--nproc`), else on
  `count // gpus_per_node` whole nodes (`--nnodes` too: the job starts one torchrun per node
  with srun, meeting at a rendezvous on the first). A count that is not a whole number of
  nodes uses the whole nodes it holds, and the script says so.
- `post.reward_model`, `post.sft` and `post.dpo` shard over one node's GPUs (`--nproc`):
  as many as `hardware { count }` and `gpus_per_node` allow and the job's `batch` divides
  (each rank takes an equal slice of every batch); with `run { parallel { tensor = T } }`,
  T × that many (each tensor-parallel group of T takes a slice), except under LoRA.
- `post.rejection_sampling`, `post.dpo_reference` and `eval.tasks` take one node's GPUs
  too, as many as `count` allows: each rank holds the whole model and takes every N-th chunk.
- The other model evaluations run in one process: one GPU on a GPU spec.
- A CPU spec (`gpu = cpu`, or `device = cpu`) asks for no GPU; its training jobs ask for
  `count` CPUs (`--cpus-per-task`), one per torchrun process.
- Every job of a plan shares one job name and waits with `singleton` for the previous one
  to end: `herd run` holds `runs/<spec>/lock` for the whole run, so two of the plan's jobs
  running at once would fail on the lock (or, on a file system without working `flock`,
  delete each other's temporary files).
- A job whose input failed is cancelled (`--kill-on-invalid-dep=yes`) rather than left
  pending forever; running `submit.sh` again resubmits the plan and skips what is done.
- With a time limit (`--time`), Slurm sends the batch shell USR1 two minutes before it; the
  script stops `herd run` (SIGTERM: it leaves its last checkpoint and work folders) and
  requeues the job, which resumes from there. A job longer than the partition's limit thus
  runs in slices instead of dying at the limit. `scancel` sends TERM, not USR1: a cancelled
  job is not requeued.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from compiler.plan import Plan
from herdlang.cli_paths import write_file

DISTRIBUTED_KINDS = ("train.pretrain", "train.extend", "train.anneal")  # honour --nproc
ONE_NODE_KINDS = ("post.reward_model", "post.sft", "post.dpo",  # --nproc on one node
                          "post.rejection_sampling", "post.dpo_reference", "eval.tasks")
SPLIT_BATCH_KINDS = ONE_NODE_KINDS[:3]  # these split every batch over their ranks
MODEL_PREFIXES = ("train.", "post.", "eval.")  # load a model: a GPU on a GPU spec
CPU_ONLY_KINDS = ("eval.summary",)


def _script_name(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_id) + ".sbatch"


def _resources(kind: str, total: int, gpus_per_node: int, on_cpu: bool,
               batch: int = 1, tensor: int = 1) -> tuple[int, int, int, int]:
    """(nodes, GPUs per node, CPUs per task or 0 for Slurm's default, --nproc or 0).
    `batch` is a post-training job's that its ranks split evenly (0: any number of ranks);
    `tensor` its tensor-parallel group size: the batch splits over the groups, so it asks
    for `tensor` × a divisor of the batch (a group wider than the node: data parallel)."""
    if kind in ONE_NODE_KINDS and not on_cpu:
        cap = max(1, min(total, gpus_per_node))
        group = tensor if tensor <= cap else 1
        gpus = max(group * d for d in range(1, cap // group + 1) if batch % d == 0)
        return 1, gpus, 0, gpus if gpus > 1 else 0
    distributed = kind in DISTRIBUTED_KINDS
    if on_cpu:
        procs = total if distributed and total > 1 else 0
        return 1, 0, procs, procs
    if distributed:
        gpus = max(1, min(total, gpus_per_node))
        return max(1, total // gpus), gpus, 0, gpus
    if kind.startswith(MODEL_PREFIXES) and kind not in CPU_ONLY_KINDS:
        return 1, 1, 0, 0
    return 1, 0, 0, 0


#: Slurm's --time formats: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S
#: (ASCII digits only: `\d` alone also matches `٣٠`, which would go into the #SBATCH line as is)
TIME_FORMAT = re.compile(r"(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(:\d{1,2}(:\d{1,2})?)?)", re.ASCII)
REQUEUE_LEAD_SECONDS = 120  # how long before the limit a job stops and requeues itself
#: the shortest limit that leaves a job time to work before the requeue signal
MIN_TIME_SECONDS = REQUEUE_LEAD_SECONDS + 180
#: partition names (a comma-separated list lets Slurm pick any of them)
PARTITION_FORMAT = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")


def time_seconds(limit: str) -> int:
    """Seconds in a limit of `TIME_FORMAT` (a bare number is minutes; M:S; H:M:S; D-H[:M[:S]])."""
    days, _, rest = limit.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    if days:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


def requeue_lines(command: str) -> list[str]:
    """Run `command` so that USR1 (sent by `--signal`) stops it and requeues the job."""
    return [
        "requeue() {",
        '  echo "herd: the time limit is near: stopping at the last checkpoint and requeueing job $SLURM_JOB_ID"',
        '  kill -TERM "$pid" 2>/dev/null || true',
        '  wait "$pid" || true',
        '  scontrol requeue "$SLURM_JOB_ID"',
        "  exit 0",
        "}",
        "trap requeue USR1",
        f"{command} &",
        "pid=$!",
        'wait "$pid"',
    ]


def write_slurm(plan: Plan, out_dir: Path, *, partition: str | None = None, gpus_per_node: int = 8,
                herd: str = "herd", runs_dir: str = "runs", time: str | None = None) -> list[Path]:
    """Write `plan.json`, one sbatch file per job and `submit.sh`; return the sbatch paths.

    Paths in the scripts are absolute, and a relative `runs_dir` is relative to the folder
    this is called from (each script `cd`s there), so a job runs the same wherever `sbatch`
    is called from."""
    requeue = time is not None and time_seconds(time) > 0  # --time 0 is Slurm's "no limit": no signal comes
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir.resolve()  # the folder, not its entries: a symlink in it is replaced, never followed
    plan_path = root / "plan.json"
    plan.save(plan_path)
    logs = (out_dir / "slurm-logs").resolve()
    logs.mkdir(exist_ok=True)
    here = None if Path(runs_dir).is_absolute() else str(Path.cwd())
    hw = plan.settings.get("hardware", {})
    total = int(hw.get("count", 1))
    on_cpu = hw.get("gpu") == "cpu" or plan.settings.get("device") == "cpu"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"herd.{plan.spec_name}")[:64]
    written: list[Path] = []
    tensor = int((plan.settings.get("parallel") or {}).get("tensor", 1) or 1)
    for job in plan:
        batch = job.config.get("batch") if job.kind in SPLIT_BATCH_KINDS else 0
        # LoRA jobs stay data parallel (runtime.train.dist.tensor_degree)
        group = tensor if job.kind in SPLIT_BATCH_KINDS and not job.config.get("lora") else 1
        nodes, gpus, cpus, procs = _resources(job.kind, total, gpus_per_node, on_cpu,
                                              batch if isinstance(batch, int) else 1, group)
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name={name}",  # shared: `singleton` runs the plan's jobs one at a time
            f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1",  # the batch step; srun starts one torchrun per node
            "#SBATCH --requeue",  # a requeued job resumes from its checkpoint
            "#SBATCH --open-mode=append",  # ... and its log keeps the first attempt
        ]
        if gpus:
            lines.append(f"#SBATCH --gpus-per-node={gpus}")
        if cpus:
            lines.append(f"#SBATCH --cpus-per-task={cpus}")
        if partition:
            lines.append(f"#SBATCH --partition={partition}")
        if time:
            lines.append(f"#SBATCH --time={time}")
        if requeue:
            lines.append(f"#SBATCH --signal=B:USR1@{REQUEUE_LEAD_SECONDS}")
        lines += ["set -euo pipefail", f"# {job.id}: {job.kind}: {job.description}"]
        if here:  # the relative --runs-dir is where `herd compile` ran, not where sbatch did
            lines.append(f"cd {shlex.quote(here)}")
        if job.kind in DISTRIBUTED_KINDS and not on_cpu and total > nodes * gpus:
            lines.append(f"# run {{ hardware {{ count = {total} }} }} asks for {total} GPUs, not a whole number of "
                         f"{gpus_per_node}-GPU nodes; this job uses {nodes * gpus} ({nodes} × {gpus})")
        if (job.kind in DISTRIBUTED_KINDS or group > 1) and not on_cpu and procs % tensor:
            lines.append(f"# run {{ parallel {{ tensor = {tensor} }} }} does not fit {procs} GPUs a node: "
                         "herd keeps a tensor-parallel group inside a node, and this job will refuse to start")
        cmd = [herd, "run", str(plan_path), "--only", job.id, "--runs-dir", runs_dir]
        if procs:
            cmd += ["--nproc", str(procs)]
        if nodes > 1:
            cmd += ["--nnodes", str(nodes)]
        command = " ".join(shlex.quote(c) for c in cmd)
        lines += requeue_lines(command) if requeue else [command]
        path = out_dir / _script_name(job.id)
        write_file(path, "\n".join(lines) + "\n", follow_links=False)
        written.append(path)
    # --output is given here, where the shell quotes it (an #SBATCH line ends at a space
    # or `#`); `%` is Slurm's pattern character, `%%` a literal one
    submit = ["#!/bin/bash", "# Submit the whole plan; each job waits for its inputs (afterok) and for the",
              "# plan's previous job (singleton: one herd run per run directory at a time).",
              "set -euo pipefail", f"LOGS={shlex.quote(str(logs))}", 'mkdir -p "$LOGS"', "declare -A ID",
              "# the job id alone (--parsable prints `id;cluster` on a multi-cluster setup)",
              'submit() { local id; id=$(sbatch --parsable "$@") || return 1; echo "${id%%;*}"; }']
    for job in plan:
        deps = ":".join(f"${{ID[{shlex.quote(d)}]}}" for d in job.deps)
        dep_flag = f"--dependency=afterok:{deps},singleton --kill-on-invalid-dep=yes " if deps \
            else "--dependency=singleton "
        log = shlex.quote(job.id.replace("%", "%%") + "-%j.out")
        submit.append(f"ID[{shlex.quote(job.id)}]=$(submit {dep_flag}"
                      f"--output=\"$LOGS\"/{log} "
                      f"{shlex.quote(str(root / _script_name(job.id)))})")
    submit.append('echo "submitted ${#ID[@]} jobs; logs in $LOGS"')
    write_file(out_dir / "submit.sh", "\n".join(submit) + "\n", follow_links=False)
    _make_executable(out_dir / "submit.sh")
    return written


def _make_executable(path: Path) -> None:
    """chmod 755 the file `path` names itself: opened with O_NOFOLLOW, so a symlink put there
    since it was written fails (ELOOP) instead of changing the mode of what it points to."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)
