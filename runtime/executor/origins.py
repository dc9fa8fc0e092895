"""Which spec files a run directory belongs to.

A run directory is named after the spec's file name (`runs/<name>/`), so `a.herd` and
`experiments/a.herd` share one. Running both is safe — the store is content-addressed —
but `herd gc` defines garbage against one plan and would delete the other spec's
artifacts. So every run records its spec's absolute path in `specs.json`, a run warns when
another spec file that still exists used the folder, and `herd gc --yes` refuses.

A `specs.json` that cannot be read is not taken as empty: that would drop the guard and let
`herd gc` delete another spec's artifacts. It counts as an unknown other spec (`Unreadable`)
until someone deletes it, and runs leave it as it is instead of writing over it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from compiler.plan import Plan
from runtime.executor.store import write_json_atomic

ORIGINS = "specs.json"
ORIGINS_FORMAT = "herd.specs/1"


class Unreadable(str):
    """In `other_specs`: the path of a `specs.json` that cannot be read, standing for the
    other specs it may name; `reason` says what is wrong with it."""

    reason: str

    def __new__(cls, path: Path, reason: str) -> Unreadable:
        self = super().__new__(cls, str(path))
        self.reason = reason
        return self


def _spec_file(plan: Plan) -> str | None:
    """The plan's spec as an absolute path (None for a plan built without a file)."""
    return str(Path(plan.spec_path).resolve()) if plan.spec_path else None


def _recorded(run_dir: Path) -> dict[str, float] | Unreadable:
    """Spec path -> when it last ran here; {} when no run recorded one; Unreadable when the
    file exists but is not one `record` wrote (a damaged time alone is forgiven: the paths
    are what matters)."""
    path = Path(run_dir) / ORIGINS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        return Unreadable(path, "not text")
    except RecursionError:
        return Unreadable(path, "its JSON is nested too deeply to read")
    except ValueError as exc:
        return Unreadable(path, f"not valid JSON: {exc}")
    except OSError as exc:
        return Unreadable(path, str(exc.strerror or exc))
    if not isinstance(data, dict) or data.get("format") != ORIGINS_FORMAT:
        return Unreadable(path, f"not a herd specs file (expected format {ORIGINS_FORMAT!r})")
    specs = data.get("specs")
    if not isinstance(specs, dict):
        return Unreadable(path, "its 'specs' is not an object of spec paths")
    return {str(k): float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0
            for k, v in specs.items()}


def record(run_dir: Path, plan: Plan) -> None:
    """Note that `plan`'s spec ran in `run_dir` (called under the run lock). An unreadable
    `specs.json` is left as it is: rewriting it would forget the specs it named
    (`other_specs` reports it instead)."""
    spec = _spec_file(plan)
    if spec is None:
        return
    specs = _recorded(run_dir)
    if isinstance(specs, Unreadable):
        return
    specs[spec] = time.time()
    write_json_atomic(Path(run_dir) / ORIGINS, {"format": ORIGINS_FORMAT, "specs": specs})


def other_specs(run_dir: Path, plan: Plan) -> list[str]:
    """Other spec files, still on disk, that ran in `run_dir` (moved or deleted ones are
    not counted: their artifacts are nobody's but this spec's to collect). An unreadable
    `specs.json` is one `Unreadable` entry: it may name any spec, so it guards like one."""
    recorded = _recorded(run_dir)
    if isinstance(recorded, Unreadable):
        return [recorded]
    spec = _spec_file(plan)
    if spec is None:
        return []
    return sorted(p for p in recorded if p != spec and Path(p).is_file())


def shared_message(run_dir: Path, others: list[str]) -> str:
    damaged = [o for o in others if isinstance(o, Unreadable)]
    if damaged:
        return (f"{damaged[0]} is unreadable ({damaged[0].reason}); it records which spec files run in "
                f"{run_dir}, so herd cannot tell whether another spec with the same file name runs there "
                "too, and collecting garbage for this spec could delete that spec's artifacts (runs leave "
                f"the file as it is); hint: if only this spec runs there, delete {damaged[0]} (the next `herd run` "
                "records the spec again); if another does too, give each spec its own --runs-dir")
    names = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    return (f"{run_dir} is also the run folder of {names} (a spec with the same file name); "
            "garbage is judged against one plan, so collecting it for this spec would delete "
            "the other's artifacts; hint: give each spec its own --runs-dir")
