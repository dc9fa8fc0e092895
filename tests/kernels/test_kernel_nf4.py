"""NF4 dequantization kernel (QLoRA's frozen base): the same weight as the torch reference,
bit for bit (the math is one fp32 product either way), at shapes that end mid-block."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import runtime.kernels as kernels  # noqa: E402
from runtime.kernels import reference  # noqa: E402
from runtime.kernels.fused.nf4 import nf4_dequantize  # noqa: E402
from runtime.post import nf4 as NF4  # noqa: E402


@pytest.mark.parametrize("shape", [(64, 64), (3, 70), (1, 2500), (257, 129), (1, 1)],
                         ids=["whole-blocks", "mid-block", "one-row-many-launch-blocks", "odd", "single"])
def test_the_kernel_gives_the_references_weight_exactly(shape):
    codes, scales = NF4.quantize(torch.randn(shape) * 0.02)
    got = nf4_dequantize(codes, scales, NF4.LEVELS, NF4.BLOCK, shape, torch.float32)
    want = reference.nf4_dequantize(codes, scales, NF4.LEVELS, NF4.BLOCK, shape, torch.float32)
    assert got.shape == shape and got.dtype == torch.float32
    assert torch.equal(got, want)


def test_every_code_in_both_nibbles_decodes_to_its_level():
    # byte k holds codes (k // 16, k % 16): all 256 pairs, one block scale of 2
    codes = torch.arange(256, dtype=torch.uint8)
    scales = torch.full((8,), 2.0)
    got = nf4_dequantize(codes, scales, NF4.LEVELS, NF4.BLOCK, (512,), torch.float32)
    expected = torch.stack([NF4.LEVELS[torch.arange(256) // 16], NF4.LEVELS[torch.arange(256) % 16]], 1).view(-1) * 2
    assert torch.equal(got, expected)


def test_a_qlora_projection_trains_the_same_on_either_backend(monkeypatch):
    """NF4Linear's forward and its input gradient, through the dispatcher: Triton (forced,
    interpreted) against the reference."""
    torch.manual_seed(0)
    layer = NF4.NF4Linear(torch.nn.Linear(70, 33, bias=False))
    x = torch.randn(4, 70)
    results = []
    for backend in ("triton", "reference"):
        monkeypatch.setenv("HERD_KERNELS", backend)
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.square().sum().backward()
        results.append((y.detach(), xi.grad))
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)


def test_codes_that_do_not_fit_the_shape_are_refused_before_any_launch():
    codes, scales = NF4.quantize(torch.randn(8, 8))
    with pytest.raises(ValueError, match=r"do not encode a \(8, 16\) weight in blocks of 64"):
        kernels.nf4_dequantize(codes, scales, NF4.LEVELS, NF4.BLOCK, (8, 16), torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled, not interpreted)")
def test_on_cuda_the_compiled_kernel_gives_the_references_bf16_weight_exactly():
    """Both round the same fp32 product to bf16 once; run by benchmarks/gpu_session.sh."""
    shape = (14336 // 4, 4096 + 64 * 3 + 17)
    codes, scales = NF4.quantize(torch.randn(shape, device="cuda") * 0.02)
    levels = NF4.LEVELS.cuda()
    got = nf4_dequantize(codes, scales, levels, NF4.BLOCK, shape, torch.bfloat16)
    want = reference.nf4_dequantize(codes, scales, levels, NF4.BLOCK, shape, torch.bfloat16)
    assert torch.equal(got, want)


def test_strided_codes_and_the_wrong_code_type_are_handled_before_the_kernel_reads_memory(monkeypatch):
    """The kernel reads raw pointers: a strided view is made dense first (the same weight as
    the reference's), and int8 codes (negative nibbles) are refused."""
    monkeypatch.setenv("HERD_KERNELS", "triton")
    codes, scales = NF4.quantize(torch.randn(4, 64) * 0.02)
    spaced = torch.stack([codes, torch.zeros_like(codes)], 1).view(-1)[::2]  # same bytes, stride 2
    assert not spaced.is_contiguous()
    got = kernels.nf4_dequantize(spaced, scales, NF4.LEVELS, NF4.BLOCK, (4, 64), torch.float32)
    assert torch.equal(got, reference.nf4_dequantize(codes, scales, NF4.LEVELS, NF4.BLOCK, (4, 64), torch.float32))
    with pytest.raises(ValueError, match="codes must be uint8"):
        kernels.nf4_dequantize(codes.view(torch.int8), scales, NF4.LEVELS, NF4.BLOCK, (4, 64), torch.float32)
