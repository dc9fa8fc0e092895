"""What `herd compile` writes and `herd run` reads back: the Slurm folder is written without
following a symlink already in it, a time limit is ASCII digits only, and a saved plan's
`settings` are checked against the `run` block's schema when it is loaded."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import Plan, PlanError, compile_file
from compiler.slurm import TIME_FORMAT, write_slurm

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "specs" / "tiny.herd"


def herd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "herdlang.cli", *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert "Traceback" not in out.stderr + out.stdout and "internal error" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def tiny() -> Plan:
    return compile_file(TINY)[1]


# -- Slurm --time ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["٣٠", "١:٠٠:٠٠", "2-٠٠:00:00", "３０", "30\n"])
def test_a_time_limit_is_ascii_digits(limit: str) -> None:
    assert TIME_FORMAT.fullmatch(limit) is None


def test_a_time_limit_in_other_digits_is_a_usage_error(tmp_path: Path) -> None:
    out = herd("compile", TINY, "--target", "slurm", "-o", tmp_path / "sl", "--time", "٣٠")
    assert out.returncode == 2
    assert "argument --time: '٣٠' is not a Slurm time limit" in out.stderr
    assert not (tmp_path / "sl").exists()


# -- no writing through symlinks -------------------------------------------------------------------


def test_slurm_files_replace_symlinks_in_the_folder_and_leave_their_targets(tmp_path: Path, tiny: Plan) -> None:
    out, elsewhere = tmp_path / "sl", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    names = ["plan.json", "train.base.sbatch", "submit.sh"]
    for name in names:
        (elsewhere / name).write_text("precious\n")
        (out / name).symlink_to(elsewhere / name)
    write_slurm(tiny, out)
    for name in names:
        assert (elsewhere / name).read_text() == "precious\n"
        assert not (out / name).is_symlink() and (out / name).is_file()
    assert Plan.load(out / "plan.json").digest() == tiny.digest()
    script = (out / "train.base.sbatch").read_text()
    assert f"herd run {out.resolve() / 'plan.json'} --only train.base" in script  # the link's name, not its target
    assert str(elsewhere) not in script + (out / "submit.sh").read_text()
    assert stat.S_IMODE((out / "submit.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "train.base.sbatch").stat().st_mode) & 0o111 == 0  # as before: not executable
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_a_plan_saved_over_a_symlink_replaces_the_link(tmp_path: Path, tiny: Plan) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "plan.json").symlink_to(victim)
    tiny.save(tmp_path / "plan.json")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "plan.json").is_symlink() and Plan.load(tmp_path / "plan.json").digest() == tiny.digest()


def test_compile_to_slurm_through_the_cli_keeps_link_targets(tmp_path: Path) -> None:
    out = tmp_path / "sl"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (out / "plan.json").symlink_to(victim)
    (out / "train.base.sbatch").symlink_to(victim)
    done = herd("compile", TINY, "--target", "slurm", "-o", out, "--runs-dir", tmp_path / "runs")
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious\n"
    assert not (out / "plan.json").is_symlink() and not (out / "train.base.sbatch").is_symlink()


# -- settings of a saved plan ------------------------------------------------------------------------


def _edited(tmp_path: Path, tiny: Plan, edit: dict) -> Path:
    data = json.loads(tiny.dumps())  # (to_json shares the plan's dicts)
    for key, value in edit.items():
        group, _, field = key.partition(".")
        if field:
            data["settings"][group] = {**data["settings"][group], field: value}
        else:
            data["settings"][group] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(("edit", "problem"), [
    ({"workers": "lots"}, 'settings.workers must be a whole number, not "lots"'),
    ({"workers": [1, 2]}, "settings.workers must be a whole number, not [1,2]"),
    ({"workers": True}, "settings.workers must be a whole number, not true"),
    ({"workers": 2.5}, "settings.workers must be a whole number, not 2.5"),
    ({"workers": -5}, "settings.workers must be at least 1, not -5"),
    ({"workers": 0}, "settings.workers must be at least 1, not 0"),
    ({"device": "tpu"}, "settings.device must be one of 'auto', 'cpu' or 'cuda', not \"tpu\""),
    ({"precision": "fp8"}, "settings.precision must be one of 'bf16' or 'fp32', not \"fp8\""),
    ({"seed": -1}, "settings.seed must be at least 0, not -1"),
    ({"seed": 2**40}, f"settings.seed must be at most {2**32 - 1}, not {2**40}"),
    ({"hardware": []}, "settings.hardware must be an object, not list"),
    ({"hardware.count": 0}, "settings.hardware.count must be at least 1, not 0"),
    ({"hardware.mfu": 3}, "settings.hardware.mfu must be at most 1.0, not 3"),
    ({"hardware.memory_gib": "80"}, 'settings.hardware.memory_gib must be a positive number or null, not "80"'),
    ({"parallel.fsdp": "yes"}, 'settings.parallel.fsdp must be true or false, not "yes"'),
    ({"parallel.micro_batch": 0}, "settings.parallel.micro_batch must be at least 1, not 0"),
    ({"spec_dir": None}, "settings.spec_dir must be a string, not null"),
])
def test_a_hand_edited_setting_is_refused(tmp_path: Path, tiny: Plan, edit: dict, problem: str) -> None:
    with pytest.raises(PlanError) as exc:
        Plan.load(_edited(tmp_path, tiny, edit))
    assert str(exc.value).splitlines()[0] == f"{tmp_path / 'bad.json'}: malformed plan: {problem}"


def test_settings_a_run_block_allows_still_load(tmp_path: Path, tiny: Plan) -> None:
    edit = {"workers": 8, "device": "cuda", "seed": 7, "hardware.count": 16, "parallel.fsdp": False}
    plan = Plan.load(_edited(tmp_path, tiny, edit))
    assert (plan.settings["workers"], plan.settings["device"], plan.settings["hardware"]["count"]) == (8, "cuda", 16)


@pytest.mark.parametrize(("edit", "problem"), [
    ({"workers": "lots"}, 'settings.workers must be a whole number, not "lots"'),
    ({"workers": [1, 2]}, "settings.workers must be a whole number, not [1,2]"),
    ({"device": "tpu"}, "settings.device must be one of 'auto', 'cpu' or 'cuda', not \"tpu\""),
])
def test_run_refuses_a_plan_with_bad_settings_before_anything_is_created(tmp_path: Path, tiny: Plan,
                                                                         edit: dict, problem: str) -> None:
    out = herd("run", _edited(tmp_path, tiny, edit), "--dry-run", "--runs-dir", tmp_path / "runs")
    assert out.returncode == 1
    assert out.stderr.startswith(f"herd: error: {tmp_path / 'bad.json'}: malformed plan: {problem}\nhint: ")
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_long_bad_setting_is_quoted_short(tmp_path: Path, tiny: Plan) -> None:
    with pytest.raises(PlanError) as exc:
        Plan.load(_edited(tmp_path, tiny, {"device": "x" * 10_000}))
    first = str(exc.value).splitlines()[0]
    assert first.endswith('settings.device must be one of \'auto\', \'cpu\' or \'cuda\', not "' + "x" * 56 + "…")
