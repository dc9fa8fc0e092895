"""Document sources: JSONL (plain, .gz, .bz2, .xz, .zst), Parquet, plain text files, and the
embedded Python stdlib.

Each source yields `Document`s in a deterministic order. Malformed records are counted and
reported as `file:line: reason` instead of stopping the job; the job decides whether the
bad fraction is fatal (`max_bad_fraction`).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import sys
import sysconfig
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import IO, Any

from runtime.data.documents import Document, continuation_name, text_bytes, write_shard
from runtime.data.text import stable_hash64
from runtime.executor.external import matched_files
from runtime.jobs.context import JobFailed

DEFAULT_FIELDS = {"text": "text", "url": "url", "id": "id", "timestamp": "timestamp"}
MAX_BAD_SAMPLES = 20
STDLIB_DOCS_PER_SHARD = 128
TEXT_FILES_PER_SHARD = 256
SPLIT_BYTES = 128 << 20  # a bigger JSONL or Parquet file is read as several shards
#: a source shard rolls over into a further shard after about this much text, so an input
#: that cannot be cut before reading (a compressed file) still feeds every later worker
ROLL_BYTES = SPLIT_BYTES
#: how a record without the text field is told to map it; readers without a mapping drop it
MAP_TEXT_HINT = "; hint: map the text with fields { text = \"...\" }"
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}


@dataclass
class BadRecords:
    """Malformed input seen while reading: a count and the first few `file:line: reason`."""

    count: int = 0
    samples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.samples) < MAX_BAD_SAMPLES:
            self.samples.append(f"{where}: {reason}")


#: what `json.loads` raises on a line it cannot read: malformed JSON and bad UTF-8 (both
#: ValueErrors), an integer longer than Python converts (a plain ValueError) and nesting
#: deeper than its recursion limit (RecursionError). Each is one bad record, never a crash.
JSON_LINE_ERRORS: tuple[type[BaseException], ...] = (ValueError, RecursionError)


def json_limit_reason(e: BaseException) -> str | None:
    """Why a line that may well be valid JSON could not be read, in the user's terms, or None
    for plain malformed JSON. Python's own messages ("maximum recursion depth exceeded",
    "use sys.set_int_max_str_digits()") name neither the record nor a fix the user has."""
    if isinstance(e, RecursionError):
        return ("not readable JSON (arrays or objects nested too deeply for Python's recursion "
                "limit); hint: flatten the record")
    if isinstance(e, json.JSONDecodeError | UnicodeDecodeError):
        return None
    if isinstance(e, ValueError) and "integer string conversion" in str(e):
        return (f"not readable JSON (a number with more than {sys.get_int_max_str_digits():,} digits, "
                "the most Python converts); hint: write such a number as a string")
    return None


def json_line_reason(e: BaseException) -> str:
    """The bad-record reason for a JSONL line that `json.loads` refused (`JSON_LINE_ERRORS`)."""
    return json_limit_reason(e) or f"not valid JSON ({type(e).__name__}: {e})"


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def may_hold_surrogates(raw: bytes) -> bool:
    """Whether a JSON line can decode to a lone UTF-16 surrogate. Only a `\\uD800`-`\\uDFFF`
    escape makes one (strict UTF-8 decoding never does), so one byte search clears almost
    every line and `unencodable` runs only on the rest."""
    return _SURROGATE_ESCAPE.search(raw) is not None


def unencodable(value: Any, name: str) -> str | None:
    """Why `value` (a string, or lists and objects of strings) cannot be written as UTF-8,
    naming where inside it, or None. JSON lets a `\\ud800` escape stand alone, but no UTF-8
    file can hold the character it makes: caught here, it is one bad record at its line
    rather than a `UnicodeEncodeError` that ends the job where the record is written."""
    stack: list[tuple[str, Any]] = [(name, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as e:
                return (f"{where} holds a lone surrogate \\u{ord(v[e.start]):04x} (character "
                        f"{e.start + 1}), which UTF-8 cannot encode; hint: a \\ud800-\\udfff escape "
                        "must be one half of a pair, as in \\ud83d\\ude00")
        elif isinstance(v, dict):
            for k in reversed(v):  # reversed: the stack then yields the record's own order
                stack += [(f"{where} key {printable(repr(k))}", k), (f"{where}.{printable(str(k))}", v[k])]
        elif isinstance(v, list):
            stack += [(f"{where}[{i}]", item) for i, item in reversed(list(enumerate(v)))]
    return None


def printable(text: str) -> str:
    """`text` with what UTF-8 cannot encode as backslash escapes: safe in a message, a log
    line or stats.json, whatever a file name or record holds."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def expand_globs(patterns: list[str]) -> list[Path]:
    """Every file matched by the globs, sorted, de-duplicated; an empty glob is a user error."""
    files: list[Path] = []
    for pattern in patterns:
        matched = [str(p) for p in matched_files(pattern)]
        if not matched:
            plain = os.path.expanduser(pattern)
            if os.path.isdir(plain):
                raise JobFailed(
                    f"source path {pattern!r} is a folder, not a file; "
                    f"hint: name the files in it with a glob, e.g. \"{pattern.rstrip('/')}/*.jsonl\" "
                    f"(\"/**/*.jsonl\" for subfolders too)"
                )
            if os.path.lexists(plain) and not os.path.exists(plain):
                raise JobFailed(f"source path {pattern!r} is a symbolic link to a missing file "
                                f"({os.readlink(plain)}); hint: fix the link or the path")
            raise JobFailed(
                f"source path {pattern!r} matches no files; "
                "hint: check the glob and that the data is where the spec says"
            )
        files.extend(Path(p) for p in matched)
    unique: dict[str, Path] = {}
    for f in files:  # across globs too: each real file once
        unique.setdefault(os.path.realpath(f), f)
    for f in unique.values():
        if printable(str(f)) != str(f):  # its bytes are not UTF-8: ids, logs and stats could not hold it
            raise JobFailed(f"{printable(str(f))}: the file's name is not UTF-8; hint: rename the file")
    return list(unique.values())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lookup(record: dict[str, Any], dotted: str | None) -> Any:
    """The value at a dotted path; None when absent, or when the field is mapped to none."""
    if dotted is None:
        return None
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _has(record: dict[str, Any], dotted: str | None) -> bool:
    """Whether the dotted path exists (with any value, null included)."""
    if dotted is None:
        return False
    *parents, last = dotted.split(".")
    value: Any = record
    for part in parents:
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return isinstance(value, dict) and last in value


