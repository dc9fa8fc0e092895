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


def test_train_step_profile_splits_each_step_by_kernel_category(tmp_path):
    """--profile: both child paths (a bare step, the Trainer's hook) report categories that
    add up to the busy time, and the parent prints the second table."""
    out = tmp_path / "train_step.json"
    done = _run("train_step.py", "--smoke", "--profile", "1", "--only", "herd", "--only", "herd-job",
                "--out", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    rows = {r["variant"]: r for r in record["results"]}
    assert set(rows) == {"herd", "herd-job"} and record["profile_steps"] == 1
    buckets = [name for name, _ in _load("train_step.py").CATEGORIES]
    for variant, row in rows.items():
        assert "error" not in row, row
        prof = row["profile"]
        assert list(prof["categories"]) == buckets and prof["steps"] == 1
        assert sum(prof["categories"].values()) == pytest.approx(prof["busy_ms"], abs=1e-3), variant
        assert prof["top"] and all({"name", "category", "ms", "calls"} <= set(k) for k in prof["top"])
        assert prof["wall_ms"] is not None and prof["idle_fraction"] is not None
    assert "where a step's time goes" in done.stdout
    assert "herd: top 10" in done.stdout and "herd-job: top 10" in done.stdout
    # the profiled steps come after the timed ones: the job's schedule still ends at min_lr
    assert rows["herd-job"]["lr_first_last"] == pytest.approx([1e-4, 1e-5])


@pytest.mark.parametrize(("kernel", "expected"), [
    ("nvjet_tst_192x192_64x4_1x2_h_bz_coopA_NNT", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_"
     "execute_segment_k_off_kernel__5x_cublas", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>", "gemm"),
    ("void splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, true, false, false>", "gemm"),
    ("triton_tem_fused_mm_4", "gemm"),
    ("aten::mm", "gemm"),
    ("aten::addmm", "gemm"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, "
     "cutlass::bfloat16_t>, true, false>", "attention"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64>>",
     "attention"),
    ("void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<Ktraits>>>",
     "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel::Params)",
     "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_kernel0_0",
     "attention"),
    ("triton_tem_fused_0", "attention"),
    ("triton_tem_fused_flex_attention_backward_zeros_1", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("_ce_rows", "loss"),
    ("liger_cross_entropy_kernel", "loss"),
    ("element_mul_kernel", "loss"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
     "at::native::(anonymous namespace)::LogSoftMaxForwardEpilogue>", "loss"),
    ("aten::nll_loss_backward", "loss"),
    ("_rms_norm_fwd", "norm"),
    ("_rms_norm_bwd", "norm"),
    ("_rms_norm_forward_kernel", "norm"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "norm"),
    ("_rope_kernel", "rope"),
    ("_triton_rope", "rope"),
    ("_swiglu_fwd", "swiglu"),
    ("_swiglu_forward_kernel", "swiglu"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous namespace)::"
     "silu_kernel(at::TensorIteratorBase&)::{lambda()#1}>", "swiglu"),
    ("triton_poi_fused_mul_silu_1", "swiglu"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous "
     "namespace)::FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::"
     "FusedAdamMathFunctor<float, 4, (at::native::ADAM_MODE)1, false>>", "optimizer"),
    ("void at::native::lpnorm_cleanup<float, (at::native::NormType)1, float, float>", "optimizer"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, "
     "at::native::NormTwoOps<float, float, float>, unsigned int, float, 4>>", "optimizer"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda("
     "at::TensorIteratorBase&)::{lambda()#3}>", "copy/cast"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float, unsigned int, 1, 128, 1>",
     "copy/cast"),
    ("triton_poi_fused__to_copy_1", "copy/cast"),
    ("Memcpy DtoD (Device -> Device)", "copy/cast"),
    ("Memset (Device)", "copy/cast"),
    ("aten::cat", "copy/cast"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, "
     "at::native::func_wrapper_t<float, at::native::sum_functor<float, float, float>>>>", "reduce"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctorOnSelf_add<float>>",
     "other"),
    ("void at::native::(anonymous namespace)::indexSelectLargeIndex<float, long, unsigned int>",
     "other"),
    ("aten::scatter_add_", "other"),
    ("aten::comm_thing", "other"),
])
def test_train_step_profile_buckets_kernel_names(kernel, expected):
    assert _load("train_step.py").category(kernel) == expected


def test_train_step_profile_summary_adds_up_per_step():
    """Two profiled steps: per-step ms, calls per step, the busy share of the wall time."""
    ts = _load("train_step.py")
    assert ts.CATEGORIES[-1][0] == "other" and len({c for c, _ in ts.CATEGORIES}) == len(ts.CATEGORIES)
    times = [("nvjet_tst_128x256", 3000.0), ("nvjet_tst_128x256", 1000.0), ("_ce_rows", 2000.0),
             ("void at::native::(anonymous namespace)::" + "x" * 200, 1000.0)]
    summary = ts.summarize_profile(times, steps=2, wall_s=0.008, source="test")
    assert summary["busy_ms"] == pytest.approx(3.5) and summary["wall_ms"] == pytest.approx(4.0)
    assert summary["idle_fraction"] == pytest.approx(0.125)
    assert summary["categories"]["gemm"] == pytest.approx(2.0)
    assert summary["categories"]["loss"] == pytest.approx(1.0)
    assert summary["categories"]["other"] == pytest.approx(0.5)
    assert summary["top"][0] == {"name": "nvjet_tst_128x256", "category": "gemm", "ms": 2.0, "calls": 1.0}
    assert len(summary["top"][-1]["name"]) == 90 and "anonymous" not in summary["top"][-1]["name"]


def test_train_step_runs_herd_varlen_with_varlen_attention(monkeypatch):
    """herd-varlen is herd in a child whose HERD_ATTENTION asks for varlen FlashAttention
    (and herd-unstacked one whose projections run one matmul each)."""
    ts = _load("train_step.py")
    monkeypatch.delenv("HERD_ATTENTION", raising=False)
    assert ts.child_env("herd-varlen")["HERD_ATTENTION"] == "varlen"
    assert "HERD_ATTENTION" not in ts.child_env("herd")
    assert ts.VARIANTS.index("herd-varlen") == ts.VARIANTS.index("herd") + 1
    monkeypatch.delenv("HERD_FUSE_PROJECTIONS", raising=False)
    assert ts.child_env("herd-unstacked")["HERD_FUSE_PROJECTIONS"] == "off"  # one matmul per projection
    assert "HERD_FUSE_PROJECTIONS" not in ts.child_env("herd")
    seen: dict[str, object] = {}

    def fake_run(cmd, **kwargs):
        seen.update(cmd=cmd, env=kwargs["env"])
        return subprocess.CompletedProcess(cmd, 0, stdout='{"variant": "herd-varlen"}\n', stderr="")

    monkeypatch.setattr(ts.subprocess, "run", fake_run)
    args = ts.parse_args(["--smoke", "--profile", "2"])
    assert ts.run_variant("herd-varlen", args) == {"variant": "herd-varlen"}
    assert seen["env"]["HERD_ATTENTION"] == "varlen"  # type: ignore[index]
    cmd = seen["cmd"]
    assert cmd[cmd.index("--child") + 1] == "herd-varlen" and cmd[cmd.index("--profile") + 1] == "2"  # type: ignore[union-attr]


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
