"""Commands that would overwrite or silently drop what a user wrote refuse instead, with a
message and a hint: `-o` onto the spec itself, an override with extra text, a Slurm limit
too short to work in. A BOM is read past, and a very long line is cut around the error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.slurm import time_seconds
from herdlang.ast import Span
from herdlang.diagnostics import Diagnostic, render

ROOT = Path(__file__).resolve().parents[2]


def herd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    return out


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    for name in ("tiny.herd", "llama3_8b.herd", "llama3_common.herd"):
        shutil.copy(ROOT / "specs" / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(("spec", "target"), [("tiny.herd", "tiny.herd"),
                                               ("llama3_8b.herd", "./llama3_common.herd")])
def test_compile_will_not_write_the_plan_over_a_spec_file(specs: Path, spec: str, target: str) -> None:
    before = (specs / target).read_bytes()
    out = herd("compile", spec, "-o", target, "--format", "json", cwd=specs)
    assert out.returncode == 2
    assert "is a spec file this plan is compiled from" in out.stderr and "hint: write the plan" in out.stderr
    assert (specs / target).read_bytes() == before


def test_an_override_sets_one_value_on_one_line(specs: Path) -> None:
    out = herd("check", "tiny.herd", "--set", "base.tokens=5M  layers = 5", cwd=specs)
    assert out.returncode == 1 and "extra text after the value: an override sets one value" in out.stdout + out.stderr
    out = herd("check", "tiny.herd", "--set", "run.seed=1\nx", cwd=specs)
    assert out.returncode == 1 and "an override is one line" in out.stdout + out.stderr
    assert herd("check", "tiny.herd", "--set", "base.tokens=5M tokens", cwd=specs).returncode == 0


def test_a_byte_order_mark_is_read_past(specs: Path) -> None:
    (specs / "bom.herd").write_bytes(b"\xef\xbb\xbf" + (specs / "tiny.herd").read_bytes())
    assert herd("check", "bom.herd", cwd=specs).returncode == 0


def test_status_of_a_spec_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    out = herd("status", "nowhere.herd", cwd=tmp_path)
    assert out.returncode == 2 and "no such file: nowhere.herd" in out.stderr


@pytest.mark.parametrize(("limit", "seconds"), [("90", 5400), ("4:59", 299), ("1:00:00", 3600),
                                                ("2-00:00:00", 172800), ("1-2", 93600), ("1-2:30", 95400)])
def test_slurm_time_limits_in_seconds(limit: str, seconds: int) -> None:
    assert time_seconds(limit) == seconds


def test_slurm_limits_and_partitions_are_checked(specs: Path) -> None:
    out = herd("compile", "tiny.herd", "--target", "slurm", "-o", "sl", "--time", "4", cwd=specs)
    assert out.returncode == 2 and "shorter than 5 minutes" in out.stderr
    out = herd("compile", "tiny.herd", "--target", "slurm", "-o", "sl", "--partition", "a b;rm -rf ~", cwd=specs)
    assert out.returncode == 2 and "is not a Slurm partition name" in out.stderr
    # 0 is Slurm's "no limit": asked for, with no requeue signal that would never come
    out = herd("compile", "tiny.herd", "--target", "slurm", "-o", "sl", "--time", "0",
               "--partition", "gpu,gpu-long", cwd=specs)
    assert out.returncode == 0, out.stderr
    script = next((specs / "sl").glob("*.sbatch")).read_text()
    assert "#SBATCH --time=0" in script and "USR1" not in script and "--partition=gpu,gpu-long" in script


def test_a_very_long_line_is_shown_cut_around_the_error() -> None:
    line = " ".join(f"a{i} = 1" for i in range(2000)) + " laers = 3"
    col = line.index("laers") + 1
    diag = Diagnostic("H0201", "no field 'laers'", Span("s.herd", 1, col, 1, col + 5, col - 1, col + 4),
                      "did you mean 'layers'?")
    shown = render(diag, {"s.herd": line}).splitlines()
    assert len(shown[2]) < 200 and shown[2].startswith("1 | …")
    caret_at = shown[3].index("^")
    assert shown[2][caret_at:caret_at + 5] == "laers" and shown[3].count("^") == 5


def test_status_names_an_unreadable_status_file(tmp_path: Path) -> None:
    shutil.copy(ROOT / "specs" / "tiny.herd", tmp_path / "tiny.herd")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "status.json").write_text('{"format": "herd.status/1", "jo')
    out = herd("status", "tiny.herd", cwd=tmp_path)
    assert out.returncode == 1 and "status.json" in out.stderr and "rewrites it every 2 s" in out.stderr