def _record_to_doc(
    record: Any, fields: dict[str, str | None], default_id: str, source: str
) -> tuple[Document | None, str]:
    if not isinstance(record, dict):
        return None, f"expected a JSON object, got {type(record).__name__}"
    text_field = fields.get("text", "text")
    text = _lookup(record, text_field)
    if text is None and _has(record, text_field):
        return None, f"field {text_field!r} is null"
    if text is None:
        keys = ", ".join(repr(k) for k in list(record)[:12]) or "none"
        return None, f"no field {text_field!r} (this record has {keys}){MAP_TEXT_HINT}"
    if not isinstance(text, str):
        return None, f"field {text_field!r} is a {type(text).__name__}, not a string"
    doc_id = _lookup(record, fields.get("id", "id"))
    url = _lookup(record, fields.get("url", "url"))
    ts = _lookup(record, fields.get("timestamp", "timestamp"))
    return Document(
        id=str(doc_id) if doc_id is not None else default_id,
        text=text,
        url=str(url) if url is not None else None,
        timestamp=ts if isinstance(ts, (int, float, str)) else None,
        source=source,
    ), ""


def _surely_encodable(doc: Document, raw: bytes) -> bool:
    """A cheap proof, true for nearly every line, that `_unencodable_doc` would find nothing:
    every string ASCII (`str.isascii` is O(1)), or a line in raw UTF-8 without a surrogate
    escape. A line of escapes only (`ensure_ascii` output) gets the exact check: a search
    through its many `\\u` would cost more."""
    if (doc.text.isascii() and doc.id.isascii() and (doc.url is None or doc.url.isascii())
            and not (isinstance(doc.timestamp, str) and not doc.timestamp.isascii())):
        return True
    return not raw.isascii() and not may_hold_surrogates(raw)


