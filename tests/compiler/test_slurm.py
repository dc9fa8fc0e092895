"""`herd compile --target slurm`: one sbatch per job, chained by the plan's edges."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from compiler import compile_file
from compiler.plan import Plan
from compiler.slurm import write_slurm

SPEC = Path(__file__).resolve().parents[2] / "specs" / "tiny.herd"


def test_every_job_gets_a_script_and_waits_for_its_inputs(tmp_path: Path) -> None:
    _, plan = compile_file(SPEC)
    scripts = write_slurm(plan, tmp_path)
    assert len(scripts) == len(plan.jobs)
    submit = (tmp_path / "submit.sh").read_text()
    for job in plan.jobs.values():
        line = next(ln for ln in submit.splitlines() if ln.startswith(f"ID[{job.id}]="))
        waits_for = set(re.findall(r"\$\{ID\[([^\]]+)\]\}", line))
        assert waits_for == set(job.deps)
    assert subprocess.run(["bash", "-n", str(tmp_path / "submit.sh")]).returncode == 0


def test_scripts_run_the_saved_plan_exactly(tmp_path: Path) -> None:
    _, plan = compile_file(SPEC)
    write_slurm(plan, tmp_path)
    saved = Plan.load(tmp_path / "plan.json")
    assert {j.id: j.fingerprint for j in saved.jobs.values()} == {j.id: j.fingerprint for j in plan.jobs.values()}
    script = (tmp_path / "train.base.sbatch").read_text()
    assert "--only train.base" in script and str((tmp_path / "plan.json").resolve()) in script


def _training_script(tmp_path: Path, overrides: list[str]) -> str:
    _, plan = compile_file(SPEC, overrides)
    write_slurm(plan, tmp_path)
    return (tmp_path / "train.base.sbatch").read_text()


def test_a_cpu_spec_requests_no_gpu(tmp_path: Path) -> None:
    # tiny.herd runs on `hardware { gpu = cpu  count = 1 }`
    script = _training_script(tmp_path / "one", [])
    assert "--gpus" not in script and "--nproc" not in script
    script = _training_script(tmp_path / "two", ["run.hardware.count=2"])
    assert "--gpus" not in script and "--nodes=1" in script and "--nproc 2" in script


def test_a_gpu_spec_requests_its_gpus_up_to_8_per_node(tmp_path: Path) -> None:
    script = _training_script(tmp_path / "a", ["run.hardware.gpu=h100", "run.device=auto"])
    assert "--gpus-per-node=1" in script and "--nproc 1" in script
    script = _training_script(tmp_path / "b", ["run.hardware.gpu=h100", "run.device=auto", "run.hardware.count=16"])
    assert "--nodes=2" in script and "--gpus-per-node=8" in script and "--nproc 8" in script
    data_job = (tmp_path / "b" / "data.stdlib.source.sbatch").read_text()
    assert "--gpus" not in data_job
