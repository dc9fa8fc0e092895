"""The Llama 3 model: exact parameter counts, config checking, init, loss and packing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from runtime.model import ConfigError, Llama, from_config
from runtime.model.attention import choose_backend, document_mask
from runtime.model.rope import document_positions, inv_frequencies

LLAMA3 = {"vocab_size": 128256, "kv_heads": 8, "head_dim": 128, "tied_embeddings": False}


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ({"dim": 4096, "layers": 32, "heads": 32, "ffn_dim": 14336}, 8_030_261_248),
        ({"dim": 8192, "layers": 80, "heads": 64, "ffn_dim": 28672}, 70_553_706_496),
        ({"dim": 16384, "layers": 126, "heads": 128, "ffn_dim": 53248}, 405_853_388_800),
    ],
    ids=["8B", "70B", "405B"],
)
def test_llama3_sizes_count_exactly_the_published_parameters(shape, expected):
    model = from_config({**LLAMA3, **shape}, device="meta")
    assert model.num_params() == expected


def test_tied_embeddings_share_one_matrix_counted_once():
    llama32_1b = {**LLAMA3, "dim": 2048, "layers": 16, "heads": 32, "head_dim": 64,
                  "ffn_dim": 8192, "tied_embeddings": True}
    model = from_config(llama32_1b, device="meta")
    assert model.output is None
    assert model.num_params() == 1_235_814_400
    assert "output.weight" not in model.state_dict()


def test_config_extra_keys_are_ignored_and_kept_for_checkpoints(tiny_config):
    model = from_config({**tiny_config, "tokenizer": "llama3", "notes": [1, 2]}, seed=0)
    assert model.config["tokenizer"] == "llama3"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"heads": 3}, "multiple of kv_heads"),
        ({"head_dim": 15}, "even"),
        ({"dim": 0}, "positive"),
        ({"rope_scaling": {"factor": 8.0}}, "rope_scaling needs"),
    ],
)
def test_impossible_configs_are_rejected_before_allocating(tiny_config, change, message):
    with pytest.raises(ConfigError, match=message):
        from_config({**tiny_config, **change}, device="meta")


def test_missing_config_keys_are_named(tiny_config):
    del tiny_config["ffn_dim"]
    with pytest.raises(ConfigError, match="ffn_dim"):
        Llama(tiny_config)


def test_init_shrinks_residual_output_projections_with_depth():
    cfg = {"vocab_size": 512, "dim": 256, "layers": 8, "heads": 4, "kv_heads": 2, "ffn_dim": 512,
           "init_std": 0.02}
    model = from_config(cfg, seed=0)
    block = model.layers[0]
    assert block.attention.wq.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.attention.wo.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert block.feed_forward.w2.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.equal(block.ffn_norm.weight, torch.ones(256))


def test_same_seed_same_weights(tiny_config):
    a, b = from_config(tiny_config, seed=3), from_config(tiny_config, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_loss_is_cross_entropy_of_the_logits_and_ignores_minus_100(tiny_config):
    model = from_config(tiny_config, seed=0)
    tokens = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    targets = tokens.roll(-1, dims=1)
    targets[:, :4] = -100  # a loss mask: the prompt part does not count
    loss = model(tokens, targets=targets)
    logits = model(tokens)
    expected = F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, expected)
    total = model(tokens, targets=targets, reduction="sum")
    torch.testing.assert_close(total, expected * (targets != -100).sum())


def test_casting_the_model_keeps_rope_frequencies_in_fp32(tiny_config):
    model = from_config(tiny_config, seed=0).to(torch.bfloat16)
    assert model.inv_freq.dtype == torch.float32
    torch.testing.assert_close(model.inv_freq, inv_frequencies(16, 500000.0))


def _packed(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (1, sum(lengths)), generator=g)
    doc_ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])[None]
    return tokens, doc_ids


def test_packed_documents_give_the_same_logits_as_each_document_alone(tiny_config):
    model = from_config(tiny_config, seed=0)
    lengths = [5, 9, 1, 7]
    tokens, doc_ids = _packed(lengths)
    packed = model(tokens, doc_ids)
    start = 0
    for n in lengths:
        alone = model(tokens[:, start : start + n])
        torch.testing.assert_close(packed[:, start : start + n], alone, rtol=1e-5, atol=1e-5)
        start += n


def test_without_document_ids_attention_crosses_documents(tiny_config):
    model = from_config(tiny_config, seed=0)
    tokens, doc_ids = _packed([6, 6])
    assert not torch.allclose(model(tokens, doc_ids)[:, 6:], model(tokens)[:, 6:], atol=1e-3)


def test_packed_loss_and_gradients_match_separate_documents(tiny_config):
    model = from_config(tiny_config, seed=0)
    lengths = [7, 4, 9]
    tokens, doc_ids = _packed(lengths, seed=1)
    targets = tokens.roll(-1, dims=1)
    ends = torch.tensor(lengths).cumsum(0) - 1
    targets[0, ends] = -100  # never predict across a boundary
    packed_loss = model(tokens, doc_ids, targets, reduction="sum")
    packed_grads = torch.autograd.grad(packed_loss, list(model.parameters()))

    start, alone_loss = 0, 0.0
    for n in lengths:
        sl = slice(start, start + n)
        alone_loss = alone_loss + model(tokens[:, sl], targets=targets[:, sl], reduction="sum")
        start += n
    alone_grads = torch.autograd.grad(alone_loss, list(model.parameters()))
    torch.testing.assert_close(packed_loss, alone_loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(packed_grads, alone_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_block_mask_matches_the_dense_mask(tiny_config):
    """The GPU path's mask_mod, checked on the CPU (FlexAttention runs forward-only here)."""
    model = from_config(tiny_config, seed=0)
    tokens = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(2))
    doc_ids = torch.tensor([[0] * 10 + [1] * 14, [0] * 3 + [1] * 3 + [2] * 18])
    with torch.no_grad():
        dense = model(tokens, doc_ids, mask=document_mask(doc_ids, "dense"))
        flex = model(tokens, doc_ids, mask=document_mask(doc_ids, "flex"))
    torch.testing.assert_close(flex, dense, rtol=1e-5, atol=1e-5)