def _unencodable_doc(doc: Document, fields: dict[str, str | None]) -> str | None:
    """`unencodable` over the strings a document keeps, named by their fields in the file."""
    for attr in ("text", "id", "url", "timestamp"):
        value = getattr(doc, attr)
        if isinstance(value, str) and not value.isascii() and (
                why := unencodable(value, f"field {fields.get(attr) or attr!r}")):
            return why
    return None


class _ZstdStream(io.RawIOBase):
    """A .zst file's bytes, frame after frame, that ends in EOFError where a frame is cut
    short: zstandard's own stream reader ends quietly there, and a truncated download would
    lose its tail without a word."""

    def __init__(self, path: Path) -> None:
        import zstandard

        self._new = zstandard.ZstdDecompressor().decompressobj
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._decoder = self._new()
        self._in_frame = False
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            chunk = self._file.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise EOFError("the zstd stream ends inside a frame (truncated file)")
                return 0
            out = []
            while chunk:
                self._in_frame = True
                out.append(self._decoder.decompress(chunk))
                chunk = b""
                if self._decoder.eof:  # a frame ends; another may follow
                    chunk, self._decoder, self._in_frame = self._decoder.unused_data, self._new(), False
            self._buffer = b"".join(out)
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_zstd(path: Path, mode: str) -> IO[bytes]:
    return io.BufferedReader(_ZstdStream(path), buffer_size=1 << 20)


#: compressed JSONL by suffix: (opener, the format's name for messages)
COMPRESSED: dict[str, tuple[Callable[[Path, str], IO[bytes]], str]] = {
    ".gz": (gzip.open, "gzip"), ".bz2": (bz2.open, "bzip2"), ".xz": (lzma.open, "xz"), ".zst": (_open_zstd, "zstd"),
}


def open_jsonl(path: Path) -> IO[bytes]:
    """A JSONL file's bytes, decompressed by its suffix (`COMPRESSED`); post-training
    datasets read their files through this too."""
    opener, _ = COMPRESSED.get(Path(path).suffix, (open, ""))
    return opener(Path(path), "rb")


def decode_errors() -> tuple[type[BaseException], ...]:
    """What a damaged compressed stream raises, whichever format."""
    import zstandard

    return (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


def read_jsonl(path: Path, fields: dict[str, str], bad: BadRecords,
               part: FilePart | None = None) -> Iterator[Document]:
    """Records of a .jsonl file (or .jsonl.gz, .bz2, .xz, .zst), or of one byte range of a
    plain one; bad lines and a truncated stream are counted. Line numbers (and the ids of
    records without one) are the whole file's, so a split file reads exactly as an unsplit
    one."""
    fmt = COMPRESSED.get(path.suffix, (open, ""))[1]
    lineno = part.first if part else 0
    remaining = part.end - part.start if part else None
    try:
        with open_jsonl(path) as f:
            if part:
                f.seek(part.start)
            for raw in f:
                if remaining is not None:
                    if remaining <= 0:
                        break
                    remaining -= len(raw)
                lineno += 1
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 byte-order mark, as some editors and exporters write
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw.decode("utf-8"))
                    doc, reason = _record_to_doc(record, fields, f"{path}:{lineno}", "jsonl")
                except JSON_LINE_ERRORS as e:  # str() of a deep id recurses as deep as json did
                    bad.add(f"{path}:{lineno}", json_line_reason(e))
                    continue
                if (doc is not None and not _surely_encodable(doc, raw)
                        and (why := _unencodable_doc(doc, fields))):
                    doc, reason = None, why
                if doc is None:
                    bad.add(f"{path}:{lineno}", reason)
                else:
                    yield doc
    except decode_errors() as e:
        if lineno == 0:  # nothing readable at all: a whole file must not vanish as "one record"
            hint = (f"if it is not {fmt}-compressed, drop the {path.suffix} suffix" if fmt and not
                    isinstance(e, EOFError) else "check the file")
            raise JobFailed(f"{path}: unreadable ({e}); hint: {hint}") from None
        bad.add(f"{path}:{lineno + 1}", f"unreadable or truncated file ({e})")


