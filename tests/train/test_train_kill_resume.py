"""Kill-and-resume through the executor: `run_plan` in a subprocess is SIGKILLed in the
middle of train.pretrain (after its first resumable checkpoint), the same plan is run
again, and the final weights equal those of a run that was never interrupted.

The plan is hand-built (two copy jobs hand the session's tiny tokenizer and tokens to a
train.pretrain job) so the test needs no data download or tokenizer training. The
subprocess patches `Trainer.checkpoint` to signal and then stall after the first
checkpoint, which gives the test a deterministic moment to kill at.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compiler.plan import Job, Plan
from runtime.executor import Store, run_plan
from runtime.jobs.context import JobContext
from runtime.jobs.registry import register
from runtime.model import load_checkpoint

from .conftest import train_config

REPO = Path(__file__).resolve().parents[2]


@register("test.train_copy")
def copy_artifact(ctx: JobContext) -> None:
    """Copies `config.src` into the artifact (the fixture's tokenizer / tokens)."""
    shutil.copytree(ctx.config["src"], ctx.out, dirs_exist_ok=True)


def make_plan(artifacts: dict[str, Path]) -> Plan:
    plan = Plan(spec_name="kill-resume", settings={"seed": 0})
    plan.add(Job("tok", "test.train_copy", "data", {"src": str(artifacts["tokenizer"])}, output="tokenizer"))
    plan.add(Job("code", "test.train_copy", "data", {"src": str(artifacts["data:code"])}, output="tokens"))
    plan.add(Job("pretrain", "train.pretrain", "pretrain", train_config(steps=6, eval_every=0),
                 {"tokenizer": "tok", "data:code": "code"}, output="checkpoint"))
    return plan.seal()


SCRIPT = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import tests.train.test_train_kill_resume as t
from runtime.executor import run_plan
from runtime.train.loop import Trainer

original = Trainer.checkpoint

def checkpoint_then_stall(self):
    directory = original(self)
    tmp = Path({marker!r} + ".tmp")
    tmp.write_text(directory.name)
    tmp.rename({marker!r})  # atomic: the test reads it as soon as it exists
    time.sleep(120)
    return directory

Trainer.checkpoint = checkpoint_then_stall
artifacts = {{k: Path(v) for k, v in json.loads({artifacts!r}).items()}}
sys.exit(run_plan(t.make_plan(artifacts), Path({run_dir!r}), live=False).exit_code)
"""


def test_sigkill_mid_pretrain_then_rerun_reaches_the_uninterrupted_weights(tmp_path, artifacts):
    plan = make_plan(artifacts)
    fp = plan.jobs["pretrain"].fingerprint

    whole = tmp_path / "whole"
    assert run_plan(plan, whole, live=False).exit_code == 0

    killed, marker = tmp_path / "killed", tmp_path / "checkpointed"
    script = SCRIPT.format(repo=str(REPO), marker=str(marker), run_dir=str(killed),
                           artifacts=json.dumps({k: str(v) for k, v in artifacts.items()}))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the run never reached a training checkpoint:\n{out}\n{err}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert marker.read_text() == "step-000002"  # checkpoint_every=2 of 6 steps
    store = Store(killed)
    assert not store.is_complete(fp)
    assert (killed / "work" / fp / "state" / "LATEST").read_text() == "step-000002"

    result = run_plan(plan, killed, live=False)
    assert result.exit_code == 0 and result.states["pretrain"] == "done"
    assert result.states["tok"] == result.states["code"] == "cached"
    a = load_checkpoint(Store(whole).path(fp))[0].state_dict()
    b = load_checkpoint(store.path(fp))[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    stats = json.loads((store.path(fp) / "stats.json").read_text())
    assert stats["steps"] == 6 and not (killed / "work" / fp).exists()  # state dropped once stored
