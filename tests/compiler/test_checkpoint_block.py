"""A `checkpoint` block: a model made elsewhere (a local Llama 3 download, a herd checkpoint)
that stages continue `from` — fine-tuning, extending or annealing it without pre-training.

It brings weights only, so the compiler asks the stages after it for what a pre-training
stage would otherwise pass on (data, batch, optimizer), once, at the first stage that lacks
it; evals that read pre-training text need a data stage on the way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler import compile_spec, compile_with_warnings
from herdlang.diagnostics import Diagnostic, HerdError, Severity
from herdlang.spec import load_spec, load_text

HEAD = """
tokenizer llama3 { file = "llama/tokenizer.json"  vocab = 128_000 }
model llama32_1b {
  tokenizer = llama3  layers = 16  dim = 2048  heads = 32  attention = gqa(kv_heads = 8)
  ffn = swiglu(hidden = 8192)  tied = true  context = 128K
  rope = rope(theta = 500_000, scaling = llama3(factor = 32, original_context = 8K))
}
checkpoint base { path = "llama"  model = llama32_1b  context = 8K }
data web { source jsonl("web/*.jsonl") { text = "text" } }
dataset chats { format = messages  path = "chats.jsonl" }
"""


def compiled(body: str):
    return compile_spec(load_text(HEAD + body, "t.herd"))


def errors_of(body: str) -> list[Diagnostic]:
    with pytest.raises(HerdError) as exc:
        compiled(body)
    return [d for d in exc.value.diagnostics if d.severity is Severity.ERROR]


def test_post_training_starts_from_a_loaded_checkpoint() -> None:
    plan = compiled("posttrain chat { from = base  sft { data = chats } }")
    load = plan.jobs["checkpoint.base"]
    assert load.kind == "model.load" and load.inputs == {"tokenizer": "tokenizer.llama3"}
    assert Path(load.config["path"]).is_absolute() and load.config["path"].endswith("llama")
    assert load.config["model"]["rope_scaling"]["factor"] == 32.0
    assert plan.jobs["post.chat.r1.sft"].inputs["checkpoint"] == "checkpoint.base"
    assert plan.stages["base"]["kind"] == "checkpoint"
    assert plan.models["llama32_1b"]["params"] == 1_235_814_400  # Llama 3.2 1B, tied


def test_extending_a_checkpoint_starts_at_its_context_and_states_data_batch_and_optimizer() -> None:
    plan = compiled("""
extend long { from = base  context = 8K -> 32K  tokens = 1B tokens  data = web
              batch = 1M tokens  optimizer = adamw(lr = 2e-5) }
anneal final { from = long  tokens = 100M tokens  data = web }
""")
    assert plan.jobs["train.long.32K"].inputs["checkpoint"] == "checkpoint.base"
    anneal = plan.jobs["train.final"].config
    assert anneal["optimizer"]["lr"] == 2e-5 and anneal["batch"][0]["tokens"] == 32 * 32768


def test_an_extension_from_a_checkpoint_names_everything_it_lacks_in_one_error() -> None:
    [err] = errors_of("""
extend long { from = base  context = 8K -> 32K  tokens = 1B tokens }
anneal final { from = long  tokens = 100M tokens  data = web }
""")
    assert err.code == "H0204" and err.span.line == HEAD.count("\n") + 2
    assert err.message == ("extend 'long' continues from checkpoint 'base', which brings weights only: "
                           "set 'data', 'batch', 'optimizer'")
    assert err.hint == "e.g. data = web  batch = 1M tokens  optimizer = adamw(lr = 1e-5)"


def test_an_anneal_from_a_checkpoint_needs_a_batch_and_a_peak_lr() -> None:
    [err] = errors_of("anneal final { from = base  tokens = 100M tokens  data = web }")
    assert err.message.endswith("set 'batch', 'peak_lr'")
    plan = compiled("anneal final { from = base  tokens = 100M tokens  data = web  batch = 1M tokens  peak_lr = 3e-5 }")
    opt = plan.jobs["train.final"].config["optimizer"]
    assert opt == {"kind": "adamw", "lr": 3e-5, "betas": [0.9, 0.95], "weight_decay": 0.1, "eps": 1e-8}


def test_an_anneal_through_post_training_is_asked_itself() -> None:
    [err] = errors_of("""
posttrain chat { from = base  sft { data = chats } }
anneal final { from = chat  tokens = 100M tokens  data = web }
""")
    assert err.message.startswith("anneal 'final' continues from checkpoint 'base' (through 'chat')")


def test_post_training_evals_that_read_pretraining_text_need_a_data_stage_on_the_way() -> None:
    [err] = errors_of("posttrain chat { from = base  sft { data = chats }  evals = [tasks, perplexity] }")
    assert err.code == "H0204" and "eval 'perplexity' reads held-out pre-training text" in err.message
    assert err.hint == "use evals that read a dataset (tasks, multiple_choice), or anneal on a data stage first"
    compiled("""
