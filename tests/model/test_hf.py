"""Hugging Face interop: the mapping is a pure renaming, both ways, and transformers agrees.

Where transformers is installed, an exported tiny model must give herd's logits in
`LlamaForCausalLM`; without it, the file layout and the key/shape mapping are still checked.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from runtime.model import (
    CheckpointError,
    export_hf,
    from_config,
    import_hf,
    load_checkpoint,
    save_checkpoint,
)
from runtime.model.hf import from_hf_key, to_hf_key
from runtime.model.hf_folder import weight_bytes

SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context": 32}


@pytest.fixture(params=["untied", "tied+llama3.1-scaling"])
def model(request, tiny_config):
    cfg = tiny_config if request.param == "untied" else {
        **tiny_config, "tied_embeddings": True, "rope_scaling": SCALING}
    return from_config(cfg, seed=0)


@pytest.fixture
def exported(model, tmp_path):
    save_checkpoint(model, tmp_path / "ckpt")
    return export_hf(tmp_path / "ckpt", tmp_path / "hf")


def test_every_tensor_gets_its_transformers_name_and_keeps_its_shape(model, exported):
    hf = load_file(exported / "model.safetensors")
    ours = model.state_dict()
    assert set(hf) == {to_hf_key(k) for k in ours}
    for name, tensor in ours.items():
        assert torch.equal(hf[to_hf_key(name)], tensor)  # no permutation: the same RoPE layout
    assert "model.layers.1.self_attn.k_proj.weight" in hf
    assert hf["model.layers.0.self_attn.k_proj.weight"].shape == (2 * 16, 64)  # Hk * Dh rows
    assert ("lm_head.weight" in hf) == (model.output is not None)


def test_names_map_back_exactly():
    names = ["tok_embeddings.weight", "norm.weight", "output.weight",
             "layers.3.attention.wq.weight", "layers.3.attention.wk.weight",
             "layers.3.attention.wv.weight", "layers.3.attention.wo.weight",
             "layers.3.feed_forward.w1.weight", "layers.3.feed_forward.w2.weight",
             "layers.3.feed_forward.w3.weight", "layers.3.attention_norm.weight",
             "layers.3.ffn_norm.weight"]
    assert [from_hf_key(to_hf_key(n)) for n in names] == names
    assert to_hf_key("layers.3.feed_forward.w1.weight") == "model.layers.3.mlp.gate_proj.weight"
    with pytest.raises(KeyError):
        to_hf_key("layers.0.attention.bias")


def test_config_json_describes_a_llama_for_causal_lm(model, exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"]) == (64, 2, 4, 2, 160)
    assert config["tie_word_embeddings"] == model.args.tied_embeddings
    if model.args.rope_scaling:
        assert config["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    else:
        assert config["rope_scaling"] is None


def test_export_then_import_is_the_identity(model, exported, tmp_path):
    back, _ = load_checkpoint(import_hf(exported, tmp_path / "back"))
    assert back.args == model.args
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor)


def test_import_and_export_report_each_pass_of_the_weights(model, exported, tmp_path):
    """`herd import`/`export` draw their bar over three passes of the weights (read, write,
    checksum): the bytes they report add up to about three times the weights' files."""
    heard: list[int] = []
    import_hf(exported, tmp_path / "back", on_bytes=heard.append)
    size = weight_bytes(exported)
    assert 0.97 * 3 * size <= sum(heard) <= 3 * size
    heard.clear()
    export_hf(tmp_path / "back", tmp_path / "again", on_bytes=heard.append)
    size = (tmp_path / "back" / "model.safetensors").stat().st_size
    assert 0.97 * 3 * size <= sum(heard) <= 3 * size
    assert weight_bytes(tmp_path / "nowhere") == 0  # the reader, not the bar, reports it


