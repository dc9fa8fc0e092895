"""`herd compile --target slurm`: one sbatch per job, chained by the plan's edges."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

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
        assert "singleton" in line
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
    # torchrun's two processes get a CPU each, not Slurm's default of one for the task
    assert "--cpus-per-task=2" in script


def test_a_gpu_spec_trains_on_as_many_whole_nodes_as_it_asks_for(tmp_path: Path) -> None:
    script = _training_script(tmp_path / "a", ["run.hardware.gpu=h100", "run.device=auto"])
    assert "--nodes=1" in script and "--gpus-per-node=1" in script and "--nproc 1" in script
    assert "--nnodes" not in script
    # 16 GPUs are two nodes of 8: srun starts a torchrun on each (herd run --nnodes 2)
    script = _training_script(tmp_path / "b", ["run.hardware.gpu=h100", "run.device=auto", "run.hardware.count=16"])
    assert "--nodes=2" in script and "--gpus-per-node=8" in script and "--nproc 8 --nnodes 2" in script
    assert "asks for" not in script
    # 12 is not a whole number of nodes: the one whole node it holds, and the script says so
    script = _training_script(tmp_path / "c", ["run.hardware.gpu=h100", "run.device=auto", "run.hardware.count=12"])
    assert "--nodes=1" in script and "--nproc 8" in script and "--nnodes" not in script
    assert "asks for 12 GPUs, not a whole number of 8-GPU nodes; this job uses 8 (1 × 8)" in script
    data_job = (tmp_path / "b" / "data.stdlib.source.sbatch").read_text()
    assert "--gpus" not in data_job and "--nodes=1" in data_job


def test_post_training_shards_over_one_node_and_evals_run_on_one_gpu(tmp_path: Path) -> None:
    """The reward model, SFT and DPO take as many of one node's GPUs as their batch splits
    over (tiny.herd's SFT batch of 2: 2 GPUs; DPO's 8: all 8); sampling, the DPO reference
    and the task evals take the whole node; the other evals run in one process on one GPU."""
    _, plan = compile_file(SPEC, ["run.hardware.gpu=h100", "run.device=auto", "run.hardware.count=16"])
    write_slurm(plan, tmp_path)
    for job in plan:
        if job.kind.startswith(("post.", "eval.")) and job.kind != "eval.summary":
            script = (tmp_path / f"{job.id}.sbatch").read_text()
            if job.kind.startswith("post.") or job.kind == "eval.tasks":
                batch = job.config["batch"] if job.kind in ("post.reward_model", "post.sft", "post.dpo") else 8
                gpus = max(d for d in range(1, 9) if batch % d == 0)
                assert f"--gpus-per-node={gpus}" in script and "--nodes=1" in script, job.id
                assert (f"--nproc {gpus}" in script) == (gpus > 1) and "--nnodes" not in script, job.id
            else:
                assert "--gpus-per-node=1" in script and "--nproc" not in script, job.id
    sft = (tmp_path / "post.chat.r1.sft.sbatch").read_text()
    assert plan.jobs["post.chat.r1.sft"].config["batch"] == 2 and "--nproc 2" in sft
    assert plan.jobs["post.chat.r1.dpo"].config["batch"] == 8
    assert "--nproc 8" in (tmp_path / "post.chat.r1.dpo.sbatch").read_text()


def test_tensor_parallel_post_training_asks_for_whole_groups(tmp_path: Path) -> None:
    """With `parallel { tensor = 2 }` the batch splits over the groups: SFT's batch of 2
    takes 2 groups of 2 (4 GPUs), DPO's 8 four of them; pre-training keeps its node.
    A group wider than the node cannot start, and the script says so."""
    gpu = ["run.hardware.gpu=h100", "run.device=auto", "run.hardware.count=16"]
    _, plan = compile_file(SPEC, [*gpu, "run.parallel.tensor=2"])
    write_slurm(plan, tmp_path / "tp2")
    assert "--nproc 4" in (tmp_path / "tp2" / "post.chat.r1.sft.sbatch").read_text()
    assert "--nproc 8" in (tmp_path / "tp2" / "post.chat.r1.dpo.sbatch").read_text()
    assert "--nproc 8 --nnodes 2" in (tmp_path / "tp2" / "train.base.sbatch").read_text()
    assert "does not fit" not in (tmp_path / "tp2" / "train.base.sbatch").read_text()
    _, plan = compile_file(SPEC, [*gpu, "run.parallel.tensor=2"])
    write_slurm(plan, tmp_path / "narrow", gpus_per_node=1)
    script = (tmp_path / "narrow" / "train.base.sbatch").read_text()
    assert "tensor = 2 } } does not fit 1 GPUs a node" in script


def test_jobs_of_a_plan_run_one_at_a_time(tmp_path: Path) -> None:
    # `herd run` locks runs/<spec>/ for the whole run: two of the plan's jobs at once would
    # fail on the lock, so all share a job name and wait for each other (singleton)
    _, plan = compile_file(SPEC)
    write_slurm(plan, tmp_path)
    names = {re.search(r"--job-name=(\S+)", p.read_text()).group(1) for p in tmp_path.glob("*.sbatch")}
    assert names == {"herd.tiny"}
    submit = (tmp_path / "submit.sh").read_text()
    first = next(ln for ln in submit.splitlines() if ln.startswith("ID["))
    assert "--dependency=singleton" in first


def test_a_relative_runs_dir_is_where_compile_ran_wherever_sbatch_is_called(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my project").mkdir()
    monkeypatch.chdir(tmp_path / "my project")
    _, plan = compile_file(SPEC)
    fake_herd = tmp_path / "herd"  # prints the folder it runs in
    fake_herd.write_text("#!/bin/bash\npwd\n")
    fake_herd.chmod(0o755)
    write_slurm(plan, Path("out"), runs_dir="runs", herd=str(fake_herd))
    done = subprocess.run(["bash", str(tmp_path / "my project" / "out" / "train.base.sbatch")],
                          cwd="/", capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(tmp_path / "my project")


def _stub(bin_dir: Path, fail_at: int | None = None) -> Path:
    """An `sbatch` that records its arguments one per line and prints `id;cluster`."""
    bin_dir.mkdir()
    calls = bin_dir / "calls"
    fail = f'[ "$n" = {fail_at} ] && {{ echo "sbatch: error: denied" >&2; exit 1; }}' if fail_at else ""
    (bin_dir / "sbatch").write_text(f"""#!/bin/bash
