"""``--out FILE``: scores written as they are made, so that a killed run keeps what it did; ``--resume``.

FILE is CSV (``.csv``: the columns ``ref,dist,score,error`` of ``--format csv``) or JSON lines (``.jsonl``: one
``{"ref", "dist", "score", "error"}`` object per line, ``score`` null where the pair failed). Beside it,
``FILE.gsn.json`` records what made the scores: the weights' sha256 and name, the patch mode and stride, the
score's name. ``--resume`` refuses a FILE whose record differs (scores from other weights or options do not
mix) and one that holds pairs the input does not list.

Rows are written in the input's order (a pair scored early waits for those before it) and flushed one by one,
so after a kill FILE holds a prefix of the uninterrupted run's rows, its last line at most cut short (dropped by
``--resume``). A pair that failed is a row with its error, as in ``--format csv``, and counts as done.

Under torchrun (:mod:`.sharding`) each process writes its own shard to ``FILE.part-R``; when all are done,
process 0 merges FILE and the parts into FILE in the input's order (written to a temporary file, then renamed)
and removes the parts. A killed distributed run leaves FILE and its parts; ``--resume`` reads them all, with
any number of processes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import sharding

Row = tuple[str, str, "float | None", str]  # ref, dist, score, error ("" if none), as the input shows them
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ScoreFileError(ValueError):
    """FILE cannot be used as asked: exists without --resume, made with other settings, other pairs."""


def file_format(path: Path) -> str:
    """"csv" or "jsonl" from FILE's suffix; raises ScoreFileError for any other."""
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ScoreFileError(f"--out {path}: the file name must end in .csv or .jsonl (JSON lines)")
    return fmt


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".gsn.json")


def _parts(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".part-*"))


def _encode(fmt: str, row: Row) -> str:
    ref, dist, score, error = row
    if fmt == "jsonl":
        return json.dumps({"ref": ref, "dist": dist, "score": score, "error": error or None}) + "\n"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([ref, dist, "" if score is None else f"{score:.6f}", error])
    return out.getvalue()


def _header(fmt: str) -> str:
    return "ref,dist,score,error\n" if fmt == "csv" else ""


