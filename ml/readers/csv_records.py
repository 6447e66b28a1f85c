"""CSV records that survive malformed input.

pandas' C parser gives up on a whole file at one unterminated quote ("EOF
inside string"). Here the csv module (also C) reads one record at a time from
physical lines, and a malformed record costs only its first line: that line is
reported, and reading starts again at the next line. Every line so ends up in
exactly one record or one reported line, and the rows after a stray quote are
still read.

A record is malformed when it runs to the end of the file, or past
``RECORD_CHAR_LIMIT``, inside an open quote; when a closing quote is followed
by anything but a comma or the line end (``"a"b``: a stray quote that closed
on a later line, read strictly); when it has more fields than the header; or
when it spans several lines yet has fewer fields than the header. A one-line
record with fewer fields is padded with empty strings, as pandas does.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from ml.readers.base import RECORD_CHAR_LIMIT

_CR_STANDIN = "\ue000"  # a bare \r that is data (lineterminator "\n") rides through the csv module as this


@dataclass(slots=True)
class CsvRecord:
    line: int  # physical line (1-based, the header is line 1) on which the record starts
    values: dict[str, str] | None  # header name -> cell; None when the record is malformed
    text: str  # the line itself when malformed (for the quarantine file), else ""
    error: str | None = None


class _Overlong(str):
    """A physical line cut at the record limit; still marked when pushed back and read again."""


class _Lines:
    """Physical lines with push-back; remembers what the csv reader took for the current record."""

    def __init__(self, handle: IO[str], keep_cr: bool, limit: int) -> None:
        self._handle = handle
        self._keep_cr = keep_cr
        self._limit = limit
        self._pushed: list[str] = []  # a stack: the next line is the last item
        self.taken: list[str] = []
        self.cut: str | None = None  # why this record is malformed, when the lines alone tell
        self.restore_cr = False
        self._size = 0

    def start_record(self) -> None:
        self.taken, self.cut, self.restore_cr, self._size = [], None, False, 0

    def push_back(self, lines: list[str]) -> None:
        self._pushed.extend(reversed(lines))

    def _read(self) -> str:
        line = self._handle.readline(self._limit + 1)
        if len(line) > self._limit and not line.endswith(("\n", "\r")):
            while (rest := self._handle.readline(self._limit)) and not rest.endswith(("\n", "\r")):
                pass  # drop the rest of a runaway line without holding it
            return _Overlong(line + "\n")
        return line

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.taken and self._size > self._limit:
            self.cut = f"a quoted field runs past {self._limit:,} characters (unterminated quote?)"
            raise StopIteration
        line = self._pushed.pop() if self._pushed else self._read()
        if not line:
            if self.taken:
                self.cut = "a quoted field is still open at the end of the file (unterminated quote)"
            raise StopIteration
        self.taken.append(line)
        self._size += len(line)
        if isinstance(line, _Overlong):
            self.cut = f"a line longer than {self._limit:,} characters"
        if self._keep_cr and "\r" in line:
            body, end = (line[:-1], "\n") if line.endswith("\n") else (line, "")
            line = body.replace("\r", _CR_STANDIN) + end
            self.restore_cr = True
        return line


def _column_names(values: list[str]) -> list[str]:
    """Header names as pandas gives them: "Unnamed: i" for a blank one, "x.1" for a repeated "x"."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        name = value or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        names.append(name)
    return names


def csv_records(handle: IO[str], *, lineterminator: str | None = None) -> Iterator[CsvRecord]:
    """Records of a CSV text stream, after its header. Open the stream with
    ``newline=lineterminator or ""``: ``"\\n"`` makes a bare ``\\r`` data, as in
    pandas; None ends a line at ``\\n``, ``\\r\\n`` or ``\\r``."""
    if lineterminator not in (None, "\n"):
        raise ValueError(f"csv_lineterminator must be null or '\\n', not {lineterminator!r}")
    csv.field_size_limit(max(csv.field_size_limit(), RECORD_CHAR_LIMIT + 1))
    lines = _Lines(handle, keep_cr=lineterminator == "\n", limit=RECORD_CHAR_LIMIT)
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    line_no = 1  # physical number of the line the next record starts on
    while True:
        lines.start_record()
        try:
            values: list[str] | None = next(reader)
            error = None
        except StopIteration:
            if not lines.taken:
                return
            values, error = None, None
        except csv.Error as exc:
            values, error = None, str(exc)
            if "expected after" in error:  # '"a"b': a quote closed and more text follows
                error = "text after a closing quote (a stray quote?)"
        taken = lines.taken
        error = lines.cut or error
        if error is None and values is not None and header is not None:
            if len(values) > len(header):
                error = f"expected {len(header)} fields, saw {len(values)}"
            elif len(values) < len(header) and len(taken) > 1:
                error = (f"{len(values)} of {len(header)} fields over {len(taken)} lines "
                         "(a stray quote joined lines)")
        if error is not None or values is None:
            if header is None:
                raise ValueError(f"the CSV header is malformed: {error or 'unreadable'}")
            yield CsvRecord(line_no, None, taken[0].rstrip("\r\n"), error or "unreadable record")
            lines.push_back(taken[1:])  # read again from the line after the bad one
            line_no += 1
            continue
        start, line_no = line_no, line_no + len(taken)
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # a blank line is no record (pandas skips it too)
        if lines.restore_cr:
            values = [v.replace(_CR_STANDIN, "\r") for v in values]
        if header is None:
            header = _column_names(values)
            continue
        if len(values) < len(header):
            values += [""] * (len(header) - len(values))
        yield CsvRecord(start, dict(zip(header, values, strict=True)), "")
