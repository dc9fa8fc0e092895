"""TensorBoard event files, written by hand, so a run's metrics show in
`tensorboard --logdir runs/<spec>/tensorboard` while it works, with no dependency.

The format is small and stable: a file of TFRecords (length, masked CRC-32C of the length,
data, masked CRC-32C of the data), each holding one `Event` protobuf. herd writes three
kinds: the `file_version` event every file starts with, scalar summaries (one `Value` per
metric: tag and `simple_value`), and `SessionLog.START` at a step, TensorBoard's own way
of saying "a restart: drop what this run logged from this step on" — which is what a resumed
job needs, since it repeats the steps between its last checkpoint and the kill.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

FILE_VERSION = "brain.Event:2"
_ATTEMPTS = itertools.count()  # two files opened in the same second by one process stay apart


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked(crc32c(length))) + data + struct.pack("<I", _masked(crc32c(data)))


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as protobuf encodes it (a negative one takes ten bytes)
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, *, file_version: str | None = None,
          scalars: dict[str, float] | None = None, restart: bool = False) -> bytes:
    """One `Event`: wall_time (1, double), step (2, int64), and file_version (3),
    summary (5: repeated Value {tag (1), simple_value (2, float)}) or session_log (7:
    status START = 1)."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
                          for tag, value in scalars.items())
        out += _bytes_field(5, values)
    if restart:
        out += _bytes_field(7, b"\x08\x01")
    return out


class EventWriter:
    """A job's event file in `directory`, created at its first event. Each attempt of a job
    writes its own file; TensorBoard reads a folder's files in name (time) order."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path: Path | None = None

    def _append(self, data: bytes) -> None:
        if self.path is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                    f"{os.getpid()}.{next(_ATTEMPTS)}.herd")
            self.path = self.directory / name
            with self.path.open("ab") as f:
                f.write(tfrecord(event(time.time(), 0, file_version=FILE_VERSION)))
        with self.path.open("ab") as f:
            f.write(tfrecord(data))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if values:
            self._append(event(time.time(), step, scalars=values))

    def restart(self, step: int) -> None:
        """TensorBoard drops what earlier files logged at `step` and after."""
        self._append(event(time.time(), step, restart=True))