def _read_rows(path: Path, fmt: str) -> list[Row]:
    """The complete rows of a score file or part; a last line cut short by a kill is cut off the file too, so
    that appending continues on a line of its own."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    text = data[:end].decode("utf-8")
    rows: list[Row] = []
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            try:
                obj = json.loads(line)
                rows.append((obj["ref"], obj["dist"], obj["score"], obj.get("error") or ""))
            except (ValueError, KeyError, TypeError) as err:
                raise ScoreFileError(f"{path} line {n} is not a score row ({err}); was it written by gsn-metric?") \
                    from None
        return rows
    reader = csv.reader(io.StringIO(text))
    first = next(reader, None)
    if first is not None and first != ["ref", "dist", "score", "error"]:
        raise ScoreFileError(f"{path} does not start with gsn-metric's header ref,dist,score,error: {first}")
    for fields in reader:
        if len(fields) != 4:
            raise ScoreFileError(f"{path} line {reader.line_num} has {len(fields)} fields, not ref,dist,score,error")
        rows.append((fields[0], fields[1], float(fields[2]) if fields[2] else None, fields[3]))
    return rows


def _check_record(path: Path, settings: dict[str, Any]) -> None:
    """Refuse to add to a FILE made with other settings (or without a record)."""
    record = _record_path(path)
    try:
        saved = json.loads(record.read_text())
    except FileNotFoundError:
        raise ScoreFileError(f"--resume {path}: {record.name} is missing, so nothing says which weights and "
                             "options made its scores; score into a new --out FILE") from None
    except ValueError as err:
        raise ScoreFileError(f"--resume {path}: {record} is not readable JSON ({err})") from None
    changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if changed:
        what = "; ".join(f"{k}: file {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ScoreFileError(f"--resume {path}: its scores were made with other settings ({what}); resume with "
                             "the same --weights and options, or score into a new --out FILE")


def _done(path: Path, fmt: str, shown: Sequence[tuple[str, str]]) -> dict[int, Row]:
    """Input index → row, for every pair FILE and its parts already hold (matched by their ref and dist values,
    a repeated pair to its repeats in order)."""
    slots: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(shown):
        slots.setdefault(key, []).append(i)
    done: dict[int, Row] = {}
    for source in [path, *_parts(path)] if path.exists() else _parts(path):
        for row in _read_rows(source, fmt):
            free = slots.get((row[0], row[1]))
            if not free:
                raise ScoreFileError(f"--resume: {source} holds the pair {row[0]} | {row[1]}, which the input does "
                                     "not list (or lists fewer times); was it made from other pairs?")
            done[free.pop(0)] = row
    return done


class _OrderedWriter:
    """Appends the rows of ``order`` (input indices) to a file in that order as their results arrive."""

    def __init__(self, path: Path, fmt: str, order: Sequence[int], shown: Sequence[tuple[str, str]]) -> None:
        self.fmt, self.order, self.shown, self.next = fmt, list(order), shown, 0
        self.waiting: dict[int, Row] = {}
        new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115 -- open for the whole run
        if new:
            self.file.write(_header(fmt))
            self.file.flush()

    def put(self, i: int, score: float | None, error: str | None) -> None:
        self.waiting[i] = (*self.shown[i], score, error or "")
        while self.next < len(self.order) and self.order[self.next] in self.waiting:
            self.file.write(_encode(self.fmt, self.waiting.pop(self.order[self.next])))
            self.file.flush()  # a kill from here on keeps this row
            self.next += 1

    def close(self) -> None:
        self.file.close()


def _merge(path: Path, fmt: str, shown: Sequence[tuple[str, str]]) -> dict[int, Row]:
    """FILE rewritten from FILE and its parts in the input's order (temporary file, then rename); parts removed.
    Returns its rows by input index."""
    done = _done(path, fmt, shown)
    tmp = path.with_name(path.name + ".merging")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(_header(fmt) + "".join(_encode(fmt, done[i]) for i in sorted(done)))
    os.replace(tmp, path)
    for part in _parts(path):
        part.unlink()
    return done


ScorePairs = Callable[[list[int], Callable[[int, "float | None", "str | None"], None]], None]


def score_into(path: Path, shown: Sequence[tuple[str, str]], settings: dict[str, Any], resume: bool,
               score: ScorePairs, about: dict[str, Any] | None = None) -> tuple[int, int, int]:
    """Score the pairs ``shown`` lists (their ref and dist values as the input gives them) into FILE ``path``.

    ``score(indices, put)`` scores the pairs at those input indices in order, calling ``put(i, score, error)``
    for each. ``settings`` must match on ``--resume``; ``about`` is recorded beside them for people (e.g. the
    weights' name, which may change while the sha256 stays). Under torchrun each process scores its shard (:func:`sharding.shard`). Returns (pairs done before
    this run, pairs this process scored, failed pairs in FILE at the end, counted on process 0).
    Raises ScoreFileError before any scoring when FILE cannot be used as asked.
    """
    fmt = file_format(path)
    rank, world = sharding.rank_and_world()
    record = _record_path(path)
    exists = path.exists() or bool(_parts(path))  # a killed distributed run may have left only parts
    if exists and not resume:
        raise ScoreFileError(f"--out {path} exists: pass --resume to continue that run, or choose another file")
    if exists:
        _check_record(path, settings)
    sharding.barrier()  # every process has checked FILE before process 0 creates its record
    if rank == 0 and not record.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({**(about or {}), **settings}, indent=1) + "\n")
    sharding.barrier()
    done = _done(path, fmt, shown) if exists else {}
    todo = sharding.shard([i for i in range(len(shown)) if i not in done], [r for r, _ in shown], rank, world)
    target = path if world == 1 and not _parts(path) else path.with_name(f"{path.name}.part-{rank}")
    sharding.barrier()  # every process has read what was there before any writes
    writer = _OrderedWriter(target, fmt, todo, shown)
    try:
        score(todo, writer.put)
    finally:
        writer.close()
    sharding.barrier()
    failed = 0
    if rank == 0:
        out_of_order = sorted(done) != list(range(len(done)))  # resumed after a distributed kill
        rows = _merge(path, fmt, shown).values() if target != path or out_of_order or _parts(path) else \
            _read_rows(path, fmt)  # merged rows are already read; FILE is read only when nothing was merged
        failed = sum(1 for row in rows if row[3])
    sharding.barrier()  # nobody leaves (and torchrun stops nobody) before FILE is whole
    return len(done), len(todo), failed
