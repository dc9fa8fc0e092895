"""What `herd check` catches before anything runs: broken `from` chains reported once, the
hardware and parallel layout, memory that does not fit, batch ramps past the budget, and
local inputs that are not there (warnings, since they may appear later or on the cluster)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from compiler import compile_file, compile_spec, compile_with_warnings
from herdlang.diagnostics import Diagnostic, HerdError, Severity
from herdlang.spec import load_spec, load_text

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.herd"
L405 = ROOT / "specs" / "llama3_405b.herd"


def tiny(*edits: tuple[str, str]) -> str:
    text = TINY.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def errors_of(text: str) -> list[Diagnostic]:
    with pytest.raises(HerdError) as exc:
        compile_spec(load_text(text, "t.herd"))
    return [d for d in exc.value.diagnostics if d.severity is Severity.ERROR]


def warnings_of(text: str, path: Path | None = None) -> list[Diagnostic]:
    if path is not None:
        path.write_text(text, encoding="utf-8")
        spec = load_spec(path)
    else:
        spec = load_text(text, "t.herd")
    return compile_with_warnings(spec)[1]


# -- a broken `from` chain is one error --------------------------------------------------------------


def test_a_stage_continuing_from_itself_is_one_error_without_knock_on_errors() -> None:
    # final and chat continue from long_context; its context ramp cannot be checked either
    diags = errors_of(tiny(("  from      = base", "  from      = long_context")))
    assert [(d.code, d.message) for d in diags] == [("H0303", "stage 'long_context' continues from itself")]
    assert diags[0].span.line == 53


def test_a_cycle_of_stages_is_reported_once_with_its_chain() -> None:
    text = tiny(("  from      = base", "  from      = chat"))
    [diag] = errors_of(text)
    assert diag.code == "H0303"
    assert diag.message == ("cycle of `from`: long_context continues from chat, which continues from final, "
                            "which continues from long_context")


def test_an_anneal_after_a_cycle_is_not_asked_for_data() -> None:
    text = tiny(("  from      = base", "  from      = long_context"), ("  mix { tiny_mix = 100% }\n", ""))
    assert [d.code for d in errors_of(text)] == ["H0303"]


def test_a_cycle_of_extends_is_reported_once() -> None:
    text = "model a extends b { layers = 2 }\nmodel b extends c { dim = 64 }\nmodel c extends a { heads = 4 }\n"
    [diag] = errors_of(text)
    assert diag.message == "cycle of `extends`: a extends b, which extends c, which extends a"
    [diag] = errors_of("model a extends a { layers = 2 }\n")
    assert diag.message == "model 'a' extends itself"


# -- hardware ----------------------------------------------------------------------------------------


def test_an_unknown_gpu_is_an_error_that_lists_the_known_ones() -> None:
    [diag] = errors_of(tiny(("gpu = cpu ", "gpu = h1000 ")))
    assert (diag.code, diag.message, diag.hint) == ("H0203", "unknown GPU 'h1000'", "did you mean 'h100'?")
    assert any("h100, h200, a100" in n for n in diag.notes)
    assert any("peak_bf16_tflops" in n and "memory" in n for n in diag.notes)


def test_a_custom_gpu_states_its_peak_and_memory() -> None:
    text = tiny(("gpu = cpu  count = 1", "gpu = tpu_x  count = 4  peak_bf16_tflops = 459  memory = 32 GiB"))
    plan = compile_spec(load_text(text, "t.herd"))
    hw = plan.settings["hardware"]
    assert (hw["gpu"], hw["peak_bf16_tflops"], hw["memory_gib"]) == ("tpu_x", 459, 32.0)
    assert plan.stages["base"]["wall_clock_seconds"] > 0
    [diag] = errors_of(tiny(("gpu = cpu ", "gpu = tpu_x  peak_bf16_tflops = 459 ")))
    assert diag.code == "H0204" and "'memory'" in diag.message


def test_a_known_gpus_figures_can_be_overridden() -> None:
    plan = compile_spec(load_text(tiny(("gpu = cpu ", "gpu = h100  peak_bf16_tflops = 700 ")), "t.herd"))
    assert plan.settings["hardware"]["peak_bf16_tflops"] == 700
    assert plan.settings["hardware"]["memory_gib"] == 80.0


# -- parallel layout ---------------------------------------------------------------------------------


def layout(hardware: str, parallel: str) -> str:
    return tiny(("hardware { gpu = cpu  count = 1  mfu = 30% }", f"hardware {{ {hardware} }}\n  parallel {{ {parallel} }}"))


def test_the_layout_must_multiply_to_the_gpu_count() -> None:
    [diag] = errors_of(layout("gpu = h100  count = 8", "tensor = 2  data = 2"))
    assert diag.code == "H0408"
    assert diag.message == ("parallel layout tensor 2 × pipeline 1 × context 1 × data 2 = 4 GPUs, "
                            "but hardware.count is 8")
    assert "data = 4 fits" in diag.hint
    # without `data`, data parallelism takes the rest: the count must be a multiple
    [diag] = errors_of(layout("gpu = h100  count = 8", "pipeline = 3"))
    assert diag.code == "H0408" and "does not divide the 8 GPUs" in diag.message
    compile_spec(load_text(layout("gpu = h100  count = 8", "tensor = 2"), "t.herd"))


def test_tensor_parallelism_must_split_the_heads() -> None:
    # tiny has 4 query heads and 2 KV heads
    diags = errors_of(layout("gpu = h100  count = 8", "tensor = 3  data = 2"))
    assert [d.code for d in diags] == ["H0408", "H0408"]
    heads = diags[1]
    assert heads.message == "tensor = 3 does not divide the 4 query heads and 2 KV heads of model 'tiny'"
    assert heads.hint.endswith("use one of 1, 2")
    [diag] = errors_of(layout("gpu = h100  count = 8", "tensor = 4  data = 2"))
    assert "2 KV heads" in diag.message


def test_a_pipeline_stage_holds_at_least_one_layer() -> None:
    [diag] = errors_of(layout("gpu = h100  count = 8", "pipeline = 8"))
    assert diag.message == "pipeline = 8 is more than the 4 layers of model 'tiny'"


# -- memory per GPU ----------------------------------------------------------------------------------


def test_memory_beyond_the_gpu_is_a_warning() -> None:
    _, plan = compile_file(L405, ["run.parallel.tensor=1", "run.parallel.pipeline=1", "run.parallel.data=16384"])
    memory = [w for w in plan.warnings if "H0602" in w]
    assert len(memory) == 3  # pre-training, the extension, the anneal
    assert "'base_405b' needs about 536 GiB per GPU, more than one h100 holds (80 GiB)" in memory[0]
    assert plan.stages["base_405b"]["memory_per_gpu"]["total"] > 80 * 2**30
    _, plan = compile_file(L405)  # the paper's layout fits
    assert not [w for w in plan.warnings if "H0602" in w]


# -- batch ramps ---------------------------------------------------------------------------------------


def test_a_batch_step_after_the_stage_ends_is_a_warning() -> None:
    text = tiny(("16K tokens at 1M tokens", "16K tokens at 5M tokens"))
    [diag] = warnings_of(text)
    assert diag.code == "H0603" and diag.severity is Severity.WARNING
    assert diag.message == ("batch size 16,384 takes over at 5,000,000 tokens, but 'base' trains on 2,000,000: "
                            "it is never used")
    assert diag.span.line == 46
    assert not warnings_of(TINY.read_text(encoding="utf-8"))


# -- local inputs --------------------------------------------------------------------------------------


SOURCES = """data web {
  source jsonl("corpus/*.jsonl")
  filter dirty_words { list = "words.txt" }
  quality ngram_logreg { reference = "good/*.txt" }
}
dataset sft { format = messages  path = "post/sft.jsonl" }
tokenizer tok { file = "tokenizer.model" }
"""


def test_missing_inputs_are_warnings_that_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    diags = warnings_of(SOURCES, tmp_path / "s.herd")
    assert all(d.code == "H0604" and d.severity is Severity.WARNING for d in diags)
    got = {(d.span.line, d.message) for d in diags}
    assert got == {
        (2, "source jsonl: 'corpus/*.jsonl' matches no file"),
        (3, "filter dirty_words: 'words.txt' does not exist"),
        (4, "quality ngram_logreg: 'good/*.txt' matches no file"),
        (6, "dataset sft: 'post/sft.jsonl' does not exist"),
        (7, "tokenizer tok: 'tokenizer.model' does not exist"),
    }
    span = next(d.span for d in diags if d.span.line == 2)
    assert SOURCES.splitlines()[1][span.column - 1:span.end_column - 1] == '"corpus/*.jsonl"'


def test_inputs_that_exist_do_not_warn(tmp_path: Path) -> None:
    for name in ("corpus/a.jsonl", "words.txt", "good/x.txt", "post/sft.jsonl", "tokenizer.model"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    assert warnings_of(SOURCES, tmp_path / "s.herd") == []
    # paths are relative to the spec's folder, wherever herd runs from; reading outside it is fine
    (tmp_path / "sub").mkdir()
    up = SOURCES.replace('("', '("../').replace('= "', '= "../')
    assert warnings_of(up, tmp_path / "sub" / "s.herd") == []


def test_a_missing_folder_is_one_warning_for_all_the_paths_under_it(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = SOURCES.replace('"corpus/', '"data/corpus/').replace('"post/', '"data/post/')
    diags = warnings_of(text, tmp_path / "s.herd")
    [folder] = [d for d in diags if "folder" in d.message]
    assert folder.message == "the folder data/ does not exist: 2 input paths under it are missing"
    assert len(folder.notes) == 2 and "data/post/sft.jsonl" in folder.notes[1]
    assert len(diags) == 4  # and the three paths in folders that exist


def test_the_shipped_recipes_warn_once_that_their_data_is_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    _, plan = compile_file(L405)
    assert plan.warnings == [
        "specs/llama3_common.herd:22:16: warning[H0604]: the folder specs/data/ does not exist: 9 input paths "
        "under it are missing; fine if it is made later or exists only where the plan runs; otherwise check the path"]
    _, plan = compile_file(TINY)
    assert plan.warnings == []


_UNCHECKABLE_HINT = ("herd could not look for it here; fine if it exists where the plan runs, otherwise "
                     "check the path (and that its folders may be read)")


def test_a_path_the_system_cannot_look_up_is_a_warning_not_a_traceback(tmp_path: Path) -> None:
    """`Path.exists` raises for a name too long (and a folder that may not be searched):
    that was a traceback from `herd check`; it is H0604 at the path, with the reason."""
    long = "x" * 5000
    text = (f'data w {{ source jsonl("{long}") {{ text = "t" }} }}\n'
            f'data v {{ source jsonl("{long}/*.jsonl") {{ text = "t" }} }}\n'
            'data u { source jsonl("a\\0b.jsonl") { text = "t" } }\n'
            'data n { source jsonl("a\\0b/*.jsonl") { text = "t" } }\n')
    diags = warnings_of(text, tmp_path / "s.herd")
    shown = "x" * 40 + "…" + "x" * 20
    assert [(d.code, d.severity, d.span.line, d.span.column, d.message, d.hint) for d in diags] == [
        ("H0604", Severity.WARNING, 1, 23, f"source jsonl: '{shown}' cannot be checked: File name too long",
         _UNCHECKABLE_HINT),
        ("H0604", Severity.WARNING, 2, 23,
         f"source jsonl: '{'x' * 40}…{'x' * 12}/*.jsonl' cannot be checked: File name too long", _UNCHECKABLE_HINT),
        ("H0604", Severity.WARNING, 3, 23,
         "source jsonl: 'a\\0b.jsonl' cannot be checked: a file name cannot contain a NUL character",
         _UNCHECKABLE_HINT),
        ("H0604", Severity.WARNING, 4, 23,
         "source jsonl: 'a\\0b/*.jsonl' cannot be checked: a file name cannot contain a NUL character",
         _UNCHECKABLE_HINT),
    ]


def test_a_path_under_a_folder_that_may_not_be_searched_is_a_warning(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """PermissionError from the probe (as for a non-root user under a `chmod 000` folder;
    simulated, since root may search any folder) says why the path cannot be checked."""
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True):  # type: ignore[no-untyped-def]
        if "locked" in self.parts:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    text = ('data w { source jsonl("locked/a.jsonl") { text = "t" } }\n'
            'tokenizer tok { vocab = 256  file = "locked/tokenizer.json" }\n'
            'checkpoint c { model = m  path = "locked/ckpt" }\n'
            'model m { tokenizer = tok  layers = 2  dim = 64  heads = 2 }\n')
    diags = warnings_of(text, tmp_path / "s.herd")
    assert sorted((d.span.line, d.message) for d in diags) == [
        (1, "source jsonl: 'locked/a.jsonl' cannot be checked: Permission denied"),
        (2, "tokenizer tok: 'locked/tokenizer.json' cannot be checked: Permission denied"),
        (3, "checkpoint c: 'locked/ckpt' cannot be checked: Permission denied"),
    ]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may search any folder")
def test_a_real_unsearchable_folder_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked").chmod(0)
    try:
        diags = warnings_of('data w { source jsonl("locked/sub/a.jsonl") { text = "t" } }\n', tmp_path / "s.herd")
    finally:
        (tmp_path / "locked").chmod(0o700)
    assert [d.message for d in diags] == ["source jsonl: 'locked/sub/a.jsonl' cannot be checked: Permission denied"]


def test_the_input_check_globs_lazily(tmp_path: Path) -> None:
    """One match is enough: a folder of many files costs no more than a folder of one."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(2000):
        (corpus / f"{i:05d}.jsonl").write_text("")
    (tmp_path / "s.herd").write_text('data web { source jsonl("corpus/**/*.jsonl") }\n')
    start = time.perf_counter()
    assert warnings_of((tmp_path / "s.herd").read_text(), tmp_path / "s.herd") == []
    assert time.perf_counter() - start < 0.5


