"""Columnar storage on plain .npy files: 1-D arrays written as a stream, strings as a UTF-8 blob + offsets,
id look-up by binary search over a sorted order, and a pread-based reader that maps nothing."""
from __future__ import annotations

import abc

import io
import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np
from numpy.lib import format as npy_format

FLOAT_COLUMNS = ("duration",)  # stored as float64 (NaN = unknown) even when every value is whole


class NpyStreamWriter:
    """Appends 1-D chunks to a .npy file whose length is only known at the end."""

    def __init__(self, path: Path, dtype: str):
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self.file = open(path, "wb", buffering=1 << 20)
        self.header_size = self._write_header(0)

    def _write_header(self, length: int) -> int:
        buf = io.BytesIO()
        header = {"descr": npy_format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (length,)}
        npy_format.write_array_header_1_0(buf, header)
        self.file.write(buf.getvalue())
        return len(buf.getvalue())

    def append(self, values) -> None:
        arr = np.ascontiguousarray(values, dtype=self.dtype)
        self.file.write(arr.tobytes())
        self.count += arr.size

    def append_bytes(self, data: bytes) -> None:
        assert self.dtype == np.uint8
        self.file.write(data)
        self.count += len(data)

    def close(self) -> None:
        self.file.seek(0)
        # numpy pads the header so the length field can grow to 21 digits in place
        if self._write_header(self.count) != self.header_size:
            raise RuntimeError(f"{self.path}: .npy header changed size")
        self.file.close()


def write_strings(path: Path, offsets_path: Path, values: Iterable[str]) -> None:
    blob, offsets = NpyStreamWriter(path, "u1"), NpyStreamWriter(offsets_path, "<i8")
    pos, chunk = 0, [0]
    for value in values:
        data = value.encode("utf-8")
        blob.append_bytes(data)
        pos += len(data)
        chunk.append(pos)
        if len(chunk) >= 65536:
            offsets.append(chunk)
            chunk = []
    offsets.append(chunk)
    blob.close()
    offsets.close()


class StringColumn(Sequence):
    """Strings stored as a UTF-8 blob + int64 offsets, decoded one at a time on access."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self._blob, self._offsets = blob, offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def raw(self, i: int) -> bytes:
        lo, hi = self._offsets[i:i + 2]
        return self._blob[lo:hi].tobytes()

    def decode_range(self, lo: int, hi: int) -> List[str]:
        """Strings lo..hi-1 with one read of the offsets and one of the blob."""
        offsets = np.asarray(self._offsets[lo:hi + 1])
        if len(offsets) == 0:
            return []
        data = self._blob[offsets[0]:offsets[-1]].tobytes()
        rel = (offsets - offsets[0]).tolist()
        return [data[a:b].decode("utf-8") for a, b in zip(rel, rel[1:])]

    def __iter__(self):
        for lo in range(0, len(self), 4096):
            yield from self.decode_range(lo, min(len(self), lo + 4096))

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} strings")
        return self.raw(i % n).decode("utf-8")


class _IdLookup(abc.ABC):
    @abc.abstractmethod
    def find(self, video_id: str) -> int:
        """Position of `video_id`, or -1."""

    def index(self, video_id: str, *args) -> int:  # noqa: D102 (Sequence.index, without a scan)
        found = self.find(video_id)
        if found < 0:
            raise KeyError(f"video id {video_id!r} is not in the narration index")
        return found

    def __contains__(self, video_id) -> bool:
        return isinstance(video_id, str) and self.find(video_id) >= 0


class VideoIds(_IdLookup, StringColumn):
    """The corpus' video ids in index order; ``index(id)`` and ``in`` use the sorted order (no dict)."""

    def __init__(self, blob, offsets, order: np.ndarray):
        StringColumn.__init__(self, blob, offsets)
        self._order = order

    def find(self, video_id: str) -> int:
        """Video number of ``video_id``, or -1."""
        key = video_id.encode("utf-8")
        lo, hi = 0, len(self._order)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.raw(int(self._order[mid])) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self._order) and self.raw(int(self._order[lo])) == key:
            return int(self._order[lo])
        return -1


