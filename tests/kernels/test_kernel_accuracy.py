"""The accuracy rule: herd's error against fp64 is at most 2x plain torch's, per output and gradient.

On the CPU the kernels run interpreted in fp32, where both errors are rounding noise, so one
fp32 epsilon of error is always allowed; on a GPU the same rule runs in bf16 with no allowance.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from runtime.kernels.accuracy import (  # noqa: E402
    ALLOWED_RATIO,
    Measurement,
    fused_ops,
    llama_cases,
    measure,
)

# A Llama-shaped miniature: GQA with 4 query heads per KV head, a vocabulary wider than
# one 4096-wide kernel block, dimensions that are not powers of two.
TINY = llama_cases(tokens=24, dim=96, ffn_dim=200, heads=4, kv_heads=1, vocab=5000, batch=2)
# Llama 3 8B shapes at one 2K-token sequence; the GPU check runs the 8K version.
LLAMA_8B = llama_cases(tokens=2048, dim=4096, ffn_dim=14336, heads=32, kv_heads=8, vocab=128_256)


@pytest.mark.parametrize("case", TINY, ids=[c.name for c in TINY])
def test_fp32_kernels_are_as_accurate_as_torch(case):
    results = measure(case, fused_ops(), torch.float32, "cpu", noise_floor=torch.finfo().eps)
    two_outputs = case.name in ("apply_rope", "add_rms_norm")  # (q, k); (h, y)
    assert len(results) == 1 + len(case.grads) + two_outputs
    for m in results:
        assert m.ok, m
        assert m.herd_error < 1e-6, m  # and plainly fp32-accurate


def test_the_rule_allows_twice_torch_error_and_no_more():
    assert Measurement("c", "out", herd_error=2e-3, torch_error=1e-3).ok
    assert not Measurement("c", "out", herd_error=2.1e-3, torch_error=1e-3).ok
    assert Measurement("c", "out", 2.1e-3, 1e-3, noise_floor=1e-4).ok
    assert ALLOWED_RATIO == 2.0


def test_a_wrong_kernel_fails_the_rule():
    """The rule has teeth: silu(gate) * up without the sigmoid's exact form is caught."""
    case = next(c for c in TINY if c.name == "swiglu")

    class Sloppy:
        @staticmethod
        def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
            g = gate.float()
            return (g * torch.clamp(0.5 + g / 4, 0, 1) * up.float()).to(gate.dtype)  # hard sigmoid

    assert not any(m.ok for m in measure(case, Sloppy, torch.float32, "cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", LLAMA_8B, ids=[c.name for c in LLAMA_8B])
def test_bf16_kernels_are_as_accurate_as_torch_on_gpu(case):
    for m in measure(case, fused_ops(), torch.bfloat16, "cuda"):
        assert m.ok, m


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("chunk_rows", [512, 128], ids=["4-chunks-in-bf16", "16-chunks-in-fp32"])
def test_the_weight_gradient_stays_accurate_over_many_chunks_on_gpu(chunk_rows):
    """Up to 4 chunks the weight gradient accumulates in bf16, past that in fp32 (through
    `addmm(out_dtype=float32)` where CUDA has it): either way within the rule."""
    from types import SimpleNamespace

    from runtime.kernels.fused.linear_cross_entropy import linear_cross_entropy

    ops = SimpleNamespace(linear_cross_entropy=lambda h, w, t, *a: linear_cross_entropy(
        h, w, t, *a, chunk_rows=chunk_rows))
    case = next(c for c in LLAMA_8B if c.name == "linear_cross_entropy[mean]")
    for m in measure(case, ops, torch.bfloat16, "cuda"):
        assert m.ok, m


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_fused_loss_can_be_captured_in_a_cuda_graph_on_gpu():
    """The backward asks the device whether the upstream gradient is 1 (to skip a 2 GiB
    rescale); no such sync is allowed while a CUDA graph is captured, so there it always
    scales. Replaying the graph gives the eager gradients."""
    from runtime.kernels.fused.linear_cross_entropy import linear_cross_entropy

    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(512, 256, device="cuda", generator=g, requires_grad=True)
    weight = torch.randn(3000, 256, device="cuda", generator=g, requires_grad=True)
    targets = torch.randint(0, 3000, (512,), device="cuda", generator=g)

    def step() -> None:
        hidden.grad = weight.grad = None
        linear_cross_entropy(hidden, weight, targets, chunk_rows=128).backward()

    step()
    want = hidden.grad.clone(), weight.grad.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm up on the side stream, as torch.cuda.graph asks
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(hidden.grad, want[0])
    torch.testing.assert_close(weight.grad, want[1])