# -- how warnings reach the plan -------------------------------------------------------------------------


def test_warnings_are_one_line_each_in_the_plan() -> None:
    text = tiny(("16K tokens at 1M tokens", "16K tokens at 5M tokens"))
    plan, [diag] = compile_with_warnings(load_text(text, "t.herd"))
    assert plan.warnings == [f"t.herd:46:15: warning[H0603]: {diag.message}; {diag.hint}"]


# -- post-training data ---------------------------------------------------------------------------


def test_a_dataset_whose_format_cannot_feed_its_step_is_an_error() -> None:
    # DPO and the reward model read preference pairs, SFT reads conversations; a messages
    # dataset has no pairs and a prompts dataset no conversations. Said now, not when the job
    # starts after pre-training ("the dataset has no preference pairs").
    text = tiny(("format   = tasks", 'format   = messages  path = "chat.jsonl"'))
    found = [(d.code, d.message, d.span.line) for d in errors_of(text)]
    assert found == [
        ("H0302", "reward_model needs preference pairs, but dataset 'tasks' has format = messages", 81),
        ("H0302", "dpo needs preference pairs, but dataset 'tasks' has format = messages", 84),
    ]
    [d] = errors_of(tiny(("format   = tasks", 'format   = prompts  path = "p.jsonl"'),
                         ("reward_model rm { data = tasks  steps = 100 steps }", ""),
                         ("  dpo { data = tasks  beta = 0.1  lr = 5e-5  nll = 0.2  steps = 60 steps }", "")))
    assert d.message == "sft needs conversations, but dataset 'tasks' has format = prompts"
    assert d.hint == "use a dataset with format = messages or preferences or tasks"
    # preferences feed all three (SFT on the chosen answers)
    compile_spec(load_text(tiny(("format   = tasks", 'format   = preferences  path = "p.jsonl"')), "t.herd"))