n=$(( $(cat {bin_dir}/n 2>/dev/null || echo 100) + 1 )); echo $n > {bin_dir}/n
{fail}
printf '%s\n' "$@" "--" >> {calls}
echo "$n;cluster"
""")
    (bin_dir / "sbatch").chmod(0o755)
    return calls


@pytest.mark.parametrize("folder", ["slurm scripts", "plain"])
def test_submit_sh_hands_sbatch_whole_paths_and_bare_job_ids(tmp_path: Path, folder: str) -> None:
    _, plan = compile_file(SPEC)
    out = tmp_path / folder
    write_slurm(plan, out)
    calls = _stub(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(out / "submit.sh")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    submissions = [c.strip("\n").split("\n") for c in calls.read_text().split("--\n") if c.strip()]
    order = list(plan.jobs)
    ids = {job_id: str(101 + i) for i, job_id in enumerate(order)}
    for job_id, args in zip(order, submissions, strict=True):
        assert args[-1] == str((out / f"{job_id}.sbatch").resolve())  # one argument, spaces and all
        assert f"--output={(out / 'slurm-logs').resolve()}/{job_id}-%j.out" in args
        deps = sorted(plan.jobs[job_id].deps)
        if deps:  # the ids, without sbatch --parsable's `;cluster`
            want = "--dependency=afterok:" + ":".join(ids[d] for d in plan.jobs[job_id].deps) + ",singleton"
            assert want in args and "--kill-on-invalid-dep=yes" in args


def test_submit_sh_stops_at_the_first_refused_submission(tmp_path: Path) -> None:
    _, plan = compile_file(SPEC)
    write_slurm(plan, tmp_path / "out")
    calls = _stub(tmp_path / "bin", fail_at=103)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(tmp_path / "out" / "submit.sh")], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "denied" in done.stderr
    assert calls.read_text().count("--\n") == 2  # nothing submitted after the refusal


def test_each_script_runs_exactly_its_job(tmp_path: Path) -> None:
    _, plan = compile_file(SPEC, ["run.hardware.count=2"])
    out = tmp_path / "with space"
    write_slurm(plan, out, herd=str(tmp_path / "bin" / "herd"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "herd").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    (tmp_path / "bin" / "herd").chmod(0o755)
    for job in plan:
        done = subprocess.run(["bash", str(out / f"{job.id}.sbatch")], capture_output=True, text=True, check=True)
        args = done.stdout.splitlines()
        assert args[:4] == ["run", str((out / "plan.json").resolve()), "--only", job.id]
        assert ("--nproc" in args) == (job.kind in ("train.pretrain", "train.extend", "train.anneal"))


def test_with_a_time_limit_a_job_stops_before_it_and_requeues_itself(tmp_path: Path) -> None:
    """Slurm sends the batch shell USR1 two minutes before `--time`: the script stops herd
    with TERM (it resumes from its checkpoint) and requeues the job; herd's own exit code
    passes through otherwise."""
    _, plan = compile_file(SPEC)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "herd").write_text('#!/bin/bash\ntrap \'echo TERM >> "$LOG"; exit 143\' TERM\n'
                               'echo started >> "$LOG"\nfor i in $(seq 300); do sleep 0.1; done\n')
    (bin_ / "scontrol").write_text('#!/bin/bash\necho "scontrol $*" >> "$LOG"\n')
    for stub in bin_.iterdir():
        stub.chmod(0o755)
    write_slurm(plan, tmp_path / "out", herd=str(bin_ / "herd"), time="2-00:00:00")
    script = tmp_path / "out" / "train.base.sbatch"
    head = script.read_text().splitlines()
    assert "#SBATCH --time=2-00:00:00" in head and "#SBATCH --signal=B:USR1@120" in head
    log = tmp_path / "log"
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "SLURM_JOB_ID": "42", "LOG": str(log)}
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, text=True)
    for _ in range(100):
        if log.is_file() and "started" in log.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "requeueing job 42" in out
    assert log.read_text().splitlines() == ["started", "TERM", "scontrol requeue 42"]


def test_without_a_signal_the_script_ends_with_herds_exit_code(tmp_path: Path) -> None:
    _, plan = compile_file(SPEC)
    (tmp_path / "herd").write_text("#!/bin/bash\nexit 3\n")
    (tmp_path / "herd").chmod(0o755)
    write_slurm(plan, tmp_path / "out", herd=str(tmp_path / "herd"), time="90")
    done = subprocess.run(["bash", str(tmp_path / "out" / "train.base.sbatch")], capture_output=True, text=True)
    assert done.returncode == 3
