"""The `herd` command line: exit codes, formats, -o, no torch, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# pytest's default "prepend" import mode puts tests/ on sys.path for a file at the top of
# tests/ (there is no tests/__init__.py); tests/compiler/ would then shadow the real
# `compiler` package for every test module imported after this one. Take it off again.
for _entry in list(sys.path):
    if _entry and Path(_entry).resolve() == Path(__file__).resolve().parent:
        sys.path.remove(_entry)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "specs" / "tiny.herd"
L405 = ROOT / "specs" / "llama3_405b.herd"
GOLDEN = ROOT / "tests" / "herdlang" / "golden" / "diagnostics"


def herd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    assert "internal error" not in out.stderr, out.stderr
    return out


# -- exit codes -----------------------------------------------------------------------------------


def test_check_ok_is_0() -> None:
    out = herd("check", TINY)
    assert out.returncode == 0
    assert "ok" in out.stdout
    out = herd("check", TINY, "--format", "json")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True


def test_spec_error_is_1_with_rendered_diagnostic() -> None:
    out = herd("check", "H0201_unknown_field.herd", cwd=GOLDEN)
    assert out.returncode == 1
    expected = (GOLDEN / "H0201_unknown_field.expected").read_text(encoding="utf-8")
    assert expected.strip() in out.stderr
    assert "1 error" in out.stderr
    out = herd("compile", GOLDEN / "H0404_unknown_eval.herd")
    assert out.returncode == 1 and "2 errors" in out.stderr


def test_check_json_reports_errors_as_json_too() -> None:
    out = herd("check", "H0201_unknown_field.herd", "--format", "json", cwd=GOLDEN)
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert report["ok"] is False
    [d] = report["diagnostics"]
    assert (d["code"], d["line"], d["column"], d["hint"]) == ("H0201", 3, 3, "did you mean 'layers'?")
    assert report["warnings"] == []


def test_check_shows_a_warning_with_its_source_line_as_it_shows_errors() -> None:
    out = herd("check", ROOT / "specs" / "llama3_8b.herd")
    assert out.returncode == 0 and "ok (" in out.stdout
    lines = out.stderr.splitlines()
    head = next(i for i, x in enumerate(lines) if "warning[H0604]" in x)
    assert lines[head + 2].startswith("22 |   source jsonl(\"data/web/*.jsonl.gz\")")
    assert lines[head + 3].lstrip(" |").startswith("^^^^") and "fine if it is made later" in lines[head + 3]


def test_check_json_has_the_same_keys_when_the_spec_is_fine() -> None:
    """A clean spec with warnings: each is a located diagnostic as errors are, and a line."""
    report = json.loads(herd("check", ROOT / "specs" / "llama3_8b.herd", "--format", "json").stdout)
    assert report["ok"] is True and set(report) == {"ok", "diagnostics", "warnings"}
    [d] = report["diagnostics"]
    assert (d["code"], d["severity"]) == ("H0604", "warning")  # specs/data/ is not shipped
    assert d["path"].endswith("llama3_common.herd")
    assert d["line"] > 0 and report["warnings"][0].endswith(d["hint"])


@pytest.mark.parametrize(
    "args",
    [[], ["frobnicate"], ["check"], ["compile", str(TINY), "--format", "yaml"], ["check", "--bogus", str(TINY)],
     ["run", str(TINY), "--dry-run", "--workers", "0"], ["run", str(TINY), "--dry-run", "--nproc", "x"],
     ["compile", str(TINY), "--partition", "gpu"], ["compile", str(TINY), "--target", "slurm", "--format", "json"],
     ["export", "ckpt", "-o", "out", "--format", "gguf"],
     ["generate", "ckpt", "--prompt", "x", "--temperature", "-1"],
     ["generate", "ckpt", "--prompt", "x", "--temperature", "nan"],
     ["generate", "ckpt", "--prompt", "x", "--top-p", "5"], ["generate", "ckpt", "--prompt", "x", "--top-p", "0"],
     ["generate", "ckpt", "--prompt", "x", "--top-k", "-1"],
     ["generate", "ckpt", "--prompt", "x", "--max-new-tokens", "0"],
     ["generate", "ckpt", "--prompt", "x", "--seed", "-1"], ["chat", "ckpt", "--top-p", "1.5"],
     ["generate", "ckpt", "--prompt", "x", "--system", "be brief"],
     ["compile", str(TINY), "--time", "90"], ["compile", str(TINY), "--target", "slurm", "--time", "2days"],
     ["import", "hf", "--blocks", "-o", "x"], ["import", "hf"]],
    ids=["no-command", "unknown-command", "missing-arg", "bad-format", "bad-flag", "zero-workers",
         "non-integer-nproc", "partition-without-slurm", "format-with-slurm", "unknown-export-format",
         "negative-temperature", "nan-temperature", "top-p-above-1", "top-p-0", "negative-top-k",
         "no-new-tokens", "negative-seed", "chat-top-p", "system-without-chat", "time-without-slurm",
         "bad-slurm-time", "import-blocks-with-output", "import-without-output"],
)
def test_usage_errors_are_2(args: list[str]) -> None:
    assert herd(*args).returncode == 2


def test_bad_set_is_1() -> None:
    out = herd("compile", TINY, "--set", "nosuch.tokens=1")
    assert out.returncode == 1 and "H0501" in out.stderr
    out = herd("check", TINY, "--set", "base.tokens=1M steps")
    assert out.returncode == 1 and "H0207" in out.stderr


# -- formats and -o -------------------------------------------------------------------------------


def test_compile_formats() -> None:
    data = json.loads(herd("compile", TINY, "--format", "json").stdout)
    assert data["models"]["tiny"]["params"] > 0 and data["jobs"]
    dot = herd("compile", TINY, "--format", "dot").stdout
    assert dot.startswith("digraph") and "train.base" in dot and "->" in dot
    mermaid = herd("compile", TINY, "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart") and "-->" in mermaid
    text = herd("compile", TINY, "--format", "text", "--runs-dir", "/nonexistent-herd-runs").stdout
    assert "plan tiny" in text and "base" in text and "1,033,344" in text


def test_compile_output_file(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    out = herd("compile", TINY, "-o", target, "--format", "json")
    assert out.returncode == 0 and out.stdout == ""
    assert "plan written to" in out.stderr
    # (in-process `import compiler` would find tests/compiler first: load in a subprocess)
    code = f"from compiler import Plan; print(len(Plan.load({str(target)!r}).jobs))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert int(loaded.stdout) == len(json.loads(target.read_text(encoding="utf-8"))["jobs"])
    assert target.read_text(encoding="utf-8") == herd("compile", TINY, "--format", "json").stdout


def test_compute_optimal_warning_on_stderr(tmp_path: Path) -> None:
    """H0601: a model far from the compute-optimal size is a warning, not an error."""
    text = (GOLDEN / "H0204_missing_field.herd").read_text(encoding="utf-8").replace("1M tokens", "1T tokens")
    text = text.replace("  batch   = 4K tokens\n",
                        "  batch   = 4K tokens\n  optimizer = adamw(lr = 1e-3)\n"
                        "  law = power_law(alpha = 0.53, A = 0.29)\n")
    spec = tmp_path / "law.herd"
    spec.write_text(text, encoding="utf-8")
    out = herd("compile", spec, "--format", "json")
    assert out.returncode == 0
    assert "warning[H0601]:" in out.stderr and "compute-optimal" in out.stderr
    assert json.loads(out.stdout)["warnings"]
    out = herd("check", spec)
    assert out.returncode == 0 and "compute-optimal" in out.stderr


# -- no torch -------------------------------------------------------------------------------------


def test_check_and_compile_never_import_torch(tmp_path: Path) -> None:
    calls = [
        ["check", str(TINY)],
        ["check", str(L405)],
        ["path", str(TINY), "train.base"],
        ["compile", str(L405), "--format", "json"],
        ["compile", str(TINY), "--format", "dot"],
        ["compile", str(TINY), "--format", "mermaid"],
        ["compile", str(TINY), "--format", "text"],  # may look at runs/ for new/changed/cached
        ["compile", str(TINY), "-o", str(tmp_path / "p.json")],
        ["compile", str(TINY), "--format", "text", "-o", str(tmp_path / "p.txt")],
        ["check", str(GOLDEN / "H0201_unknown_field.herd")],
    ]
    code = (
        "import sys, io, contextlib, herdlang.cli\n"
        f"for argv in {calls!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        rc = herdlang.cli.main(argv)\n"
        "    assert rc in (0, 1), (argv, rc)\n"
        "    assert 'torch' not in sys.modules, argv\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


# -- files a user can point at --------------------------------------------------------------------


def test_unusable_files_exit_1_without_traceback(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.herd"
    latin1.write_bytes(b"model m { layers = 2 }  # caf\xe9\n")
    for target in (tmp_path / "missing.herd", tmp_path, latin1):
        for cmd in ("check", "compile"):
            out = herd(cmd, target)
            assert out.returncode == 1, (cmd, target, out.stderr)
            assert "H0001" in out.stderr


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.herd"
    empty.write_text("", encoding="utf-8")
    out = herd("check", empty)
    assert out.returncode in (0, 1)
    out = herd("compile", empty, "--format", "json")
    assert out.returncode in (0, 1)
    if out.returncode == 0:
        assert json.loads(out.stdout)["jobs"] == []


@pytest.mark.parametrize("fmt", ["json", "dot", "text"])
def test_closed_stdout_pipe_is_not_a_traceback(fmt: str) -> None:
    """`herd compile big.herd | head -1`: the reader goes away early. The pipe is shrunk to
    one page so even the 11 KB text view outgrows it and meets the closed reader."""
    import fcntl

    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, 1031, 4096)  # F_SETPIPE_SZ (Linux)
    proc = subprocess.Popen([sys.executable, "-m", "herdlang.cli", "compile", str(L405), "--format", fmt],
                            cwd=ROOT, stdout=write_fd, stderr=subprocess.PIPE)
    os.close(write_fd)
    assert proc.stderr is not None
    with os.fdopen(read_fd, "rb") as reader:
        reader.readline()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "internal error" not in err and "BrokenPipe" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
def test_run_on_cuda_without_one_stops_before_any_job(tmp_path: Path) -> None:
    out = herd("run", TINY, "--device", "cuda", "--runs-dir", tmp_path)
    assert out.returncode == 2 and "no CUDA device is visible" in out.stderr
    assert not (tmp_path / "tiny").exists()  # nothing ran, nothing written


def test_partition_without_slurm_says_why() -> None:
    out = herd("compile", TINY, "--partition", "gpu")
    assert out.returncode == 2 and "--partition applies to --target slurm only" in out.stderr
    assert out.stdout == ""


# -- -o: what compile writes where ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "dot", "mermaid", "text"])
def test_compile_output_file_gets_the_chosen_format(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"plan.{fmt}"
    out = herd("compile", TINY, "--format", fmt, "-o", target, "--runs-dir", tmp_path / "runs")
    assert out.returncode == 0 and out.stdout == ""  # the chosen format goes to the file only
    assert target.read_text(encoding="utf-8") == herd("compile", TINY, "--format", fmt,
                                                      "--runs-dir", tmp_path / "runs").stdout


def test_compile_output_file_without_format_is_the_plan_json_and_the_text_view_still_prints(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    out = herd("compile", TINY, "-o", target, "--runs-dir", tmp_path / "runs")
    assert out.returncode == 0 and "plan tiny" in out.stdout
    assert json.loads(target.read_text(encoding="utf-8"))["format"] == "herd.plan/1"


def test_compile_output_that_cannot_be_written_is_a_clear_error_before_any_output(tmp_path: Path) -> None:
    for target, words in ((tmp_path / "nonexist" / "x.json", "does not exist"),
                          (tmp_path, "is a folder")):
        out = herd("compile", TINY, "-o", target)
        assert out.returncode == 2 and words in out.stderr and "hint:" in out.stderr
        assert "Errno" not in out.stderr
        assert out.stdout == ""  # nothing printed before the error


def test_slurm_output_that_is_a_file_is_refused_and_kept(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x\n", encoding="utf-8")
    out = herd("compile", TINY, "--target", "slurm", "-o", f)
    assert out.returncode == 2 and "is a file" in out.stderr and "folder" in out.stderr
    assert f.read_text(encoding="utf-8") == "x\n"


def test_slurm_without_output_writes_slurm_spec_folder_and_scripts_use_the_runs_dir(tmp_path: Path) -> None:
    out = herd("compile", TINY, "--target", "slurm", "--runs-dir", "cluster-runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "slurm-tiny"
    assert (folder / "submit.sh").is_file() and (folder / "plan.json").is_file()
    scripts = list(folder.glob("*.sbatch"))
    assert scripts and all("--runs-dir cluster-runs" in p.read_text(encoding="utf-8") for p in scripts)


def test_fmt_of_a_missing_file_reads_like_check() -> None:
    fmt, check = herd("fmt", "nonexist.herd"), herd("check", "nonexist.herd")
    assert fmt.returncode == check.returncode == 1
    assert fmt.stderr == check.stderr
    assert "no such file: nonexist.herd" in fmt.stderr and "hint: check the path" in fmt.stderr
    assert "Errno" not in fmt.stderr


# -- --runs-dir -----------------------------------------------------------------------------------


def test_runs_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    rfile = tmp_path / "rfile"
    rfile.write_text("mine\n", encoding="utf-8")
    for args in (["run", TINY, "--only", "data.stdlib.source"], ["run", TINY, "--dry-run"], ["gc", TINY],
                 ["compile", TINY]):
        out = herd(*args, "--runs-dir", rfile)
        assert out.returncode == 2, (args, out.stderr)
        assert "is a file, not a folder" in out.stderr and "hint:" in out.stderr
    taken = tmp_path / "runs"
    taken.mkdir()
    (taken / "tiny").write_text("mine\n", encoding="utf-8")  # where the spec's runs would go
    out = herd("run", TINY, "--dry-run", "--runs-dir", taken)
    assert out.returncode == 2 and "keeps the runs of 'tiny' in a folder" in out.stderr
    assert rfile.read_text(encoding="utf-8") == (taken / "tiny").read_text(encoding="utf-8") == "mine\n"


def test_output_off_a_terminal_is_never_cut_at_80_columns(tmp_path: Path) -> None:
    out = herd("run", TINY, "--dry-run", "--force", "data.stdlib.filter_duplicated_ngrams",
               "--runs-dir", tmp_path)
    assert out.returncode == 0
    [line] = [x for x in out.stdout.splitlines() if "data.stdlib.filter_duplicated_ngrams" in x]
    assert line.rstrip().endswith("(will run: forced (--force))") and len(line) > 80


def test_path_prints_where_a_jobs_artifact_lives(tmp_path: Path) -> None:
    from compiler import compile_file

    _, plan = compile_file(TINY)
    out = herd("path", TINY, "train.base", "post.chat.r2.dpo", "--runs-dir", tmp_path)
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        str(tmp_path / "tiny" / "store" / plan.jobs["train.base"].fingerprint),
        str(tmp_path / "tiny" / "store" / plan.jobs["post.chat.r2.dpo"].fingerprint)]
    assert "note: train.base has not run with this configuration yet" in out.stderr
    entry = tmp_path / "tiny" / "store" / plan.jobs["train.base"].fingerprint
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text("{}", encoding="utf-8")
    out = herd("path", TINY, "train.base", "--runs-dir", tmp_path)
    assert out.returncode == 0 and out.stderr == ""


def test_path_of_an_unknown_job_suggests_one_and_a_stage_lists_its_jobs() -> None:
    out = herd("path", TINY, "train.bse")
    assert out.returncode == 2 and "no job 'train.bse'" in out.stderr
    assert "did you mean train.base" in out.stderr
    out = herd("path", TINY, "base")
    assert out.returncode == 2 and "'base' is a stage; its jobs: train.base," in out.stderr


def test_post_training_sizes_are_shown_as_unknown_until_its_data_is_read(tmp_path: Path) -> None:
    out = herd("compile", TINY, "--runs-dir", tmp_path)
    [row] = [x for x in out.stdout.splitlines() if x.lstrip().startswith("chat ")]
    assert "—" in row and " 0 " not in row
    assert "chat: post-training, 2 rounds; its tokens, steps and time follow from its datasets" in out.stdout


def test_compile_off_a_terminal_prints_every_job_line_whole(tmp_path: Path) -> None:
    stage = "long_context_" + "x" * 120  # job lines far wider than any fixed width
    spec = tmp_path / "wide.herd"
    spec.write_text(TINY.read_text(encoding="utf-8").replace("long_context", stage), encoding="utf-8")
    out = herd("compile", spec, "--runs-dir", tmp_path / "runs")
    assert out.returncode == 0, out.stderr
    [line] = [x for x in out.stdout.splitlines() if f"train.{stage}.512 " in x]
    assert line.rstrip().endswith("extend to 512 tokens, then gate short_context_recovery >= 0.9")
    assert len(line) > 200 and "\u2026" not in line  # neither wrapped nor cut with an ellipsis


# -- saved plans ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    ['{"format": "herd.plan/1"}',
     '{"format": "herd.plan/1", "herd_version": "0.1.0", "spec": {"name": "x"}, "settings": {}, "jobs": {}}',
     '{"format": "herd.plan/1", "herd_version": "0.1.0", "spec": {"name": "x"}, "settings": {}, '
     '"jobs": [{"id": "a", "kind": "data.source", "config": {}, "inputs": {}}]}'],
    ids=["no-jobs", "jobs-not-a-list", "job-without-fingerprint"],
)
def test_an_incomplete_plan_file_is_refused_and_nothing_is_created(tmp_path: Path, content: str) -> None:
    (tmp_path / "bad.json").write_text(content, encoding="utf-8")
    out = herd("run", "bad.json", cwd=tmp_path)
    assert out.returncode == 1
    assert "bad.json: malformed plan" in out.stderr and "hint:" in out.stderr
    assert "nothing to do" not in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # no runs/ folder


# -- gc -------------------------------------------------------------------------------------------


def test_gc_hint_repeats_the_options_that_select_what_it_lists(tmp_path: Path) -> None:
    leftover = tmp_path / "my runs" / "tiny" / "tmp" / "killed-run"
    leftover.mkdir(parents=True)
    (leftover / "part").write_text("x", encoding="utf-8")
    out = herd("gc", TINY, "--set", "base.tokens=400K", "--runs-dir", tmp_path / "my runs")
    assert out.returncode == 0 and "nothing deleted" in out.stdout
    assert (f"run `herd gc {TINY} --set base.tokens=400K --runs-dir '{tmp_path / 'my runs'}' --yes`"
            in out.stdout)
    assert leftover.is_dir()


# -- export / import ------------------------------------------------------------------------------

SMALL = {"name": "small", "vocab_size": 64, "dim": 32, "layers": 1, "heads": 2, "kv_heads": 1, "head_dim": 16,
         "ffn_dim": 64, "norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "tied_embeddings": False,
         "init_std": 0.02, "max_context": 64, "document_mask": True}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """A herd checkpoint and its Hugging Face export, to point export and import at."""
    from runtime.model import export_hf, from_config, save_checkpoint

    root = tmp_path_factory.mktemp("ckpts")
    ckpt = save_checkpoint(from_config(SMALL, seed=0), root / "ckpt")
    return ckpt, export_hf(ckpt, root / "hf")


def _convert(kind: str, checkpoints: tuple[Path, Path], output: Path, *extra: str, cwd: Path = ROOT):
    ckpt, hf = checkpoints
    return herd(kind, ckpt if kind == "export" else hf, "-o", output, *extra, cwd=cwd)


WRITES = {"export": {"config.json", "model.safetensors"}, "import": {"meta.json", "model.safetensors"}}


@pytest.mark.parametrize("kind", ["export", "import"])
def test_an_output_that_holds_files_is_refused_unless_forced_and_force_keeps_the_others(
        tmp_path: Path, checkpoints, kind: str) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    out = _convert(kind, checkpoints, folder)
    assert out.returncode == 2 and "already exists and holds files (notes.txt)" in out.stderr
    assert "--force" in out.stderr
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    out = _convert(kind, checkpoints, folder, "--force")
    assert out.returncode == 0, out.stderr
    assert {p.name for p in folder.iterdir()} == WRITES[kind] | {"notes.txt"}  # nothing else, no temp left
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "keep me"

    file = tmp_path / "a-file"
    file.write_text("data", encoding="utf-8")
    out = _convert(kind, checkpoints, file)
    assert out.returncode == 2 and "already exists and is a file" in out.stderr
    assert file.read_text(encoding="utf-8") == "data"
    assert _convert(kind, checkpoints, file, "--force").returncode == 0
    assert {p.name for p in file.iterdir()} == WRITES[kind]


@pytest.mark.parametrize("kind", ["export", "import"])
def test_an_existing_empty_folder_is_written_into_even_the_current_one(
        tmp_path: Path, checkpoints, kind: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = _convert(kind, checkpoints, Path("."), cwd=empty)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in empty.iterdir()} == WRITES[kind]
    assert _convert(kind, checkpoints, tmp_path / "new" / "deeper").returncode == 0
    assert {p.name for p in (tmp_path / "new" / "deeper").iterdir()} == WRITES[kind]


def _fake_run(tmp_path: Path) -> tuple[Path, Path]:
    """runs/<spec>/ as the executor leaves it: a lock, a store with one complete entry."""
    run = tmp_path / "runs" / "s"
    entry = run / "store" / "0123456789abcdef0123"
    entry.mkdir(parents=True)
    (run / "lock").write_text("1\n", encoding="utf-8")
    (entry / "tokenizer.json").write_text("{}", encoding="utf-8")
    (entry / "manifest.json").write_text(json.dumps(
        {"format": "herd.store/1", "job": "tokenizer.tok", "kind": "tokenizer.train",
         "fingerprint": entry.name, "files": []}), encoding="utf-8")
    return run, entry


@pytest.mark.parametrize("kind", ["export", "import"])
def test_a_herd_run_folder_is_never_written_even_with_force(tmp_path: Path, checkpoints, kind: str) -> None:
    run, entry = _fake_run(tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for target in (entry, run / "store" / "new-entry", run / "store", run):
        out = _convert(kind, checkpoints, target, "--force")
        assert out.returncode == 2, (target, out.stderr)
        assert "refusing to write into" in out.stderr and "hint:" in out.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_writing_onto_the_input_is_refused_even_with_force(checkpoints) -> None:
    ckpt, hf = checkpoints
    for args in (["export", ckpt, "-o", ckpt], ["import", hf, "-o", hf]):
        out = herd(*args, "--force")
        assert out.returncode == 2 and "it is the input itself" in out.stderr


def test_export_brings_the_checkpoints_tokenizer_for_transformers(tmp_path: Path) -> None:
    from runtime.data.tokenizer import load_tokenizer, save_tokenizer, train_bpe
    from runtime.model import from_config, save_checkpoint

    store = tmp_path / "store"  # the tokenizer beside the checkpoint that names it, as in a run
    (store / "tokfp").mkdir(parents=True)
    _, ranks = train_bpe(["def add(a, b):\n    return a + b\n"] * 20, 300, "llama3")
    save_tokenizer(store / "tokfp", ranks, "llama3", 16)
    ckpt = save_checkpoint(from_config({**SMALL, "vocab_size": 320}, seed=0), store / "ckptfp",
                           tokenizer_id="tokfp")
    out = herd("export", ckpt, "-o", tmp_path / "hf")
    assert out.returncode == 0, out.stderr
    assert f"tokenizer from {store / 'tokfp'}" in out.stdout.replace("\n", "")
    assert {p.name for p in (tmp_path / "hf").iterdir()} == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "generation_config.json"}
    tok = load_tokenizer(store / "tokfp")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["eos_token_id"] == [tok.eos_id, tok.eot_id] and config["bos_token_id"] == tok.bos_id
    transformers = pytest.importorskip("transformers")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert hf_tok("def add(x):")["input_ids"] == tok.encode("def add(x):")


def test_export_without_a_tokenizer_says_so_and_a_wrong_one_is_refused(tmp_path: Path, checkpoints) -> None:
    ckpt, _ = checkpoints
    out = herd("export", ckpt, "-o", tmp_path / "a")
    assert out.returncode == 0 and "no tokenizer" in out.stdout
    assert "hint: pass --tokenizer DIR" in out.stderr
    out = herd("export", ckpt, "-o", tmp_path / "b", "--tokenizer", ckpt)
    assert out.returncode == 2 and "not a herd tokenizer artifact" in out.stderr
    for command in (["generate", ckpt, "--prompt", "hi"], ["chat", ckpt]):  # never silently ignored
        out = herd(*command, "--tokenizer", ckpt)
        assert out.returncode == 2 and "not a herd tokenizer artifact" in out.stderr


def test_a_model_entry_with_a_damaged_meta_json_is_reported_as_damaged(tmp_path: Path, checkpoints) -> None:
    """A train.pretrain store entry is a model checkpoint even when its meta.json is broken:
    the loader says what is wrong with it, rather than "not a model checkpoint"."""
    ckpt, _ = checkpoints
    entry = tmp_path / "entry"
    shutil.copytree(ckpt, entry)
    (entry / "manifest.json").write_text(json.dumps({"format": "herd.store/1", "kind": "train.pretrain",
                                                     "job": "train.base"}))
    (entry / "meta.json").write_text("{ broken")
    out = herd("generate", entry, "--prompt", "hi")
    assert out.returncode == 1 and "not a model checkpoint" not in out.stderr
    assert "meta.json" in out.stderr and "Traceback" not in out.stderr


def test_exporting_another_kind_of_artifact_names_its_kind(tmp_path: Path, checkpoints) -> None:
    _, entry = _fake_run(tmp_path)
    out = herd("export", entry, "-o", tmp_path / "out")
    assert out.returncode == 1
    assert "is a tokenizer.train artifact of job tokenizer.tok, not a model checkpoint" in out.stderr
    assert "hint:" in out.stderr and "train.pretrain" in out.stderr
    out = herd("generate", entry, "--prompt", "hi")
    assert out.returncode == 1 and "not a model checkpoint" in out.stderr
    _, hf = checkpoints
    out = herd("export", hf, "-o", tmp_path / "out")
    assert out.returncode == 1 and "looks like a Hugging Face model folder" in out.stderr
    assert "herd import" in out.stderr
    assert not (tmp_path / "out").exists()


def test_an_error_in_a_set_override_points_into_that_override() -> None:
    # the overrides are their own source, one per line: `<--set>:LINE:COL`, shown with a caret
    out = herd("check", TINY, "--set", "base.context=512", "--set", "base.tokens=4M steps")
    assert out.returncode == 1
    assert out.stderr.startswith("<--set>:2:13: error[H0207]: tokens: expected a token count")
    assert "2 | base.tokens=4M steps\n  |             ^^^^^^^^" in out.stderr
    # errors found after validation (an undefined reference) point there too
    out = herd("compile", TINY, "--set", "base.model=nosuch")
    assert "<--set>:1:12: error[H0301]: model 'nosuch' is not defined" in out.stderr
    assert "1 | base.model=nosuch\n  |            ^^^^^^" in out.stderr
    # a malformed override's example names a block of this spec
    out = herd("check", TINY, "--set", "base=1")
    assert "hint: e.g. --set base.tokens=2M tokens" in out.stderr


def test_fmt_write_keeps_links_permissions_and_line_endings(tmp_path: Path) -> None:
    messy = "model m {layers=2;dim=64}\r\n"
    spec = tmp_path / "real.herd"
    spec.write_bytes(messy.encode())
    spec.chmod(0o600)
    link = tmp_path / "link.herd"
    link.symlink_to(spec.name)
    out = herd("fmt", "--write", link)
    assert out.returncode == 0 and out.stderr == f"reformatted {link}\n"
    assert link.is_symlink()  # the file it points to was rewritten, not the link replaced
    assert spec.read_bytes() == b"model m { layers = 2  dim = 64 }\r\n"
    assert spec.stat().st_mode & 0o777 == 0o600
    assert herd("fmt", "--check", spec).returncode == 0


def test_nproc_without_a_training_job_selected_says_it_does_nothing(tmp_path: Path) -> None:
    out = herd("run", TINY, "--nproc", "2", "--only", "tokenizer.tiny_bpe", "--dry-run",
               "--runs-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "note: --nproc 2 applies to train.pretrain" in out.stderr and "none is selected" in out.stderr
    out = herd("run", TINY, "--nproc", "2", "--nnodes", "2", "--only", "tokenizer.tiny_bpe", "--dry-run",
               "--runs-dir", tmp_path)
    assert "note: --nproc 2 --nnodes 2 applies to train.pretrain" in out.stderr
    assert herd("run", TINY, "--nnodes", "0", "--dry-run").returncode == 2


def test_the_slurm_hint_quotes_a_folder_with_a_space(tmp_path: Path) -> None:
    folder = tmp_path / "my runs"
    out = herd("compile", TINY, "--target", "slurm", "-o", folder)
    assert out.returncode == 0, out.stderr
    assert f"(run: bash '{folder / 'submit.sh'}')" in out.stdout


def test_export_with_a_non_numeric_weights_size_in_meta_json_says_what_generate_says(
        tmp_path: Path, checkpoints) -> None:
    ckpt = Path(shutil.copytree(checkpoints[0], tmp_path / "ckpt"))
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["weights"]["bytes"] = "lots"
    (ckpt / "meta.json").write_text(json.dumps(meta))
    says = (f"{ckpt / 'model.safetensors'} is {(ckpt / 'model.safetensors').stat().st_size} bytes but meta.json "
            "records lots: the file is truncated or was replaced\nhint: restore it or re-run the job that wrote it")
    out = herd("export", ckpt, "-o", tmp_path / "out")
    assert out.returncode == 1 and out.stderr == f"herd: error: {says}\n"
    assert not (tmp_path / "out").exists()
    out = herd("generate", ckpt, "--prompt", "hi")  # the same check, the same words
    assert out.returncode == 1 and says in out.stderr


@pytest.mark.parametrize("flag", ["--only", "--from", "--force"])
def test_run_naming_a_stage_instead_of_a_job_lists_its_jobs_as_path_does(tmp_path: Path, flag: str) -> None:
    out = herd("run", TINY, flag, "base", "--dry-run", "--runs-dir", tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"herd: error: {flag} base: no job 'base' in the plan\n"
                                 "hint: 'base' is a stage; its jobs: train.base,")
    out = herd("run", TINY, flag, "train.bse", "--dry-run", "--runs-dir", tmp_path)
    assert out.returncode == 2 and "hint: did you mean train.base" in out.stderr
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize("command", [["export", "CKPT"], ["import", "HF"], ["import", "HF", "--blocks"],
                                     ["compile", TINY], ["compile", TINY, "--target", "slurm"]])
def test_an_empty_output_path_is_a_usage_error_and_writes_nothing(
        tmp_path: Path, checkpoints, command: list) -> None:
    ckpt, hf = checkpoints
    where = tmp_path / "cwd"
    where.mkdir()
    args = [{"CKPT": ckpt, "HF": hf}.get(str(a), a) for a in command]
    out = herd(*args, "-o", "", cwd=where)
    assert out.returncode == 2 and out.stdout == ""
    assert "argument -o/--output: an empty path names nothing to write" in out.stderr and "hint:" in out.stderr
    assert list(where.iterdir()) == []  # '' was never taken for the current folder


@pytest.mark.parametrize("command", [["compile", TINY, "--runs-dir", ""], ["run", TINY, "--dry-run", "--runs-dir", ""],
                                     ["status", TINY, "--runs-dir", ""], ["gc", TINY, "--runs-dir", ""],
                                     ["path", TINY, "train.base", "--runs-dir", ""],
                                     ["generate", "CKPT", "--prompt", "hi", "--tokenizer", ""],
                                     ["export", "CKPT", "-o", "out", "--tokenizer", ""]])
def test_an_empty_folder_option_is_a_usage_error_not_the_current_folder(
        tmp_path: Path, checkpoints, command: list) -> None:
    ckpt, _ = checkpoints
    where = tmp_path / "cwd"
    where.mkdir()
    out = herd(*[ckpt if a == "CKPT" else a for a in command], cwd=where)
    assert out.returncode == 2 and "an empty path names no folder" in out.stderr
    assert list(where.iterdir()) == []


def test_path_hint_is_quoted_for_a_shell_and_keeps_the_plans_options(tmp_path: Path) -> None:
    import shlex

    spec = tmp_path / "a b$(x).herd"
    shutil.copy(TINY, spec)
    runs = tmp_path / "my runs"
    out = herd("path", spec, "train.base", "--set", "base.tokens=400K", "--runs-dir", runs)
    assert out.returncode == 0
    hint = out.stderr.split("hint: ", 1)[1].strip()
    assert hint == shlex.join(["herd", "run", str(spec), "--set", "base.tokens=400K", "--runs-dir", str(runs),
                               "--only", "train.base"])
    assert shlex.split(hint)[2] == str(spec)  # one word for a shell, `$(x)` not run


@pytest.mark.parametrize(("switch", "value", "choices"), [
    ("HERD_ATTENTION", "flexx", "auto, dense, flex, varlen"),
    ("HERD_KERNELS", "cuda", "auto, triton, reference"),
    ("HERD_FUSE_PROJECTIONS", "1", "auto, on, off"),
])
def test_a_misspelt_runtime_switch_is_refused_before_any_job_runs(tmp_path: Path, monkeypatch, switch: str,
                                                                   value: str, choices: str) -> None:
    """The switches act deep inside a model's forward pass; a typo is said at once, not
    after the data stages have run."""
    monkeypatch.setenv(switch, value)
    runs = tmp_path / "runs"
    out = herd("run", TINY, "--runs-dir", runs)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"herd: error: {switch}={value!r} is not one of {choices}; hint: unset it")
    assert not (runs / "tiny").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is missing")
@pytest.mark.parametrize("command", [["generate", "--prompt", "x"], ["chat"]])
def test_generate_and_chat_on_cuda_without_one_are_usage_errors_as_for_run(checkpoints, command: list) -> None:
    out = herd(command[0], checkpoints[0], *command[1:], "--device", "cuda")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("herd: error: device cuda was asked for, but no CUDA device is visible")
