"""Where benchmark results go: `benchmarks/results/<script>-<host>.json`, one file per script
and machine, so numbers from this machine and from a GPU box sit side by side."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(name: str, out: Path | None = None) -> Path:
    """`out` when given (a script's --out), else the default file for this script and host."""
    return Path(out) if out else RESULTS / f"{name}-{socket.gethostname()}.json"


def write_result(name: str, data: Any, out: Path | None = None) -> Path:
    path = result_path(name, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
