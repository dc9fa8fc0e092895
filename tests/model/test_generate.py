"""Incremental decoding: the KV cache changes speed, never the tokens."""

from __future__ import annotations

import pytest
import torch

from runtime.model import from_config, generate
from runtime.model.generation import sample_next

PROMPTS = [[11, 200, 3, 47, 5, 90, 7], [12, 13], [100, 31, 250, 9]]


@pytest.fixture
def model(tiny_config):
    return from_config(tiny_config, seed=0)


def greedy_without_cache(model, prompt: list[int], steps: int) -> list[int]:
    """Re-run the whole forward pass for every new token: slow, obviously right."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt) :]


def test_cached_greedy_decoding_equals_recomputing_the_full_forward(model):
    out = generate(model, PROMPTS, max_new_tokens=12, temperature=0)
    for prompt, completion in zip(PROMPTS, out, strict=True):
        assert completion.tokens == greedy_without_cache(model, prompt, 12)
        assert completion.finish_reason == "length"
    assert len(set(map(tuple, (c.tokens for c in out)))) == 3  # a meaningful, varied check


def test_a_batch_of_left_padded_prompts_decodes_like_each_prompt_alone(model):
    batch = generate(model, PROMPTS, max_new_tokens=10, temperature=0)
    for prompt, completion in zip(PROMPTS, batch, strict=True):
        assert generate(model, [prompt], max_new_tokens=10, temperature=0)[0] == completion


def test_the_cache_holds_kv_heads_not_query_heads(model):
    from runtime.model.kv_cache import KVCache

    seen = []
    original = KVCache.update

    def spy(self, layer, k, v):
        seen.append(k.shape)
        return original(self, layer, k, v)

    KVCache.update = spy
    try:
        generate(model, [[1, 2, 3]], max_new_tokens=2, temperature=0)
    finally:
        KVCache.update = original
    assert {s[1] for s in seen} == {model.args.kv_heads}


def test_each_row_stops_at_its_own_stop_token(model):
    free = generate(model, PROMPTS, max_new_tokens=12, temperature=0)
    stop_first = free[0].tokens[3]
    stop_second = free[1].tokens[0]
    out = generate(model, PROMPTS, max_new_tokens=12, temperature=0,
                   stop_tokens=[{stop_first}, {stop_second}, set()])
    first = free[0].tokens.index(stop_first)
    assert out[0].tokens == free[0].tokens[:first]
    assert (out[0].finish_reason, out[0].stop_token) == ("stop", stop_first)
    assert out[1].tokens == [] and out[1].finish_reason == "stop"
    assert out[2] == free[2]


def test_shared_stop_tokens_apply_to_every_row(model):
    free = generate(model, PROMPTS, max_new_tokens=6, temperature=0)
    stop = free[2].tokens[2]
    out = generate(model, PROMPTS, max_new_tokens=6, temperature=0, stop_tokens=[stop])
    for before, after in zip(free, out, strict=True):
        cut = before.tokens.index(stop) if stop in before.tokens else len(before.tokens)
        assert after.tokens == before.tokens[:cut]


def test_streaming_callback_sees_every_kept_token_in_order(model):
    streamed: dict[int, list[int]] = {0: [], 1: [], 2: []}
    out = generate(model, PROMPTS, max_new_tokens=5, temperature=0.8, seed=1,
                   on_token=lambda row, tok: streamed[row].append(tok))
    assert [streamed[i] for i in range(3)] == [c.tokens for c in out]


def test_sampling_is_reproducible_with_a_seed_and_varies_without_one(model):
    a = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0, seed=7)
    b = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0, seed=7)
    c = generate(model, PROMPTS, max_new_tokens=8, temperature=1.0, seed=8)
    assert a == b
    assert a != c


def test_top_k_one_and_a_tiny_nucleus_are_greedy(model):
    greedy = generate(model, PROMPTS, max_new_tokens=6, temperature=0)
    assert generate(model, PROMPTS, max_new_tokens=6, temperature=1.5, top_k=1, seed=0) == greedy
    assert generate(model, PROMPTS, max_new_tokens=6, temperature=1.5, top_p=1e-6, seed=0) == greedy


def test_top_k_and_top_p_only_sample_from_the_allowed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, -1.0, -2.0]]).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_k=2, generator=g).tolist()) == {0, 1}
    # Probabilities ~ [0.66, 0.24, 0.09, ...]: the 0.8 nucleus is tokens 0 and 1.
    assert set(sample_next(logits, top_p=0.8, generator=g).tolist()) == {0, 1}


def test_max_new_tokens_bounds_the_output(model):
    assert [len(c.tokens) for c in generate(model, PROMPTS, max_new_tokens=3, temperature=0)] == [3, 3, 3]
    assert generate(model, PROMPTS, max_new_tokens=0)[0].tokens == []


def test_empty_prompts_are_refused(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1], []], max_new_tokens=2)


def test_a_row_ends_when_it_fills_the_context_as_it_would_alone(tiny_config):
    model = from_config({**tiny_config, "max_context": 12}, seed=0)
    long, short = [5] * 10, [7, 8]
    out = generate(model, [long, short], max_new_tokens=8, temperature=0)
    assert len(out[0].tokens) == 2 and out[0].finish_reason == "length"  # 10 + 2 = context
    assert out[1].tokens == generate(model, [short], max_new_tokens=8, temperature=0)[0].tokens
    assert len(out[1].tokens) == 8
    assert generate(model, [[5] * 12], max_new_tokens=3)[0].tokens == []  # already full


@pytest.mark.parametrize(("prompts", "message"), [
    ([[1] * 300], "longer than the model's context of 256"),
    ([[1, 256]], "token id 256, outside the model's vocabulary"),
    ([[1, -1]], "token id -1"),
    ([1, 2, 3], "must be a list of token ids"),
    (["hello"], "encode text with the tokenizer first"),
])
def test_prompts_the_model_cannot_read_are_refused_with_a_reason(model, prompts, message):
    with pytest.raises(ValueError, match=message):
        generate(model, prompts, max_new_tokens=2)


@pytest.mark.parametrize(("settings", "message"), [
    ({"top_p": 0.0}, "top_p must be in"),
    ({"top_p": 1.5}, "top_p must be in"),
    ({"top_k": -1}, "top_k must be >= 0"),
    ({"temperature": float("nan")}, "temperature must be a number"),
])
def test_sampling_settings_that_leave_no_token_are_refused(model, settings, message):
    with pytest.raises(ValueError, match=message):
        generate(model, [[1, 2]], max_new_tokens=2, **settings)


def test_numpy_and_tensor_ids_work_as_prompts_and_stop_tokens(model):
    np = pytest.importorskip("numpy")
    first = generate(model, [PROMPTS[0]], max_new_tokens=3, temperature=0)[0].tokens
    out = generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=3, temperature=0,
                   stop_tokens=[np.int64(first[1])])[0]
    assert out.tokens == first[:1] and out.stop_token == first[1]


def test_the_package_name_generate_stays_the_function_after_any_import_order():
    """The module is `generation`: a submodule named like the package's lazy `generate`
    would replace the function with itself once anything imported it directly."""
    import importlib

    import runtime.model as M

    importlib.import_module("runtime.model.generation")
    assert callable(M.generate) and M.generate.__module__ == "runtime.model.generation"