def read_parquet(path: Path, fields: dict[str, str], bad: BadRecords,
                 part: FilePart | None = None) -> Iterator[Document]:
    """Rows of a Parquet file, or of a range of its row groups (`part`), numbered as in
    the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise JobFailed(f"{path}: not a readable Parquet file ({e}); hint: re-export it") from None
    present = set(pf.schema_arrow.names)
    columns = sorted({c.split(".")[0] for c in fields.values() if c} & present)
    if fields.get("text", "text").split(".")[0] not in present:
        raise JobFailed(
            f"{path}: no column {fields.get('text', 'text')!r} (columns: {', '.join(sorted(present))}); "
            "hint: map it with fields { text = \"...\" }"
        )
    row = part.first if part else 0
    groups = range(part.start, part.end) if part else range(pf.num_row_groups)
    for group in groups:  # one group at a time, so a damaged one can be named
        first, size = row + 1, pf.metadata.row_group(group).num_rows
        batches = pf.iter_batches(row_groups=[group], columns=columns, batch_size=4096)
        while True:
            try:
                batch = next(batches, None)
                records = batch.to_pylist() if batch is not None else []
            except (pa.ArrowException, OSError, ValueError) as e:
                # a corrupt page: the rest of the group cannot be read, and a whole group
                # must not vanish as "one bad record"
                raise JobFailed(
                    f"{path}: row group {group + 1} of {pf.num_row_groups} (rows {first}-{first + size - 1}) "
                    f"is unreadable ({e}); hint: the file is damaged: re-export or re-download it"
                ) from None
            if batch is None:
                break
            for record in records:
                row += 1
                doc, reason = _record_to_doc(record, fields, f"{path}:{row}", "parquet")
                if doc is None:
                    bad.add(f"{path}:row {row}", reason)
                else:
                    yield doc


def read_text_file(path: Path, bad: BadRecords) -> Iterator[Document]:
    try:
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError as e:  # removed or made unreadable since the glob matched it
        bad.add(f"{path}:1", f"unreadable ({e.strerror or e})")
        return
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as e:
        bad.add(f"{path}:1", f"not UTF-8 ({e})")
        return
    yield Document(id=str(path), text=text, url=path.resolve().as_uri(),
                   timestamp=_iso(mtime), source="text")


# --- the embedded default corpus -------------------------------------------------------


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_items(include: list[str], seed: int) -> list[tuple[str, str]]:
    """(kind, name) of every stdlib document, in a seeded but stable order.

    The order is a hash of (seed, id) so that `limit_docs` takes a mix of topics and modules
    rather than the alphabetically first ones.
    """
    unknown = set(include) - {"docs", "source"}
    if unknown:
        raise JobFailed(f"python_stdlib: unknown include {sorted(unknown)}; use 'docs' and/or 'source'")
    items: list[tuple[str, str]] = []
    if "docs" in include:
        from pydoc_data.topics import topics

        items += [("docs", name) for name in topics]
    if "source" in include:
        root = stdlib_dir()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(".py"):
                    items.append(("source", (Path(dirpath) / name).relative_to(root).as_posix()))
    return sorted(items, key=lambda it: (stable_hash64(f"{it[0]}:{it[1]}", seed), it))


def stdlib_files(entries: Iterable[tuple[str, str]]) -> list[str]:
    """The files behind stdlib items: each module's source, and the docs topics module."""
    files: set[str] = set()
    for kind, name in entries:
        if kind == "docs":
            import pydoc_data.topics as topics_module

            files.add(str(topics_module.__file__))
        else:
            files.add(str(stdlib_dir() / name))
    return sorted(files)


