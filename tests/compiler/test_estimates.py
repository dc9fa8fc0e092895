"""The compiler's estimates, pinned to the Llama 3 paper's published numbers.

Each test reads as a worked example of one formula in `docs/estimates.md`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from compiler.estimates import (
    GPU,
    GPUS,
    compute_optimal,
    ffn_hidden_dim,
    humanize,
    humanize_duration,
    kv_cache_bytes,
    memory_per_gpu,
    param_counts,
    training_flops,
    wall_clock_seconds,
)

GiB = 2**30

# Exactly the resolved config the compiler emits for specs/llama3_8b.herd.
LLAMA3_8B = {
    "name": "llama3_8b",
    "vocab_size": 128256,
    "dim": 4096,
    "layers": 32,
    "heads": 32,
    "kv_heads": 8,
    "head_dim": 128,
    "ffn_dim": 14336,
    "norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": None,
    "tied_embeddings": False,
    "max_context": 8192,
    "document_mask": True,
    "init_std": 0.02,
}
LLAMA3_70B = {**LLAMA3_8B, "name": "llama3_70b", "dim": 8192, "layers": 80, "heads": 64,
              "ffn_dim": 28672}  # fmt: skip
LLAMA3_405B = {**LLAMA3_8B, "name": "llama3_405b", "dim": 16384, "layers": 126, "heads": 128,
               "ffn_dim": 53248}  # fmt: skip
# Llama 3.2 1B ties its output projection to the embedding.
LLAMA32_1B = {**LLAMA3_8B, "name": "llama32_1b", "dim": 2048, "layers": 16, "heads": 32,
              "head_dim": 64, "ffn_dim": 8192, "tied_embeddings": True}  # fmt: skip


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("dim", "multiplier", "multiple_of", "hidden"),
    [
        (4096, 1.3, 1024, 14336),  # Llama 3 8B
        (8192, 1.3, 4096, 28672),  # Llama 3 70B
        (16384, 1.2, 4096, 53248),  # Llama 3 405B
        (2048, 1.5, 256, 8192),  # Llama 3.2 1B
        (4096, 1.0, 256, 11008),  # Llama 1/2 7B: 2/3 of 4·dim, rounded up
        (128, 0.001, 32, 32),  # a multiplier that leaves under one unit still rounds up to one multiple
    ],
)
def test_ffn_hidden_dim_follows_llamas_rounding_rule(dim, multiplier, multiple_of, hidden):
    assert ffn_hidden_dim(dim, multiplier, multiple_of) == hidden


# --------------------------------------------------------------------------- parameters


def test_llama3_8b_parameter_breakdown():
    assert param_counts(LLAMA3_8B) == {
        "embedding": 525_336_576,  # 128256 × 4096
        "output": 525_336_576,  # untied: a second vocab × dim matrix
        "attention_per_layer": 41_943_040,  # wq, wo 4096²; wk, wv 4096 × 8·128
        "ffn_per_layer": 176_160_768,  # 3 × 4096 × 14336
        "norms_per_layer": 8_192,  # two RMSNorm gains
        "per_layer": 218_112_000,
        "final_norm": 4_096,
        "non_embedding": 6_979_588_096,
        "total": 8_030_261_248,
    }


@pytest.mark.parametrize(
    ("model", "total"),
    [
        (LLAMA3_8B, 8_030_261_248),
        (LLAMA3_70B, 70_553_706_496),
        (LLAMA3_405B, 405_853_388_800),
    ],
)
def test_parameter_totals_match_the_released_checkpoints(model, total):
    assert param_counts(model)["total"] == total


def test_tied_embeddings_count_the_shared_matrix_once():
    counts = param_counts(LLAMA32_1B)
    assert counts["output"] == 0
    assert counts["embedding"] == 262_668_288
    assert counts["total"] == 1_235_814_400  # Llama 3.2 1B as released
    untied = param_counts({**LLAMA32_1B, "tied_embeddings": False})
    assert untied["total"] - counts["total"] == counts["embedding"]


def test_head_dim_and_kv_heads_default_like_llama():
    model = {k: v for k, v in LLAMA3_8B.items() if k not in ("head_dim", "kv_heads")}
    counts = param_counts(model)
    # head_dim = dim // heads = 128; kv_heads = heads (plain multi-head attention).
    assert counts["attention_per_layer"] == 4 * 4096 * 4096


def test_missing_or_bad_dimensions_are_a_value_error():
    with pytest.raises(ValueError, match="ffn_dim"):
        param_counts({k: v for k, v in LLAMA3_8B.items() if k != "ffn_dim"})
    with pytest.raises(ValueError, match="positive"):
        param_counts({**LLAMA3_8B, "layers": 0})


# --------------------------------------------------------------------------- compute


def test_405b_pretraining_is_about_3_8e25_flops():
    flops = training_flops(LLAMA3_405B, tokens=15.6e12, context=8192)
    assert flops["dense"] == pytest.approx(6 * 405_853_388_800 * 15.6e12)
    assert flops["dense"] == pytest.approx(3.8e25, rel=0.01)  # the paper's figure
    # Attention scores add 6·L·s·dim per token: 6 · 126 · 8192 · 16384 · 15.6e12.
    assert flops["attention"] == pytest.approx(1.5829101969408e24)
    assert flops["total"] == flops["dense"] + flops["attention"]


def test_attention_flops_grow_linearly_with_context():
    short = training_flops(LLAMA3_8B, tokens=1e12, context=8192)
    long = training_flops(LLAMA3_8B, tokens=1e12, context=131072)
    assert long["dense"] == short["dense"]
    assert long["attention"] == 16 * short["attention"]
    # At 128K the score matmuls cost more than the weights do.
    assert long["attention"] > long["dense"]


# --------------------------------------------------------------------------- memory


def test_8b_on_one_gpu_needs_16_bytes_per_parameter_plus_activations():
    n = 8_030_261_248
    mem = memory_per_gpu(LLAMA3_8B, fsdp=False)
    assert mem["weights"] == 2 * n == 16_060_522_496
    assert mem["grads"] == 2 * n
    assert mem["optimizer"] == 12 * n == 96_363_134_976  # fp32 master + Adam m, v
    # 34·s·b·h bytes per layer with flash attention: 34 · 8192 · 1 · 4096 · 32 layers.
    assert mem["activations"] == 34 * 8192 * 4096 * 32 == 36_507_222_016
    assert mem["total"] == 164_991_401_984


def test_without_flash_attention_the_score_matrix_dominates():
    mem = memory_per_gpu(LLAMA3_8B, fsdp=False, flash_attention=False)
    # + 5·a·s²·b per layer: 5 · 32 · 8192² = 10 GiB a layer.
    assert mem["activations"] == 32 * (34 * 8192 * 4096 + 5 * 32 * 8192**2) == 380_104_605_696


def test_activation_checkpointing_keeps_layer_inputs_and_one_full_layer():
    mem = memory_per_gpu(LLAMA3_8B, fsdp=False, activation_checkpointing=True)
    inputs = 32 * 2 * 8192 * 4096  # bf16 input of every layer: 2 GiB
    one_layer = 34 * 8192 * 4096
    assert mem["activations"] == inputs + one_layer == 3_288_334_336


def test_fsdp_shards_model_states_over_data_parallel_ranks():
    plain = memory_per_gpu(LLAMA3_8B, dp=8, fsdp=False)
    sharded = memory_per_gpu(LLAMA3_8B, dp=8, fsdp=True)
    assert sharded["weights"] == plain["weights"] // 8 == 2_007_565_312
    assert sharded["optimizer"] == plain["optimizer"] // 8
    assert sharded["activations"] == plain["activations"]  # dp never splits a sequence


def test_405b_layout_from_the_paper():
    # 16K H100s: TP 8, PP 16, DP 128 (model states replicated across DP here).
    mem = memory_per_gpu(LLAMA3_405B, tp=8, pp=16, dp=128, fsdp=False)
    assert mem["weights"] == 2 * 405_853_388_800 // (8 * 16) == 6_341_459_200
    # ceil(126 / 16) = 8 layers per stage, activations split 8 ways by TP.
    assert mem["activations"] == 8 * 34 * 8192 * 16384 // 8 == 4_563_402_752


def test_context_parallelism_splits_activations_only():
    base = memory_per_gpu(LLAMA3_8B, context=131072)
    cp16 = memory_per_gpu(LLAMA3_8B, context=131072, cp=16)
    assert cp16["activations"] == base["activations"] // 16
    assert cp16["weights"] == base["weights"]


def test_bad_layout_is_a_value_error():
    with pytest.raises(ValueError, match="tp"):
        memory_per_gpu(LLAMA3_8B, tp=0)


def test_8b_kv_cache_at_128k_context_is_16_gib():
    # 2 · 32 layers · 8 kv heads · 128 · 131072 tokens · 2 bytes
    assert kv_cache_bytes(LLAMA3_8B, 131072) == 16 * GiB
    assert kv_cache_bytes(LLAMA3_8B, 131072, batch=4, dtype_bytes=1) == 32 * GiB


# --------------------------------------------------------------------------- hardware


def test_gpu_table():
    assert GPUS["h100"] == GPU("h100", 989.0, 80.0)
    assert GPUS["h200"].memory_gib == 141.0
    assert {name: gpu.peak_bf16_tflops for name, gpu in GPUS.items()} == {
        "h100": 989.0,
        "h200": 989.0,
        "a100": 312.0,
        "b200": 2250.0,
        "mi300x": 1307.0,
        "l40s": 362.0,
        "cpu": 1.0,
    }


def test_wall_clock_of_405b_pretraining_on_16k_h100s():
    seconds = wall_clock_seconds(3.8e25, gpus=16384, peak_tflops=989, mfu=0.40)
    assert seconds == pytest.approx(3.8e25 / (16384 * 989e12 * 0.40))
    assert seconds / 86400 == pytest.approx(67.86, abs=0.01)
    with pytest.raises(ValueError):
        wall_clock_seconds(1e20, gpus=8, peak_tflops=989, mfu=0)


# --------------------------------------------------------------------------- scaling law


def test_the_papers_law_gives_605b_not_402b():
    # N*(C) = 0.29 · C^0.53 is a token count; params follow from C = 6·N·D.
    best = compute_optimal(3.8e25, alpha=0.53, A=0.29)
    assert best["tokens"] == pytest.approx(10.46e12, rel=1e-3)
    assert best["params"] == pytest.approx(605.3e9, rel=1e-3)
    assert 6 * best["params"] * best["tokens"] == pytest.approx(3.8e25)
    # The paper's text says 402B parameters / 16.55T tokens; the formula does not.
    assert best["params"] > 1.4 * 402e9


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (8_030_261_248, "", "8.03B"),
        (70_553_706_496, "", "70.6B"),
        (405_853_388_800, "", "406B"),
        (15.6e12, "", "15.6T"),
        (3.8e25, "", "3.80e25"),
        (3.8e25, "FLOP", "3.80e25 FLOP"),
        (128_256, "", "128K"),
        (999.7e6, "", "1.00B"),  # rounding steps up a prefix
        (512, "", "512"),
        (0.25, "", "0.25"),
        (-2.5e9, "", "-2.50B"),
        (16 * GiB, "B", "16.0 GiB"),
        (1000, "B", "1000 B"),
        (1.5 * 2**50, "B", "1.50 PiB"),
        (1e37, "B", "1.00e37 B"),  # past EiB: scientific, not 8 billion EiB
    ],
)
def test_humanize(value, unit, text):
    assert humanize(value, unit) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(45, "45 s"), (750, "12.5 min"), (11520, "3.20 h"), (5_860_000, "67.8 days")],
)
def test_humanize_duration(seconds, text):
    assert humanize_duration(seconds) == text


def test_estimates_import_neither_torch_nor_numpy_nor_the_runtime():
    code = (
        "import sys, compiler.estimates; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'runtime')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