# -- names listed twice, and where a mix's reference is reported ------------------------------------


def test_an_eval_listed_twice_is_a_duplicate_not_a_crash() -> None:
    # each eval is one job, eval.STAGE.NAME: a second `perplexity` would be the same job
    [d] = errors_of(tiny(("evals     = [perplexity, choice]", "evals     = [perplexity, perplexity]")))
    assert (d.code, d.message, d.hint) == ("H0205", "eval 'perplexity' is listed twice in 'evals'", "remove one of them")
    assert (d.span.line, d.span.column) == (49, 28)


def test_a_sweep_size_listed_twice_is_a_duplicate_not_a_crash() -> None:
    text = (ROOT / "specs" / "scaling_tiny.herd").read_text(encoding="utf-8")
    [d] = errors_of(text.replace("models    = [xxs, xs, s, m, l]", "models    = [xxs, xs, xs, m, l]"))
    assert (d.code, d.message) == ("H0205", "model 'xs' is listed twice in the sweep's 'models'")
    assert (d.span.line, d.span.column) == (40, 25)


def test_a_wrong_part_of_a_mix_is_reported_at_its_name() -> None:
    [d] = errors_of(tiny(("mix tiny_mix { stdlib = 100% }",
                          "mix tiny_mix { stdlib = 100% }\nmix twice { tiny_mix = 100% }")))
    assert (d.code, d.message) == ("H0302", "'tiny_mix' is a mix block, not a data stage")
    assert (d.span.line, d.span.column, d.span.end_column) == (40, 13, 21)  # `tiny_mix`, not `100%`
    assert d.hint == "expected data stage, one of: stdlib"


def test_averaging_more_checkpoints_than_the_anneal_has_steps_is_an_error() -> None:
    """The average job would fail only after annealing ("holds 13"): the plan knows the steps."""
    [d] = errors_of(tiny(("average = last(3)", "average = last(1000)")))
    assert d.code == "H0407" and "trains only 13 steps" in d.message and d.span.line == 69
    assert d.hint == "average at most last(13), or raise tokens"
    compile_spec(load_text(tiny(("average = last(3)", "average = last(13)")), "t.herd"))


def test_a_spec_without_blocks_is_a_warning_for_check_and_compile_alike(tmp_path: Path) -> None:
    """An empty file (or only comments) is most likely the wrong path: H0605, not silence."""
    [w] = warnings_of("# only a comment\n", tmp_path / "empty.herd")
    assert w.code == "H0605" and "defines no blocks" in w.message and w.hint
