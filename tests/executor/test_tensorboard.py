"""TensorBoard event files written by hand: the framing and protobuf fields TensorBoard
reads, checked by a small reader here and, where `tensorboard` is installed, by its own
loader — scalars per job, and a resumed job's repeated steps dropped (SessionLog.START)."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest

from runtime.executor import run_plan
from runtime.jobs.context import JobContext
from runtime.tensorboard import crc32c, tfrecord

from .support import job, make_plan


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes) -> list[tuple[int, object]]:
    """(field number, value) of a protobuf message: varints, doubles, floats, bytes."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = struct.unpack("<d", data[i:i + 8])[0], i + 8
        elif wire == 5:
            value, i = struct.unpack("<f", data[i:i + 4])[0], i + 4
        else:
            n, i = _varint(data, i)
            value, i = data[i:i + n], i + n
        out.append((number, value))
    return out


def read_events(path: Path) -> list[dict]:
    """Every event of a file, CRCs checked: {step, version | scalars | restart}."""
    data, i, events = path.read_bytes(), 0, []
    while i < len(data):
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[i + 8:i + 12])[0] == _masked(crc32c(header))
        body = data[i + 12:i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == _masked(crc32c(body))
        i += 16 + n
        fields = dict(_fields(body))
        event = {"step": fields.get(2, 0)}
        if 3 in fields:
            event["version"] = fields[3].decode()
        if 5 in fields:
            event["scalars"] = {}
            for number, value in _fields(fields[5]):
                assert number == 1
                inner = dict(_fields(value))
                event["scalars"][inner[1].decode()] = inner[2]
        if 7 in fields:  # session_log (6 is the deprecated log_message)
            event["restart"] = dict(_fields(fields[7])).get(1) == 1
        events.append(event)
    return events


def test_crc32c_is_castagnolis() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert tfrecord(b"")[:8] == b"\0" * 8


def context(tmp_path: Path, name: str = "train.base") -> JobContext:
    return JobContext(job_id=name, kind="train.pretrain", stage="base", config={}, inputs={}, out=tmp_path / "out",
                      work=tmp_path / "work", run_dir=tmp_path, settings={}, log=logging.getLogger("t"),
                      metrics_path=tmp_path / "metrics.jsonl", tensorboard_dir=tmp_path / "tb" / name)


def test_metrics_become_scalars_at_their_step(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    for step in range(3):
        ctx.metric(step=step, loss=5.0 - step, lr=1e-3, stage="pretrain", done=True)
    ctx.metric(accuracy=0.25)  # no step: the row's index
    (path,) = (tmp_path / "tb" / "train.base").iterdir()
    assert path.name.startswith("events.out.tfevents.")
    events = read_events(path)
    assert events[0] == {"step": 0, "version": "brain.Event:2"}
    assert [e["step"] for e in events[1:]] == [0, 1, 2, 3]
    assert events[2]["scalars"] == {"loss": 4.0, "lr": pytest.approx(1e-3)}  # strings and booleans left out
    assert events[4]["scalars"] == {"accuracy": 0.25}
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4  # the JSONL is unchanged


def test_a_resumed_job_tells_tensorboard_to_drop_the_steps_it_repeats(tmp_path: Path) -> None:
    first = context(tmp_path)
    for step in range(1, 11):
        first.metric(step=step, loss=10.0 - step)
    second = context(tmp_path)  # a new attempt after a kill; its checkpoint was step 6
    second.rewind_metrics(6)
    for step in range(7, 13):
        second.metric(step=step, loss=100.0 + step)
    files = sorted((tmp_path / "tb" / "train.base").iterdir())
    assert len(files) == 2
    assert read_events(files[1])[1] == {"step": 7, "restart": True}
    tb = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = tb.EventAccumulator(str(tmp_path / "tb" / "train.base"))
    acc.Reload()
    points = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert points == [(s, 10.0 - s) for s in range(1, 7)] + [(s, 100.0 + s) for s in range(7, 13)]


def test_a_run_writes_a_folder_per_job_and_a_fresh_start_clears_it(run_dir, console) -> None:
    plan = make_plan(job("a"), job("b", inputs={"in": "a"}))
    run_plan(plan, run_dir, console=console)
    for name in ("a", "b"):
        (path,) = (run_dir / "tensorboard" / name).iterdir()
        assert read_events(path)[1]["scalars"] == {"value": 0.0 if name == "a" else 2.0}
    stale = run_dir / "tensorboard" / "b" / "events.out.tfevents.0000000001.old"
    stale.write_bytes(b"")
    run_plan(plan, run_dir, console=console, force=["b"])
    assert not stale.exists() and len(list((run_dir / "tensorboard" / "b").iterdir())) == 1
    assert json.loads((run_dir / "metrics" / "b.jsonl").read_text().splitlines()[0])["value"] == 2
