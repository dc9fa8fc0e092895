"""`herd compile --target slurm`: one sbatch script per job, chained with `afterok`.

Each script runs `herd run plan.json --only JOB` (training jobs under torchrun through
`--nproc`), so a cluster runs exactly the compiled plan and the store's caching still
applies: a job whose artifact exists is skipped even if resubmitted. Training jobs ask
for `hardware { count }` GPUs, at most `gpus_per_node` per node; a CPU spec asks for none.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from compiler.plan import Plan

TRAINING_PREFIXES = ("train.", "post.")


def _script_name(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_id) + ".sbatch"


def write_slurm(plan: Plan, out_dir: Path, *, partition: str | None = None, gpus_per_node: int = 8,
                herd: str = "herd", runs_dir: str = "runs") -> list[Path]:
    """Write `plan.json`, one sbatch file per job and `submit.sh`; return the sbatch paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plan_path = out_dir / "plan.json"
    plan.save(plan_path)
    hw = plan.settings.get("hardware", {})
    total = int(hw.get("count", 1))
    # a CPU spec (`gpu = cpu`, or `device = cpu`) requests no GPU; its training jobs run
    # `count` processes on one node
    on_cpu = hw.get("gpu") == "cpu" or plan.settings.get("device") == "cpu"
    written: list[Path] = []
    for job in plan:
        training = job.kind.startswith(TRAINING_PREFIXES)
        nodes = max(1, total // gpus_per_node) if training and not on_cpu else 1
        gpus = min(total, gpus_per_node) if training and not on_cpu else 0
        procs = gpus if gpus else (total if training and total > 1 else 0)
        lines = [
            "#!/bin/bash",
            f"#SBATCH --job-name={job.id[:64]}",
            f"#SBATCH --output=slurm-logs/{job.id}-%j.out",
            f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1",
        ]
        if gpus:
            lines.append(f"#SBATCH --gpus-per-node={gpus}")
        if partition:
            lines.append(f"#SBATCH --partition={partition}")
        lines += [
            "set -euo pipefail",
            f"# {job.kind}: {job.description}",
        ]
        cmd = [herd, "run", str(plan_path.resolve()), "--only", job.id, "--runs-dir", runs_dir]
        if procs:
            cmd += ["--nproc", str(procs)]
        lines.append(" ".join(shlex.quote(c) for c in cmd))
        path = out_dir / _script_name(job.id)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    submit = ["#!/bin/bash", "# Submit the whole plan; each job waits for its inputs (afterok).", "set -euo pipefail",
              "mkdir -p slurm-logs", "declare -A ID"]
    for job in plan:
        deps = ":".join(f"${{ID[{shlex.quote(d)}]}}" for d in job.deps)
        dep_flag = f"--dependency=afterok:{deps} " if deps else ""
        submit.append(f"ID[{shlex.quote(job.id)}]=$(sbatch --parsable {dep_flag}"
                      f"{shlex.quote(str((out_dir / _script_name(job.id)).resolve()))})")
    submit.append('echo "submitted ${#ID[@]} jobs"')
    (out_dir / "submit.sh").write_text("\n".join(submit) + "\n", encoding="utf-8")
    (out_dir / "submit.sh").chmod(0o755)
    return written
