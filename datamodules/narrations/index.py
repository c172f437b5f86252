"""NarrationIndex: the narrations of a whole corpus in one memory-mapped, columnar directory.

Why numpy ``.npy`` files opened with ``mmap_mode="r"`` rather than Arrow/Parquet: access is "the rows of
video i" (two offset look-ups and three slices), which numpy does in microseconds with no per-call object
overhead; the files are self-describing, need nothing beyond numpy, can be written as a stream (the
``.npy`` header has a fixed size whatever the length, so it is rewritten once the length is known), and
every DataLoader worker maps the same page-cache pages instead of holding its own copy. Parquet would be
compressed and could not be mapped; Arrow IPC could, but offers nothing here that the plain arrays lack.

Layout of an index directory::

    index.json               manifest: format, version, counts, meta columns, build stats
    video_offsets.npy        int64 (V+1): narrations of video i are rows [off[i], off[i+1])
    starts.npy, ends.npy     float64 (N): seconds, as read (float64 like pandas, so int() truncation
                             of clip windows matches the original bit for bit)
    text.npy                 uint8: every narration's UTF-8 text, concatenated
    text_offsets.npy         int64 (N+1): byte offsets into text.npy
    video_ids.npy            uint8 + video_id_offsets.npy int64 (V+1): the ids, same scheme
    video_id_order.npy       int64 (V): video numbers sorted by id bytes (binary search, no dict)
    meta/<col>.npy           per-video metadata: int64 (missing -1) or float64 (missing NaN); string
                             columns as meta/<col>.npy (uint8) + meta/<col>.offsets.npy

A ``NarrationIndex`` pickles to its path only and maps its files lazily on first use, so it can be handed
to DataLoader workers under fork or spawn without copying the corpus.

``access="mmap"`` (default) maps the files: fastest, and the pages are shared through the page cache, but
every page a worker has touched counts in that worker's RSS (not in its USS or private memory), so after a
long run each worker's RSS approaches the index size. Tools that add up RSS over processes (``top``, some
SLURM memory enforcement) then see N copies. ``access="pread"`` reads each slice with ``os.pread`` instead:
a few more microseconds per sample, and RSS stays flat (tools/bench_narrations.py measures both).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from datamodules.narrations.columnar import (NpyStreamWriter, PreadArray, SelectedIds, StringColumn, VideoIds, write_meta,
                                  write_strings)
from datamodules.atomic import atomic_dir

FORMAT = "milnce-narration-index"
VERSION = 1
_META_DIR = "meta"


class NarrationIndexWriteError(OSError):
    """The index could not be written (full disk, file-size limit, read-only folder); names the folder."""


class NarrationIndex:
    """Read-only, memory-mapped narrations of a corpus; see the module docstring for the layout."""

    def __init__(self, path, manifest: Optional[dict] = None, selection: Optional[np.ndarray] = None,
                 access: str = "mmap"):
        if access not in ("mmap", "pread"):
            raise ValueError(f"access must be 'mmap' or 'pread', got {access!r}")
        self.path, self.access = Path(path), access
        self._manifest = manifest if manifest is not None else _read_manifest(self.path)
        self._arrays: Optional[Dict[str, Any]] = None
        self._selection = selection        # subset view: local video number -> stored video number
        self._selection_order: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ build / open
    @classmethod
    def build(cls, videos: Iterable[Tuple[str, Any, Any, Sequence[str]]], out_dir, meta=None,
              stats=None, overwrite: bool = False) -> "NarrationIndex":
        """Stream ``(video_id, starts, ends, texts)`` tuples into an index at ``out_dir``.

        Memory is O(videos), not O(narrations): narration columns go straight to disk. Videos with no
        narrations are skipped (counted in the manifest). ``meta``: a pandas DataFrame indexed by video id
        (or with a ``video_id`` column), or ``{video_id: {column: value}}``; rows for videos not in the
        corpus are ignored. ``stats``: a mapping, or an object with ``as_dict()`` read once the stream is
        exhausted (a reader's ``CaptionStats``), stored in the manifest as ``build_stats``.
        Written into a temporary folder and renamed at the end (datamodules.atomic), so a crash never leaves a half index.
        """
        out_dir = Path(out_dir)
        if out_dir.exists() and not overwrite:
            raise FileExistsError(f"{out_dir} exists (pass overwrite=True to replace it)")
        try:
            cls._build(videos, out_dir, meta, stats)
        except OSError as err:  # disk full, file-size limit, read-only: atomic_dir left the previous index as it was
            where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
            raise NarrationIndexWriteError(
                f"{out_dir}: cannot write the narration index{where} ({type(err).__name__}: {err}); the previous "
                "index there, if any, is complete and unchanged; rerun once there is space") from err
        return cls(out_dir)

    @staticmethod
    def _build(videos, out_dir: Path, meta, stats) -> None:
        with atomic_dir(out_dir) as tmp:
            video_ids, num_narrations, text_bytes, skipped = _write_narrations(videos, tmp)
            if not video_ids:
                raise ValueError(f"no video with narrations was given to build {out_dir}")
            write_strings(tmp / "video_ids.npy", tmp / "video_id_offsets.npy", video_ids)
            encoded_ids = [v.encode("utf-8") for v in video_ids]
            order = sorted(range(len(encoded_ids)), key=encoded_ids.__getitem__)
            for a, b in zip(order, order[1:]):
                if encoded_ids[a] == encoded_ids[b]:
                    raise ValueError(f"video id {video_ids[a]!r} appears twice (videos {a} and {b})")
            np.save(tmp / "video_id_order.npy", np.asarray(order, dtype=np.int64))
            del encoded_ids, order
            meta_columns = write_meta(tmp / _META_DIR, video_ids, meta) if meta is not None else {}
            manifest = {"format": FORMAT, "version": VERSION, "num_videos": len(video_ids),
                        "num_narrations": num_narrations, "text_bytes": text_bytes, "meta_columns": meta_columns,
                        "videos_without_narrations": skipped,
                        "build_stats": stats.as_dict() if hasattr(stats, "as_dict") else dict(stats or {})}
            (tmp / "index.json").write_text(json.dumps(manifest, indent=1, default=_json_default))

    @staticmethod
    def exists(path) -> bool:
        """True when ``path`` holds a complete index (its manifest is written last)."""
        return (Path(path) / "index.json").is_file()

    @classmethod
    def open(cls, path, access: str = "mmap") -> "NarrationIndex":
        """Open an index directory (checks the files now, so errors surface here rather than in a worker).
        ``access``: "mmap" or "pread" (see the module docstring)."""
        index = cls(path, access=access)
        index._open()
        return index

    def _open(self) -> Dict[str, Any]:
        if self._arrays is None:
            def load(name):
                file = self.path / name
                if not file.is_file():
                    raise FileNotFoundError(f"{self.path}: narration index file {name} is missing")
                if self.access == "pread":
                    return PreadArray(file)
                # a plain ndarray view of the map: np.memmap's own __getitem__ costs ~5 us per slice
                return np.load(file, mmap_mode="r", allow_pickle=False).view(np.ndarray)

            a = {name: load(f"{name}.npy") for name in
                 ("video_offsets", "starts", "ends", "text", "text_offsets", "video_ids",
                  "video_id_offsets", "video_id_order")}
            m = self._manifest
            v, n = m["num_videos"], m["num_narrations"]
            checks = [(len(a["video_offsets"]), v + 1), (int(a["video_offsets"][-1]), n),
                      (len(a["starts"]), n), (len(a["ends"]), n), (len(a["text_offsets"]), n + 1),
                      (int(a["text_offsets"][-1]), len(a["text"])), (len(a["video_id_order"]), v),
                      (len(a["video_id_offsets"]), v + 1)]
            if any(got != want for got, want in checks):
                raise ValueError(f"{self.path}: narration index files are inconsistent with index.json "
                                 f"(truncated or mixed builds?)")
            a["texts"] = StringColumn(a["text"], a["text_offsets"])
            a["ids"] = VideoIds(a["video_ids"], a["video_id_offsets"], a["video_id_order"])
            a["meta"] = {}
            for name, kind in m["meta_columns"].items():
                base = f"{_META_DIR}/{name}"
                a["meta"][name] = (StringColumn(load(f"{base}.npy"), load(f"{base}.offsets.npy"))
                                   if kind == "str" else load(f"{base}.npy"))
            self._arrays = a
        return self._arrays

    # pickles as its path (+ a subset's selection): workers re-map the files instead of receiving a copy
    def __getstate__(self):
        return {"path": str(self.path), "manifest": self._manifest, "selection": self._selection,
                "access": self.access}

    def __setstate__(self, state):
        self.__init__(state["path"], state["manifest"], state.get("selection"), state.get("access", "mmap"))

    def subset(self, videos: Iterable[int]) -> "NarrationIndex":
        """A view on some videos (numbers of this index), in the given order; shares the mapped files."""
        chosen = np.asarray(list(videos), dtype=np.int64).reshape(-1)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(self)):
            raise IndexError(f"subset: video numbers must be in [0, {len(self)})")
        if len(np.unique(chosen)) != len(chosen):
            raise ValueError("subset: a video number is repeated")
        stored = chosen if self._selection is None else self._selection[chosen]
        return NarrationIndex(self.path, self._manifest, stored, self.access)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        if self._selection is not None:
            return len(self._selection)
        return self._manifest["num_videos"]

    @property
    def num_narrations(self) -> int:
        if self._selection is None:
            return self._manifest["num_narrations"]
        off = self._open()["video_offsets"]
        return int((off[self._selection + 1] - off[self._selection]).sum())

    @property
    def manifest(self) -> dict:
        return dict(self._manifest)

    @property
    def video_ids(self) -> Sequence[str]:
        """Sequence of ids (decoded on access); ``.index(id)`` / ``in`` by binary search, no dict."""
        ids = self._open()["ids"]
        if self._selection is None:
            return ids
        if self._selection_order is None:
            self._selection_order = np.argsort(self._selection, kind="stable")
        return SelectedIds(ids, self._selection, self._selection_order)

    def video_index(self, video_id: str) -> int:
        """Video number of ``video_id``; KeyError naming the id when absent."""
        return self.video_ids.index(video_id)

    def _stored(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"video {i} out of range for an index of {n} videos")
        i = int(i) % n
        return i if self._selection is None else int(self._selection[i])

    def _range(self, i: int) -> Tuple[int, int]:
        stored = self._stored(i)
        off = self._open()["video_offsets"]
        lo, hi = off[stored:stored + 2]
        return int(lo), int(hi)

    def num_narrations_of(self, i: int) -> int:
        lo, hi = self._range(i)
        return hi - lo

    def times(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of video i: read-only float64 views, no text decoded."""
        lo, hi = self._range(i)
        a = self._open()
        return np.asarray(a["starts"][lo:hi]), np.asarray(a["ends"][lo:hi])

    def texts(self, i: int, rows: Optional[Iterable[int]] = None) -> List[str]:
        """Texts of video i (all, or only the given row numbers within the video)."""
        lo, hi = self._range(i)
        texts = self._open()["texts"]
        if rows is None:
            return texts.decode_range(lo, hi)
        rows = [int(r) for r in rows]
        if not rows:
            return []
        first, last = min(rows), max(rows)
        if first < 0 or last >= hi - lo:
            raise IndexError(f"narration rows {rows} out of range for video {i} ({hi - lo} narrations)")
        span = texts.decode_range(lo + first, lo + last + 1)  # bags are consecutive rows: one read
        return [span[r - first] for r in rows]

    def narrations(self, i: int) -> Tuple[np.ndarray, np.ndarray, List[str]]:
        """(starts, ends, texts) of video i."""
        starts, ends = self.times(i)
        return starts, ends, self.texts(i)

    @property
    def meta_columns(self) -> Dict[str, str]:
        return dict(self._manifest["meta_columns"])

    def column(self, name: str):
        """Whole per-video metadata column: the mapped array / lazily decoded strings (a subset view
        returns its rows as a new array / list)."""
        cols = self._open()["meta"]
        if name not in cols:
            raise KeyError(f"no metadata column {name!r} in {self.path} (have: {sorted(cols) or 'none'})")
        col = cols[name]
        if self._selection is None:
            return col
        return [col[int(j)] for j in self._selection] if isinstance(col, StringColumn) else col[self._selection]

    def meta(self, i: int) -> Dict[str, Any]:
        """Per-video metadata of video i as plain Python values."""
        stored = self._stored(i)
        return {name: (col[stored] if isinstance(col, StringColumn) else col[stored].item())
                for name, col in self._open()["meta"].items()}

    def duration(self, i: int) -> float:
        """Duration in seconds of video i, NaN when unknown (no ``duration`` column or missing)."""
        stored = self._stored(i)
        if "duration" not in self._manifest["meta_columns"]:
            return float("nan")
        return float(self._open()["meta"]["duration"][stored])

    def __repr__(self) -> str:
        view = "" if self._selection is None else ", subset"
        return f"NarrationIndex({str(self.path)!r}, videos={len(self)}{view})"


def _write_narrations(videos: Iterable, out: Path) -> Tuple[List[str], int, int, int]:
    """Stream the narration columns to ``out``; returns (video ids, narrations, text bytes, empty videos)."""
    cols = {name: NpyStreamWriter(out / f"{name}.npy", dtype) for name, dtype in
            [("starts", "<f8"), ("ends", "<f8"), ("text", "u1"), ("text_offsets", "<i8")]}
    cols["text_offsets"].append([0])
    video_ids: List[str] = []
    offsets: List[int] = [0]
    text_pos, skipped_empty = 0, 0
    try:
        for video_id, starts, ends, texts in videos:
            if not isinstance(video_id, str) or not video_id:
                raise ValueError(f"video id must be a non-empty str, got {video_id!r}")
            starts = np.asarray(starts, dtype=np.float64).reshape(-1)
            ends = np.asarray(ends, dtype=np.float64).reshape(-1)
            if not len(starts) == len(ends) == len(texts):
                raise ValueError(f"video {video_id!r}: {len(starts)} starts, {len(ends)} ends, {len(texts)} texts")
            if len(starts) == 0:
                skipped_empty += 1
                continue
            if not (np.isfinite(starts).all() and np.isfinite(ends).all()):
                raise ValueError(f"video {video_id!r}: non-finite narration times")
            try:
                joined = "".join(texts)
                blob = joined.encode("utf-8")
            except (TypeError, UnicodeEncodeError) as err:
                raise ValueError(f"video {video_id!r}: every text must be a str encodable as UTF-8 ({err})") from None
            # ASCII-only (the usual case): byte lengths are the str lengths, no per-text encode
            per_text = map(len, texts) if len(blob) == len(joined) else (len(t.encode("utf-8")) for t in texts)
            lengths = np.fromiter(per_text, dtype=np.int64, count=len(texts))
            cols["starts"].append(starts)
            cols["ends"].append(ends)
            cols["text"].append_bytes(blob)
            cols["text_offsets"].append(text_pos + np.cumsum(lengths))
            text_pos += int(lengths.sum())
            video_ids.append(video_id)
            offsets.append(offsets[-1] + len(starts))
    finally:
        for writer in cols.values():
            writer.close()
    np.save(out / "video_offsets.npy", np.asarray(offsets, dtype=np.int64))
    return video_ids, offsets[-1], text_pos, skipped_empty


def _read_manifest(path: Path) -> dict:
    file = path / "index.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a narration index (no index.json); build one with "
                                f"tools/prepare_captions.py")
    manifest = json.loads(file.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(f"{file}: expected format {FORMAT!r} version {VERSION}, got "
                         f"{manifest.get('format')!r} version {manifest.get('version')!r}")
    return manifest


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")
