"""A moment index on disk: sharded window embeddings with (video, start, end) rows, plus a faiss inner-product index.

Layout of an index directory:
    index.json                  settings (checkpoint, preprocessing, window, stride, dim, normalize, faiss spec)
    shards/<name>.npy           N×D float32 embeddings (written first)
    shards/<name>.parquet       the N rows: video, start, end (written last: a shard without it is incomplete)
    failed.tsv                  videos that could not be read, or whose embeddings are not finite: path<TAB>reason
    rows.parquet                row, video, start, end of every indexed window, in faiss order (milnce.search.faiss_build)
    faiss.index                 built from the complete shards by `build_faiss` (any faiss factory string)

A video is done once a complete shard holds its rows: resuming reads the shards' video column, so there is no
separate log to get out of step with them. Writers of several ranks name their shards by rank (shard_r1_00000 …).
Indexes written before Parquet (shards/<name>.json rows, done.txt) still load.

Scores are inner products of the stored vectors with the query: the training score (dot product) by default, the
cosine when the index was written with normalize=True (vectors L2-normalised on write, queries on search).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from milnce.inference import l2_normalize
from datamodules.atomic import atomic_path, atomic_write

PathLike = Union[str, Path]
SETTINGS = "index.json"
DONE = "done.txt"          # legacy: read on resume, no longer written
FAILED = "failed.tsv"
FAISS = "faiss.index"
ROWS = "rows.parquet"
ROW_SCHEMA = pa.schema([("video", pa.string()), ("start", pa.float64()), ("end", pa.float64())])


class IndexWriteError(OSError):
    """A shard, the settings or faiss.index could not be written; names the file. What was complete stays so."""


class NonFiniteEmbedding(ValueError):
    """Embeddings with NaN or ±inf: refused, so no search ever meets them (a NaN row poisons every query)."""


def nonfinite_rows(emb: np.ndarray) -> np.ndarray:
    """Indices of the rows of N×D `emb` holding a NaN or ±inf."""
    emb = np.asarray(emb)
    return np.flatnonzero(~np.isfinite(emb.reshape(emb.shape[0], -1)).all(axis=1)) if emb.size else np.zeros(0, int)


def check_finite_rows(video: str, starts: Sequence[float], ends: Sequence[float], emb: np.ndarray) -> None:
    """Raise NonFiniteEmbedding naming the video and its first non-finite windows."""
    bad = nonfinite_rows(emb)
    if bad.size:
        shown = ", ".join(f"row {i} ({float(starts[i]):.2f}-{float(ends[i]):.2f} s)" for i in bad[:5])
        raise NonFiniteEmbedding(f"{video}: non-finite embedding in {bad.size} of {len(emb)} windows: {shown}"
                                 f"{' …' if bad.size > 5 else ''}; the video is refused")


# ----------------------------------------------------------------------------------------------- shards
def complete_shards(root: PathLike) -> List[str]:
    """Names of the shards whose embeddings and rows are both on disk, sorted."""
    folder = Path(root) / "shards"
    if not folder.is_dir():
        return []
    names = {p.stem for p in folder.iterdir() if p.suffix in (".parquet", ".json") and not p.name.startswith(".")}
    return sorted(n for n in names if (folder / f"{n}.npy").is_file())


def read_shard_rows(root: PathLike, name: str, columns: Sequence[str] = ROW_SCHEMA.names) -> pa.Table:
    """The rows (video, start, end) of one shard, Parquet or the legacy JSON list of [video, start, end]."""
    folder = Path(root) / "shards"
    if (folder / f"{name}.parquet").is_file():
        return pq.read_table(folder / f"{name}.parquet", columns=list(columns), memory_map=True)
    rows = json.loads((folder / f"{name}.json").read_text())
    return pa.table({"video": [r[0] for r in rows], "start": [float(r[1]) for r in rows],
                     "end": [float(r[2]) for r in rows]}, schema=ROW_SCHEMA)


def shard_embeddings(root: PathLike, name: str) -> np.ndarray:
    """The N×D embeddings of one shard, memory-mapped (nothing is read until used)."""
    return np.load(Path(root) / "shards" / f"{name}.npy", mmap_mode="r")


def indexed_shards(root: PathLike, settings: Optional[Dict[str, Any]] = None) -> List[str]:
    settings = read_settings(root) if settings is None else settings
    return list(settings["shards"]) if settings.get("shards") else complete_shards(root)


class IndexWriter:
    """Appends whole videos to shards; a video counts as done only once its shard is on disk (crash-safe resume).

    prefix: shard names (one per rank when several processes write into one index). owns_settings: whether this
    writer writes index.json (one writer per index, rank 0)."""

    def __init__(self, root: PathLike, settings: Dict[str, Any], shard_rows: int = 50_000, prefix: str = "shard",
                 owns_settings: bool = True):
        self.root = Path(root)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        path = self.root / SETTINGS
        if path.is_file():
            old = json.loads(path.read_text())
            for key in ("checkpoint", "preprocess", "window", "stride", "normalize", "base_dir"):
                if key in settings and key in old and old[key] != settings[key]:
                    raise ValueError(f"{path}: existing index has {key}={old[key]!r}, this run {settings[key]!r}; "
                                     f"use another --out or the same settings")
            self.settings = {**old, **{k: v for k, v in settings.items() if k not in old}}
        else:
            self.settings = {**settings, "shards": []}
        self.shard_rows, self.prefix, self.owns_settings = int(shard_rows), prefix, owns_settings
        self._emb: List[np.ndarray] = []
        self._rows: List[Tuple[str, float, float]] = []
        self._videos: List[str] = []
        if owns_settings and not path.is_file():
            self.write_settings()

    def add(self, video: str, starts: Sequence[float], ends: Sequence[float], embeddings: np.ndarray) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        check_finite_rows(video, starts, ends, emb)
        if self.settings.get("normalize"):
            emb = l2_normalize(emb)
        if "dim" in self.settings and emb.shape[1] != self.settings["dim"]:
            raise ValueError(f"{video}: embedding dim {emb.shape[1]} != index dim {self.settings['dim']}")
        self.settings["dim"] = int(emb.shape[1])
        self._emb.append(emb)
        self._rows += [(video, round(float(s), 3), round(float(e), 3)) for s, e in zip(starts, ends)]
        self._videos.append(video)
        if len(self._rows) >= self.shard_rows:
            self.flush()

    def add_failed(self, video: str, reason: str) -> None:
        """One line per call, flushed and fsynced: a kill leaves whole lines (the reader skips a torn last one)."""
        with open(self.root / FAILED, "a") as f:
            f.write(f"{video}\t{' '.join(str(reason).split())}\n")
            f.flush()
            os.fsync(f.fileno())

    def _next_name(self) -> str:
        taken = set(complete_shards(self.root))
        n = sum(1 for s in taken if s.rsplit("_", 1)[0] == self.prefix)
        while f"{self.prefix}_{n:05d}" in taken:
            n += 1
        return f"{self.prefix}_{n:05d}"

    def flush(self) -> None:
        if not self._videos:
            return
        name = self._next_name()
        shard_dir = self.root / "shards"
        path = shard_dir / f"{name}.npy"
        try:
            with atomic_path(path) as tmp:
                np.save(tmp, np.concatenate(self._emb))
            path = shard_dir / f"{name}.parquet"   # last: its presence makes the shard complete
            table = pa.table({k: [r[i] for r in self._rows] for i, k in enumerate(ROW_SCHEMA.names)},
                             schema=ROW_SCHEMA)
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
            if self.owns_settings:
                path = self.root / SETTINGS
                self.write_settings({**self.settings, "shards": [*self.settings["shards"], name]})
        except OSError as err:  # disk full, file-size limit, read-only: what was complete stays complete
            raise IndexWriteError(f"{path}: cannot write the moment index ({type(err).__name__}: {err}); it keeps "
                                  f"its complete shard(s); rerun the same command once there is space: it resumes "
                                  "with the videos not yet done") from err
        self.settings["shards"].append(name)
        self._emb, self._rows, self._videos = [], [], []

    def write_settings(self, settings: Optional[Dict[str, Any]] = None) -> None:
        atomic_write(self.root / SETTINGS, json.dumps(self.settings if settings is None else settings, indent=1))

    def close(self) -> None:
        self.flush()
        if self.owns_settings:
            self.write_settings()


def read_lines(path: Path) -> List[str]:
    return [line for line in path.read_text().splitlines() if line] if path.is_file() else []


def read_failed(root: PathLike) -> List[Tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in read_lines(Path(root) / FAILED)  # type: ignore[misc]
            if "\t" in line]


def indexed_videos_and_rows(root: PathLike) -> Tuple[set, int]:
    """The videos done (rows in a complete shard, plus a legacy done.txt) and the number of rows in complete shards;
    each shard's video column only is read."""
    done, rows = set(read_lines(Path(root) / DONE)), 0
    for name in complete_shards(root):
        videos = read_shard_rows(root, name, columns=["video"]).column("video")
        done.update(videos.unique().to_pylist())
        rows += len(videos)
    return done, rows


