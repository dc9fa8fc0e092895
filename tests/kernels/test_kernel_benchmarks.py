"""The kernel benchmark scripts run end to end (tiny shapes, interpreted) and write their JSON.

Their numbers only count on a GPU; these tests check the scripts, never the timings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_gpu_check_smoke_reports_every_output_and_gradient(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _run("gpu_check.py", "--smoke", "--no-speed", "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["passed"] is True
    checked = {(r["case"], r["quantity"]) for r in report["accuracy"]}
    assert ("rms_norm", "d_weight") in checked and ("apply_rope", "d_k") in checked
    assert ("linear_cross_entropy[none]", "d_hidden") in checked
    assert "PASSED" in done.stdout


def test_kernels_smoke_times_herd_against_eager(tmp_path):
    out = tmp_path / "kernels.json"
    done = _run("kernels.py", "--smoke", "--only", "swiglu", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["results"]
    assert {(r["impl"], r["pass"]) for r in rows} == {
        ("herd", "fwd"), ("eager", "fwd"), ("herd", "fwd+bwd"), ("eager", "fwd+bwd")
    }
    assert all(r["op"] == "swiglu" and "ms" in r for r in rows)


def test_train_step_smoke_runs_the_pretraining_job_path(tmp_path):
    """herd-job trains through runtime.train.loop.Trainer on a synthetic token artifact."""
    out = tmp_path / "train_step.json"
    done = _run("train_step.py", "--smoke", "--only", "herd-job", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "herd-job" in done.stdout and "skipped" not in done.stdout, done.stdout
    (row,) = json.loads(out.read_text())["results"]
    assert row["variant"] == "herd-job" and "error" not in row, row
    assert row["tokens_per_s"] > 0 and row["job_tokens_per_s_median"] > 0
    # warmup then cosine decay: the schedule ran, ending at min_lr
    assert row["lr_first_last"] == pytest.approx([1e-4, 1e-5])
    assert row["first_loss"] == pytest.approx(6.24, abs=0.3)  # ln(512) at init


def test_train_step_smoke_times_activation_checkpointing_beside_plain_herd(tmp_path):
    """herd-ac recomputes every block: the same losses as herd, reported on its own row."""
    out = tmp_path / "train_step.json"
    done = _run("train_step.py", "--smoke", "--only", "herd", "--only", "herd-ac", "--steps", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"herd", "herd-ac"} and all("error" not in r for r in rows.values()), rows
    assert rows["herd-ac"]["first_loss"] == pytest.approx(rows["herd"]["first_loss"], rel=1e-6)


def _load(script: str) -> ModuleType:
    """The script as a module, to call its main() in this process (no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(f"herd_bench_{script[:-3]}", ROOT / "benchmarks" / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_kernel_sweep_smoke_times_each_setting_and_marks_the_one_in_use(tmp_path):
    out = tmp_path / "sweep.json"
    done = _run("kernel_sweep.py", "--smoke", "--only", "rms_norm,lce_chunks", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["results"]
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"rms_norm_fwd", "rms_norm_bwd", "lce_fwd_bwd"}
    assert all("ms" in r for r in rows)
    # the runtime's own setting is among those timed: the forward's warps and the loss's chunks
    assert {r["kernel"] for r in rows if r["current"]} >= {"rms_norm_fwd", "lce_fwd_bwd"}
    assert len({r["setting"] for r in rows if r["kernel"] == "lce_fwd_bwd"}) >= 2


def test_unknown_sweep_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        _load("kernel_sweep.py").main(["--smoke", "--only", "layernorm"])
    assert exited.value.code == 2
    assert "unknown sweep(s) layernorm" in capsys.readouterr().err


def test_liger_gets_a_row_only_for_the_ops_it_has(monkeypatch):
    """On the H200 the NF4 row once showed Liger as `KeyError: 'hidden'`: an op Liger lacks
    fell through to its fused loss."""
    import types

    functional = types.ModuleType("liger_kernel.transformers.functional")
    package = types.ModuleType("liger_kernel.transformers")
    package.functional = functional  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", package)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", functional)
    kernels = _load("kernels.py")
    assert kernels.liger_impl("nf4_dequantize") is None
    assert all(kernels.liger_impl(op) is not None
               for op in ("rms_norm", "apply_rope", "swiglu", "linear_cross_entropy"))


def test_unknown_op_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        _load("kernels.py").main(["--smoke", "--only", "layernorm"])
    assert exited.value.code == 2
    assert "unknown op(s) layernorm" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
@pytest.mark.parametrize("script", ["kernels.py", "gpu_check.py", "kernel_sweep.py"])
def test_without_a_gpu_the_scripts_say_so_and_how_to_smoke_test(script, capsys):
    assert _load(script).main([]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU here" in err and "--smoke" in err
