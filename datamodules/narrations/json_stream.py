"""Streaming reader for one huge JSON object (HowTo100M's caption.json is gigabytes: one member at a time)."""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Callable, Iterator, Tuple


class JsonMembers:
    """Iterate ``(key, value, line)`` over the members of a file's top-level JSON object, one at a time.

    Memory is bounded by the largest member (capped at MAX_BUFFER characters), not by the file. Errors are
    ``error_type(path, problem, line=...)``: not UTF-8, malformed JSON, an empty file or object.
    """

    _SPACE = re.compile(r"[ \t\r\n]*")
    MAX_BUFFER = 256 << 20

    def __init__(self, path: Path, error_type: Callable, chunk_chars: int = 1 << 20):
        self.path, self.error, self.chunk = path, error_type, chunk_chars
        self.file = open(path, "rb")
        self.utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf, self.pos, self.line, self.raw_lines, self.eof = "", 0, 1, 0, False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self.eof:
            return False
        raw = self.file.read(self.chunk)
        try:
            text = self.utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as err:
            line = self.raw_lines + raw[:err.start].count(b"\n") + 1
            raise self.error(self.path, "not valid UTF-8", line=line) from None
        self.raw_lines += raw.count(b"\n")
        self.eof = not raw
        self.buf = self.buf[self.pos:] + text
        self.pos = 0
        return bool(raw)

    def _advance(self, new_pos: int) -> None:
        self.line += self.buf.count("\n", self.pos, new_pos)
        self.pos = new_pos

    def peek(self) -> str:
        while True:
            self._advance(self._SPACE.match(self.buf, self.pos).end())
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos:self.pos + 1]

    def expect(self, chars: str) -> str:
        found = self.peek()
        if not found or found not in chars:
            what = repr(found) if found else "end of file"
            raise self.error(self.path, f"invalid JSON: expected {' or '.join(map(repr, chars))}, "
                                          f"found {what}", line=self.line)
        self._advance(self.pos + 1)
        return found

    def value(self):
        self.peek()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number may continue in the next chunk
                    self._advance(end)
                    return obj
            except json.JSONDecodeError as err:
                offset = err.pos - self.pos  # _fill() moves the buffer's start to self.pos
                if len(self.buf) - self.pos <= self.MAX_BUFFER and self._fill():
                    continue
                line = self.line + self.buf.count("\n", self.pos, self.pos + offset)
                raise self.error(self.path, f"invalid JSON: {err.msg}", line=line) from None
            self._fill()

    def __iter__(self) -> Iterator[Tuple[str, object, int]]:
        with self.file:
            if not self.peek():
                raise self.error(self.path, "empty file", line=1)
            self.expect("{")
            if self.peek() == "}":
                raise self.error(self.path, "empty JSON object (no videos)", line=self.line)
            while True:
                self.peek()  # skip whitespace, so the line is the key's own
                line = self.line
                key = self.value()
                if not isinstance(key, str):
                    raise self.error(self.path, "invalid JSON: object key is not a string", line=line)
                self.expect(":")
                yield key, self.value(), line
                if self.expect(",}") == "}":
                    break
            if self.peek():
                raise self.error(self.path, "invalid JSON: data after the top-level object", line=self.line)