def load_shards(root: PathLike) -> Tuple[np.ndarray, List[List[Any]]]:
    """All embeddings (N×D) and rows [video, start, end] of an index directory, in shard order (small indexes and
    tests; the faiss build and MomentIndex stream instead)."""
    root = Path(root)
    settings = read_settings(root)
    embs, rows = [], []
    for name in indexed_shards(root, settings):
        emb = np.load(root / "shards" / f"{name}.npy")
        table = read_shard_rows(root, name)
        if table.num_rows != emb.shape[0]:
            raise ValueError(f"{root / 'shards' / name}: {emb.shape[0]} embeddings but {table.num_rows} rows")
        embs.append(emb)
        rows += [list(r) for r in zip(*(table.column(k).to_pylist() for k in ROW_SCHEMA.names))]
    dim = int(settings.get("dim", 0))
    return (np.concatenate(embs) if embs else np.zeros((0, dim), np.float32)), rows


def read_settings(root: PathLike) -> Dict[str, Any]:
    path = Path(root) / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a moment index (no {SETTINGS}; build one with tools/extract.py)")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------- read side
class MomentRows:
    """rows[i] -> (video, start, end) over a row table, without a Python object per row: the video column stays
    dictionary-encoded (one int32 code per row, one string per video), start and end are float64 arrays."""

    def __init__(self, table: pa.Table):
        table = table.unify_dictionaries().combine_chunks() if table.num_rows else table
        video = table.column("video")
        if not pa.types.is_dictionary(video.type):
            video = pa.chunked_array([video.combine_chunks().dictionary_encode()]) if table.num_rows else video
        array = video.chunk(0) if video.num_chunks else pa.array([], pa.dictionary(pa.int32(), pa.string()))
        self._codes = array.indices.to_numpy(zero_copy_only=False)
        self._names: List[str] = array.dictionary.to_pylist()
        self._start = table.column("start").to_numpy()
        self._end = table.column("end").to_numpy()

    def __len__(self) -> int:
        return len(self._codes)

    def __getitem__(self, i: int) -> Tuple[str, float, float]:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range (the index has {len(self)} rows)")
        return self._names[self._codes[i]], float(self._start[i]), float(self._end[i])

    def __iter__(self) -> Iterator[Tuple[str, float, float]]:
        return (self[i] for i in range(len(self)))

    @functools.cached_property
    def videos(self) -> List[str]:
        return sorted(self._names[c] for c in np.unique(self._codes))