def test_heads_narrower_than_flex_attention_allows_use_the_dense_mask_on_a_gpu():
    # torch's FlexAttention kernels refuse head dimensions below 16 (seen on an H200 with a
    # 12-wide test model); such models take the dense mask instead of failing to compile.
    cuda = torch.device("cuda")
    assert choose_backend(cuda, head_dim=12) == "dense"
    assert choose_backend(cuda, head_dim=16) == "flex"
    assert choose_backend(torch.device("cpu"), head_dim=128) == "dense"
    doc_ids = torch.tensor([[0, 0, 1, 1]])
    assert document_mask(doc_ids, head_dim=12).kind == "dense"


def test_compiled_flex_attention_is_not_recompiled_for_each_batch_of_documents():
    """On the GPU, FlexAttention runs compiled and each batch brings a new mask_mod closure
    over new document ids. If Dynamo guarded on the closure, every step would recompile
    (then fall back to eager, which materialises the scores). Checked with the CPU backend."""
    from torch._dynamo.utils import counters
    from torch.nn.attention.flex_attention import flex_attention

    from runtime.model.attention import _flex_block_mask

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(flex_attention, dynamic=False)
    batch, length = 2, 128
    g = torch.Generator().manual_seed(0)
    for cuts in ([5, 70], [40, 41], [127, 127]):
        doc_ids = torch.zeros(batch, length, dtype=torch.long)
        for cut in cuts:
            doc_ids[:, cut:] += 1
        q = torch.randn(batch, 4, length, 16, generator=g)
        k, v = (torch.randn(batch, 2, length, 16, generator=g) for _ in range(2))
        got = compiled(q, k, v, block_mask=_flex_block_mask(doc_ids), enable_gqa=True)
        dense = document_mask(doc_ids, "dense").dense
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, enable_gqa=True)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("stacked", ["off", "on"])
def test_the_whole_model_under_torch_compile_matches_eager_without_recompiling(stacked, monkeypatch):
    """`compile = true` in a pretrain block wraps the model in torch.compile: same loss and
    gradients as eager, and one graph across batches whose document boundaries differ; also
    with q/k/v and w1/w3 stacked into one matmul each (CUDA's default)."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("HERD_FUSE_PROJECTIONS", stacked)

    torch._dynamo.reset()
    counters.clear()
    config = {"vocab_size": 256, "dim": 64, "layers": 1, "heads": 4, "kv_heads": 2, "ffn_dim": 128,
              "tied_embeddings": True}
    eager, compiled = from_config(config, seed=0), from_config(config, seed=0)
    step = torch.compile(compiled)
    for boundary in (10, 21):
        tokens = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(boundary))
        doc_ids = torch.zeros(2, 32, dtype=torch.long)
        doc_ids[:, boundary:] = 1
        want = eager(tokens[:, :-1], doc_ids, tokens[:, 1:])
        got = step(tokens[:, :-1], doc_ids, tokens[:, 1:])
        want.backward()
        got.backward()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for a, b in zip(compiled.parameters(), eager.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
            a.grad = b.grad = None
    assert counters["stats"]["unique_graphs"] == 1


def test_document_positions_restart_at_each_boundary():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert document_positions(doc_ids).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]


def test_llama31_rope_scaling_slows_only_long_wavelengths():
    from runtime.model.config import RopeScaling

    plain = inv_frequencies(128, 500000.0)
    scaled = inv_frequencies(128, 500000.0, RopeScaling(8.0, 1.0, 4.0, 8192))
    wavelen = 2 * math.pi / plain
    short, long = wavelen < 8192 / 4, wavelen > 8192 / 1
    torch.testing.assert_close(scaled[short], plain[short])
    torch.testing.assert_close(scaled[long], plain[long] / 8)
    middle = ~short & ~long
    assert middle.any()
    assert torch.all(scaled[middle] < plain[middle]) and torch.all(scaled[middle] > plain[middle] / 8)