def stdlib_document(kind: str, name: str, bad: BadRecords) -> Document | None:
    if kind == "docs":
        import pydoc_data.topics as topics_module

        mtime = os.stat(topics_module.__file__).st_mtime
        return Document(id=f"python:docs/{name}", text=topics_module.topics[name],
                        url=f"python://docs/topics/{name}", timestamp=_iso(mtime),
                        source="python_stdlib")
    path = stdlib_dir() / name
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        bad.add(f"{path}:1", f"unreadable ({e})")
        return None
    return Document(id=f"python:stdlib/{name}", text=text, url=f"python://stdlib/{name}",
                    timestamp=_iso(path.stat().st_mtime), source="python_stdlib")


# --- shard tasks (module level: they cross process boundaries) ---------------------------


@dataclass(frozen=True)
class FilePart:
    """A slice of one input file read as its own shard: bytes [start, end) of a JSONL file
    cut at line starts, or row groups [start, end) of a Parquet file; `first` is the number
    of lines (rows) before it."""

    path: str
    start: int
    end: int
    first: int


def split_jsonl(path: Path, size: int, target: int) -> list[FilePart]:
    """Cut a plain JSONL file at line starts near every `target` bytes. One sequential pass
    counts the lines before each cut, at disk speed, so records keep their line numbers."""
    cuts = [0]
    with open(path, "rb") as f:
        for aim in range(target, size, target):
            if aim <= cuts[-1]:
                continue  # a line longer than `target` spans this aim
            f.seek(aim - 1)
            f.readline()  # to the end of the line holding byte aim - 1
            if f.tell() >= size:
                break
            cuts.append(f.tell())
        cuts.append(size)
        f.seek(0)
        lines = [0]
        for start, end in zip(cuts, cuts[1:], strict=False):
            left, count = end - start, lines[-1]
            while left > 0:
                chunk = f.read(min(1 << 24, left))
                if not chunk:
                    break
                count += chunk.count(b"\n")
                left -= len(chunk)
            lines.append(count)
    return [FilePart(str(path), a, b, lines[i]) for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]


