"""Byte ranges of a file response (RFC 9110 §14): which bytes a Range header asks for, and a fixed-chunk copy.

What `requested_range` answers, for a file of `size` bytes:
* no Range header, a unit other than `bytes`, several ranges (`bytes=0-1,5-9`) or several Range headers: None,
  i.e. the whole file with 200 (RFC 9110 lets a server ignore a Range header; browsers ask for one range);
* `bytes=a-b`: bytes a..b, b clamped to size-1; `bytes=a-`: a to the end; `bytes=-n`: the last n bytes (all of
  them when n >= size);
* anything else — malformed (`bytes=x-y`, `bytes=-`, `bytes=+1-2`), reversed (b < a), starting at or past the end,
  a zero-length suffix, any range of an empty file: RangeNotSatisfiable, i.e. 416 with `Content-Range: bytes */size`.
"""
from __future__ import annotations

import re
from typing import BinaryIO, Optional, Sequence, Tuple

CHUNK_BYTES = 64 * 1024
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")   # ASCII digits only: int() would also take "+1", " 1" or "١"


class RangeNotSatisfiable(ValueError):
    """The Range header names no byte of the file (or cannot be read): answer 416."""


def requested_range(headers: Sequence[str], size: int) -> Optional[Tuple[int, int]]:
    """(first, last) byte, inclusive, of the one range asked for in the Range header values `headers`; None for
    the whole file. Raises RangeNotSatisfiable (see the module docstring)."""
    if len(headers) != 1:
        return None
    unit, eq, spec = headers[0].partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _SPEC.fullmatch(spec.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"malformed Range {headers[0][:80]!r}")
    try:
        first_text, last_text = match.groups()
        if not first_text:
            suffix = int(last_text)
            if suffix == 0 or size == 0:
                raise RangeNotSatisfiable(f"suffix range of {suffix} bytes of a {size}-byte file")
            return max(0, size - suffix), size - 1
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError as err:  # more digits than int() reads (sys.get_int_max_str_digits)
        raise RangeNotSatisfiable(f"malformed Range: {err}") from err
    if last < first:
        raise RangeNotSatisfiable(f"reversed range {first}-{last}")
    if first >= size:
        raise RangeNotSatisfiable(f"range starts at {first}, the file has {size} bytes")
    return first, min(last, size - 1)


def copy_range(src: BinaryIO, dst: BinaryIO, first: int, length: int, chunk: int = CHUNK_BYTES) -> int:
    """Copy `length` bytes of `src` from offset `first` to `dst`, `chunk` bytes at a time (memory stays one chunk
    whatever the length). Returns the bytes copied: fewer when the file shrank meanwhile."""
    src.seek(first)
    view = memoryview(bytearray(chunk))
    left = length
    while left > 0:
        n = src.readinto(view[:min(chunk, left)])
        if not n:
            break
        dst.write(view[:n])
        left -= n
    return length - left