def test_sharded_directories_import_like_a_single_file(model, exported, tmp_path):
    tensors = load_file(exported / "model.safetensors")
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    (shard_dir / "config.json").write_text((exported / "config.json").read_text())
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, shard_dir / file)
        weight_map.update(dict.fromkeys(keys, file))
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    back, _ = load_checkpoint(import_hf(shard_dir, tmp_path / "back"))
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_import_refuses_what_it_cannot_represent(exported, tmp_path):
    config = json.loads((exported / "config.json").read_text())
    (exported / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(CheckpointError, match="Llama models only"):
        import_hf(exported, tmp_path / "a")
    (exported / "config.json").write_text(json.dumps({**config, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}))
    with pytest.raises(CheckpointError, match="'yarn' is not supported"):
        import_hf(exported, tmp_path / "b")
    (exported / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        import_hf(exported, tmp_path / "c")


def test_pickle_only_directories_are_refused_with_a_hint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="safetensors only"):
        import_hf(tmp_path, tmp_path / "out")


def test_transformers_gives_herd_logits(model, exported):
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tokens = torch.randint(0, 256, (2, 80), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens), rtol=1e-4, atol=1e-4)


def test_a_transformers_model_imports_with_its_logits(tmp_path, tiny_config):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
        max_position_embeddings=256, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours, _ = load_checkpoint(import_hf(tmp_path / "hf", tmp_path / "herd"))
    tokens = torch.randint(0, 256, (1, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, rtol=1e-4, atol=1e-4)


def test_export_and_import_never_delete_what_they_did_not_write(model, exported, tmp_path):
    ckpt = tmp_path / "ckpt"
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "README.md").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists and holds files"):
        export_hf(ckpt, folder)
    with pytest.raises(CheckpointError, match="already exists and holds files"):
        import_hf(exported, folder)
    assert [p.name for p in folder.iterdir()] == ["README.md"]
    export_hf(ckpt, folder, force=True)  # the two HF files land beside the user's
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    back, _ = load_checkpoint(import_hf(folder, tmp_path / "back"))
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert (folder / "README.md").read_text() == "mine"


@pytest.mark.parametrize("variant", ["tied", "llama3-rope", "head_dim-not-dim/heads+gqa", "bf16"])
def test_transformers_models_of_every_llama_shape_import_with_their_logits(tmp_path, variant):
    transformers = pytest.importorskip("transformers")
    kw = dict(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
              max_position_embeddings=128)
    if variant == "tied":
        kw["tie_word_embeddings"] = True
    if variant == "llama3-rope":  # long wavelengths scaled: positions past 16 tell
        kw["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    if variant == "head_dim-not-dim/heads+gqa":
        kw.update(num_attention_heads=6, num_key_value_heads=2, head_dim=14)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)  # norms away from 1, so a swapped norm would show
    if variant == "bf16":
        hf = hf.to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "hf")
    ours, meta = load_checkpoint(import_hf(tmp_path / "hf", tmp_path / "herd"), dtype=torch.float32)
    assert meta["model"]["tied_embeddings"] == (variant == "tied")
    assert meta["dtype"] == ("bfloat16" if variant == "bf16" else "float32")
    tokens = torch.randint(0, 64, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # reloaded in fp32: a model cast to bf16 keeps bf16-rounded RoPE frequencies
        theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
        torch.testing.assert_close(ours(tokens), theirs.eval()(tokens).logits, rtol=1e-4, atol=1e-4)


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_import_explains_broken_configs_instead_of_raising_python_errors(exported, tmp_path):
    (exported / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="must hold a JSON object"):
        import_hf(exported, tmp_path / "a")
    (exported / "config.json").write_text(json.dumps({"model_type": "llama"}))
    _edit_config(exported, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(CheckpointError, match="llama3 RoPE scaling needs"):
        import_hf(exported, tmp_path / "b")


def test_import_refuses_integer_or_fp8_weights_and_shards_outside_the_folder(exported, tmp_path):
    weights = load_file(exported / "model.safetensors")
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in weights.items()}, exported / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"float8_e4m3fn.*\nhint: quantized"):
        import_hf(exported, tmp_path / "a")
    (exported / "model.safetensors").unlink()
    index = {"weight_map": {k: "../elsewhere/model.safetensors" for k in weights}}
    (exported / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="shards must sit next to the index"):
        import_hf(exported, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_never_writes_inside_its_own_checkpoint(model, tmp_path):
    ckpt = save_checkpoint(model, tmp_path / "ckpt")
    before = (ckpt / "meta.json").read_bytes()
    with pytest.raises(CheckpointError, match="inside the input"):
        export_hf(ckpt, ckpt / "meta.json", force=True)
    assert (ckpt / "meta.json").read_bytes() == before
    with pytest.raises(CheckpointError, match="dtype must be"):
        export_hf(ckpt, tmp_path / "ints", dtype=torch.int8)