class SelectedIds(_IdLookup, Sequence):
    """Video ids of a subset view."""

    def __init__(self, ids: VideoIds, selection: np.ndarray, order: np.ndarray):
        self._ids, self._selection, self._order = ids, selection, order

    def __len__(self) -> int:
        return len(self._selection)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._ids[int(self._selection[i])]

    def find(self, video_id: str) -> int:
        stored = self._ids.find(video_id)
        pos = int(np.searchsorted(self._selection[self._order], stored)) if stored >= 0 else len(self)
        if pos < len(self) and self._selection[self._order[pos]] == stored:
            return int(self._order[pos])
        return -1


class PreadArray:
    """A 1-D .npy column read with ``os.pread`` on every access: nothing is mapped into the process, so a
    worker's RSS does not grow with the pages it has read (they stay in the shared page cache only)."""

    def __init__(self, path):
        self.path = str(path)
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _fortran, self.dtype = read_header(f)
            self.offset = f.tell()
        if len(shape) != 1:
            raise ValueError(f"{path}: expected a 1-D array, got shape {shape}")
        self.length, self._fd = shape[0], None

    def __len__(self) -> int:
        return self.length

    def _read(self, lo: int, hi: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = self.dtype.itemsize
        data = os.pread(self._fd, (hi - lo) * size, self.offset + lo * size) if hi > lo else b""
        if len(data) != max(0, hi - lo) * size:
            raise OSError(f"{self.path}: short read (truncated file?)")
        return np.frombuffer(data, dtype=self.dtype)

    def __getitem__(self, key):
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.length)
            return self._read(lo, max(lo, hi)) if step == 1 else self._read(0, self.length)[key]
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -self.length <= i < self.length:
                raise IndexError(f"index {i} out of range for {self.path} ({self.length} values)")
            i %= self.length
            return self._read(i, i + 1)[0]
        return self._read(0, self.length)[key]  # fancy indexing: rare (subset sizes), read it all

    def __getstate__(self):
        return dict(self.__dict__, _fd=None)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def write_meta(meta_dir: Path, video_ids: List[str], meta) -> Dict[str, str]:
    """Write per-video metadata aligned with ``video_ids``; returns {column: 'int'|'float'|'str'}."""
    import pandas as pd

    if isinstance(meta, Mapping):
        frame = pd.DataFrame.from_dict(dict(meta), orient="index")
    else:
        frame = meta.set_index("video_id") if "video_id" in getattr(meta, "columns", ()) else meta
    frame.index = frame.index.astype(str)
    dupes = frame.index[frame.index.duplicated()]
    if len(dupes):
        raise ValueError(f"metadata has video id {dupes[0]!r} more than once")
    frame = frame.reindex(video_ids)
    meta_dir.mkdir()
    kinds: Dict[str, str] = {}
    for name in frame.columns:
        name_str = str(name)
        if not name_str.replace("_", "").isalnum():
            raise ValueError(f"metadata column name {name_str!r} must be letters, digits and _")
        values = frame[name]
        numeric = pd.to_numeric(values, errors="coerce")
        if values.notna().sum() and numeric.notna().sum() == values.notna().sum():
            valid = numeric.dropna()
            integral = (valid == valid.round()).all() and valid.abs().max() < 2 ** 53
            if integral and name_str not in FLOAT_COLUMNS:
                np.save(meta_dir / f"{name_str}.npy", numeric.fillna(-1).to_numpy(np.int64))
                kinds[name_str] = "int"
            else:
                np.save(meta_dir / f"{name_str}.npy", numeric.to_numpy(np.float64))
                kinds[name_str] = "float"
        else:
            strings = ("" if pd.isna(v) else str(v) for v in values.tolist())
            write_strings(meta_dir / f"{name_str}.npy", meta_dir / f"{name_str}.offsets.npy", strings)
            kinds[name_str] = "str"
    return kinds