def split_parquet(path: Path, target: int) -> list[FilePart] | None:
    """Group a Parquet file's row groups into parts of about `target` uncompressed bytes;
    None when it has one group (or none, or is unreadable: the reader says why)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        return None
    if meta.num_row_groups < 2:
        return None
    parts: list[FilePart] = []
    start = row = first = size = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        size += group.total_byte_size
        row += group.num_rows
        if size >= target or g == meta.num_row_groups - 1:
            parts.append(FilePart(str(path), start, g + 1, first))
            start, first, size = g + 1, row, 0
    return parts if len(parts) > 1 else None


def split_file(kind: str, path: Path, target: int | None = None) -> list[Any]:
    """The entries one input file becomes: itself, or its parts when it is big enough to
    be worth several workers. A compressed stream cannot be entered mid-way: it stays whole."""
    target = target or SPLIT_BYTES
    try:
        size = path.stat().st_size
    except OSError:
        return [str(path)]  # the reader reports it
    if size <= target or path.suffix in COMPRESSED:
        return [str(path)]
    parts = split_jsonl(path, size, target) if kind == "jsonl" else split_parquet(path, target)
    return list(parts) if parts else [str(path)]


def entry_path(entry: Any) -> str:
    return entry.path if isinstance(entry, FilePart) else str(entry)


@dataclass
class SourceShard:
    """One output shard of a source job: what to read and how many docs at most."""

    kind: str
    entries: list[Any]
    fields: dict[str, str]
    limit: int | None = None


def iter_shard_documents(task: SourceShard, bad: BadRecords) -> Iterator[Document]:
    for entry in task.entries:
        if task.kind == "python_stdlib":
            doc = stdlib_document(entry[0], entry[1], bad)
            if doc is not None:
                yield doc
        elif task.kind == "jsonl":
            part = entry if isinstance(entry, FilePart) else None
            yield from read_jsonl(Path(entry_path(entry)), task.fields, bad, part)
        elif task.kind == "parquet":
            part = entry if isinstance(entry, FilePart) else None
            yield from read_parquet(Path(entry_path(entry)), task.fields, bad, part)
        elif task.kind == "text":
            yield from read_text_file(Path(entry), bad)
        else:
            raise JobFailed(f"unknown source kind {task.kind!r}; known: jsonl, parquet, text, python_stdlib")


def _up_to_bytes(docs: Iterator[Document], budget: int) -> Iterator[Document]:
    """Documents from `docs` until their text reaches `budget` bytes (the one crossing it
    included); what is left stays in `docs`."""
    total = 0
    for doc in docs:
        yield doc
        total += text_bytes(doc)
        if total >= budget:
            return


def write_source_shard(task: SourceShard, out: Path) -> dict[str, Any]:
    """Write `out`, rolling over into `continuation_name`s every `ROLL_BYTES` of text;
    `pieces` lists the shard files written, in document order."""
    bad = BadRecords()

    def limited() -> Iterator[Document]:
        for n, doc in enumerate(iter_shard_documents(task, bad)):
            if task.limit is not None and n >= task.limit:
                return
            yield doc

    rest = limited()
    pieces: list[str] = []
    docs = nbytes = 0
    while True:
        first = next(rest, None)
        if first is None and pieces:
            break
        path = out.with_name(continuation_name(out.name, len(pieces))) if pieces else out
        chunk = chain([first], rest) if first is not None else iter(())
        n, b = write_shard(path, _up_to_bytes(chunk, ROLL_BYTES))
        pieces.append(path.name)
        docs, nbytes = docs + n, nbytes + b
        if first is None:
            break
    return {"docs_in": docs + bad.count, "docs_out": docs, "bytes_out": nbytes,
            "bad": bad.count, "bad_samples": bad.samples, "pieces": pieces}


def plan_shards(config: dict[str, Any], seed: int) -> list[SourceShard]:
    """Split a source config into shard tasks: one per input file (one per part of a big
    plain JSONL or Parquet file), or fixed-size groups of small ones."""
    kind = config.get("source", "jsonl")
    fields = {**DEFAULT_FIELDS, **(config.get("fields") or {})}
    if kind == "python_stdlib":
        items = stdlib_items(list(config.get("include", ["docs", "source"])), seed)
        if config.get("limit_docs") is not None:
            items = items[: int(config["limit_docs"])]
        groups = [items[i : i + STDLIB_DOCS_PER_SHARD]
                  for i in range(0, len(items), STDLIB_DOCS_PER_SHARD)] or [[]]
        return [SourceShard(kind, g, fields) for g in groups]
    if kind not in {"jsonl", "parquet", "text"}:
        raise JobFailed(f"unknown source {kind!r}; known: jsonl, parquet, text, python_stdlib")
    paths = config.get("paths") or []
    if not paths:
        raise JobFailed(f"source {kind!r} needs at least one path glob")
    files = [str(p) for p in expand_globs(list(paths))]
    if kind == "text":
        return [SourceShard(kind, files[i : i + TEXT_FILES_PER_SHARD], fields)
                for i in range(0, len(files), TEXT_FILES_PER_SHARD)]
    return [SourceShard(kind, [entry], fields) for f in files for entry in split_file(kind, Path(f))]


#: bad records a within-threshold warning lists (reports keep 20)
WARN_SAMPLES = 3


def skipped_warning(samples: list[str], count: int, max_bad: float, what: str = "invalid") -> str:
    """The run-output warning for bad records skipped within `max_bad_fraction`: the count
    and the first few `file:line: problem`, so a skipped record is never noticed only by
    opening the report. Sources and post-training datasets say it the same way."""
    more = f" (and {count - WARN_SAMPLES} more)" if count > WARN_SAMPLES else ""
    return (f"{count} {what} record(s) skipped (within max_bad_fraction {max_bad:g}): "
            + "; ".join(samples[:WARN_SAMPLES]) + more)