anneal warm { from = base  tokens = 10M tokens  data = web  batch = 1M tokens  peak_lr = 1e-5 }
posttrain chat { from = warm  sft { data = chats }  evals = [tasks, perplexity] }
""")


def test_an_extension_must_start_at_the_checkpoint_context() -> None:
    [err] = errors_of("""extend long { from = base  context = 16K -> 32K  tokens = 1B tokens  data = web
                         batch = 1M tokens  optimizer = adamw(lr = 2e-5) }""")
    assert err.code == "H0407" and "the context 'base' ends at (8,192)" in err.message


def test_the_checkpoint_model_needs_a_tokenizer() -> None:
    text = HEAD.replace("tokenizer = llama3  layers", "vocab = 128_256  layers") + \
        "posttrain chat { from = base  sft { data = chats } }"
    with pytest.raises(HerdError) as exc:
        compile_spec(load_text(text, "t.herd"))
    [err] = [d for d in exc.value.diagnostics if d.severity is Severity.ERROR]
    assert err.message == "checkpoint 'base': model 'llama32_1b' names no tokenizer"
    assert 'tokenizer NAME { file = "<checkpoint folder>/tokenizer.json" }' in err.hint


def test_a_stage_naming_another_model_than_the_checkpoint_holds_is_h0405() -> None:
    [err] = errors_of("""
model other { tokenizer = llama3  layers = 2  dim = 64  heads = 4 }
posttrain chat { from = base  model = other  sft { data = chats } }
""")
    assert err.code == "H0405" and "continues from a checkpoint of model 'llama32_1b', not 'other'" in err.message


def test_a_misspelt_from_suggests_the_checkpoint_and_a_probe_cannot_start_there() -> None:
    [err] = errors_of("posttrain chat { from = bsae  sft { data = chats } }")
    assert err.code == "H0301" and err.hint == "did you mean 'base'?"
    errs = errors_of("""
anneal warm { from = base  tokens = 10M tokens  data = web  batch = 1M tokens  peak_lr = 1e-5 }
probe p { from = base  new = web  share = 10%  tokens = 1M tokens }""")
    assert [e.code for e in errs] == ["H0302"] and "'base' is a checkpoint block, not a stage" in errs[0].message


def test_a_missing_checkpoint_folder_is_a_warning(tmp_path: Path) -> None:
    """One warning for the folder, listing what the spec expected in it (the tokenizer file
    and the checkpoint), or one for the checkpoint alone."""
    spec_file = tmp_path / "ft.herd"
    spec_file.write_text(HEAD + "posttrain chat { from = base  sft { data = chats } }", encoding="utf-8")
    _, warnings = compile_with_warnings(load_spec(spec_file))
    [folder] = [w for w in warnings if "llama" in w.message]
    assert folder.code == "H0604" and folder.message.endswith("llama/ does not exist: 2 input paths under it are missing")
    assert any(n.endswith("checkpoint base: 'llama'") for n in folder.notes)
    (tmp_path / "tok.json").write_text("{}")
    spec_file.write_text(HEAD.replace("llama/tokenizer.json", "tok.json") +
                         "posttrain chat { from = base  sft { data = chats } }", encoding="utf-8")
    _, warnings = compile_with_warnings(load_spec(spec_file))
    assert [w.message for w in warnings if "llama" in w.message] == ["checkpoint base: 'llama' does not exist"]


def test_the_loaded_checkpoint_carries_its_tokenizer_and_the_tokenizer_its_vocab() -> None:
    """`herd generate`/`export` on `checkpoint.base` find the tokenizer beside it; the
    tokenizer job checks the block's `vocab` against the file's ranks."""
    plan = compiled("posttrain chat { from = base  sft { data = chats } }")
    assert plan.jobs["checkpoint.base"].inputs == {"tokenizer": "tokenizer.llama3"}
    assert plan.jobs["tokenizer.llama3"].config["vocab"] == 128_000


def test_a_path_that_is_a_file_or_no_checkpoint_folder_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text("{}")
    spec_file = tmp_path / "ft.herd"
    for path, says in (("llama/config.json", "'llama/config.json' is a file"),
                       ("empty[v3]", "'empty[v3]' holds no config.json (Hugging Face) or meta.json (herd)")):
        (tmp_path / "empty[v3]").mkdir(exist_ok=True)  # glob characters in a real name: it exists
        spec_file.write_text(HEAD.replace('path = "llama"', f'path = "{path}"') +
                             "posttrain chat { from = base  sft { data = chats } }", encoding="utf-8")
        _, warnings = compile_with_warnings(load_spec(spec_file))
        assert [w.message for w in warnings if w.message.startswith("checkpoint")] == [f"checkpoint base: {says}"]


def test_the_text_view_prints_brackets_in_paths(capsys: pytest.CaptureFixture[str]) -> None:
    """rich reads `[v3]` as markup: descriptions and paths are escaped, not swallowed."""
    from compiler.render import render_text

    plan = compile_spec(load_text(HEAD.replace('path = "llama"', 'path = "models/llama[v3]"')
                                  + "posttrain chat { from = base  sft { data = chats } }", "t.herd"))
    render_text(plan)
    out = capsys.readouterr().out
    assert "load models/llama[v3] as llama32_1b" in out and "loaded from models/llama[v3]" in out