def read_rows(root: PathLike, settings: Optional[Dict[str, Any]] = None) -> MomentRows:
    """The index's rows from rows.parquet (memory-mapped, three columns); a legacy index without it is read from its
    shards' JSON rows, with a message saying how to convert it."""
    root = Path(root)
    if (root / ROWS).is_file():
        return MomentRows(pq.read_table(root / ROWS, columns=ROW_SCHEMA.names, memory_map=True,
                                        read_dictionary=["video"]))
    names = indexed_shards(root, settings)
    print(f"[milnce] {root}: no {ROWS} (an index written before Parquet rows): reading the shards' rows; "
          f"`milnce extract --rebuild-index --out {root}` converts it", file=sys.stderr)
    tables = [read_shard_rows(root, n) for n in names]
    return MomentRows(pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table())


class MomentIndex:
    """Read side: `search(query N×D or D, k) -> per query a list of {video, start, end, score}`; `rows[i]` ->
    (video, start, end). Loads faiss.index and the row columns, never the shards' embeddings."""

    def __init__(self, root: PathLike):
        import faiss  # optional dependency ([search] extra): imported where an index is opened

        self.root = Path(root)
        self.settings = read_settings(self.root)
        path = self.root / FAISS
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no faiss index; run tools/extract.py (it builds one at the end)")
        self.index = faiss.read_index(str(path))
        self.rows = read_rows(self.root, self.settings)
        if self.index.ntotal != len(self.rows):
            raise ValueError(f"{path}: {self.index.ntotal} vectors but {len(self.rows)} rows; rebuild with "
                             f"`milnce extract --rebuild-index --out {self.root}`")
        try:
            faiss.extract_index_ivf(self.index).nprobe = int(self.settings.get("nprobe", 16))
        except RuntimeError:  # not an IVF index: nothing to probe
            pass

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def videos(self) -> List[str]:
        return self.rows.videos

    def search(self, query: np.ndarray, k: int = 10, distinct: bool = False) -> List[List[Dict[str, Any]]]:
        """Top-k moments per query (one list, or a list of lists for a 2-D query).

        distinct: skip a moment that overlaps an already returned, higher-scoring moment of the same video
        (sliding windows overlap, so the raw top k often shows one event several times)."""
        q = np.asarray(query, dtype=np.float32)
        single = q.ndim == 1
        q = q.reshape(1, -1) if single else q
        if q.shape[1] != self.index.d:
            raise ValueError(f"query dim {q.shape[1]} != index dim {self.index.d}")
        if self.settings.get("normalize"):
            q = l2_normalize(q)
        k = max(1, min(int(k), len(self.rows)))
        fetch = min(len(self.rows), k * 20) if distinct else k
        scores, ids = self.index.search(np.ascontiguousarray(q), fetch)
        out = []
        for srow, irow in zip(scores, ids):
            kept: List[Dict[str, Any]] = []
            for s, i in zip(srow, irow):
                if i < 0:
                    continue
                video, start, end = self.rows[i]
                if distinct and any(m["video"] == video and min(end, m["end"]) > max(start, m["start"])
                                    for m in kept):
                    continue
                kept.append({"video": video, "start": start, "end": end, "score": float(s), "row": int(i)})
                if len(kept) == k:
                    break
            out.append(kept)
        return out[0] if single else out
