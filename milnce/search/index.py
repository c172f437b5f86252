"""A moment index on disk: sharded window embeddings with (video, start, end) rows, plus a faiss inner-product index.

Layout of an index directory:
    index.json                  settings (checkpoint, preprocessing, window, stride, dim, normalize) + shard list
    shards/shard_00000.npy      N×D float32 embeddings
    shards/shard_00000.json     N rows [video, start, end] (video = the path as given to extraction)
    done.txt                    videos whose rows are in a written shard (one per line; what resuming skips)
    failed.tsv                  videos that could not be read, or whose embeddings are not finite: path<TAB>reason
    faiss.index                 built from all shards by `build_faiss` (IndexFlatIP: exact; IVF optional)

Scores are inner products of the stored vectors with the query: the training score (dot product) by default, the
cosine when the index was written with normalize=True (vectors L2-normalised on write, queries on search).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from datamodules.atomic import atomic_path, atomic_write

PathLike = Union[str, Path]
SETTINGS = "index.json"
DONE = "done.txt"
FAILED = "failed.tsv"
FAISS = "faiss.index"


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


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class IndexWriter:
    """Appends whole videos to shards; a video counts as done only once its shard is on disk (crash-safe resume)."""

    def __init__(self, root: PathLike, settings: Dict[str, Any], shard_rows: int = 50_000):
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
        self.shard_rows = int(shard_rows)
        self.done = set(read_lines(self.root / DONE))
        self._emb: List[np.ndarray] = []
        self._rows: List[List[Any]] = []
        self._videos: List[str] = []

    def is_done(self, video: str) -> bool:
        return video in self.done

    def add(self, video: str, starts: Sequence[float], ends: Sequence[float], embeddings: np.ndarray) -> None:
        emb = np.asarray(embeddings, dtype=np.float32)
        check_finite_rows(video, starts, ends, emb)
        if self.settings.get("normalize"):
            emb = l2_normalize(emb)
        if "dim" in self.settings and emb.shape[1] != self.settings["dim"]:
            raise ValueError(f"{video}: embedding dim {emb.shape[1]} != index dim {self.settings['dim']}")
        self.settings["dim"] = int(emb.shape[1])
        self._emb.append(emb)
        self._rows += [[video, round(float(s), 3), round(float(e), 3)] for s, e in zip(starts, ends)]
        self._videos.append(video)
        if len(self._rows) >= self.shard_rows:
            self.flush()

    def add_failed(self, video: str, reason: str) -> None:
        with open(self.root / FAILED, "a") as f:
            f.write(f"{video}\t{' '.join(str(reason).split())}\n")

    def flush(self) -> None:
        if not self._videos:
            return
        name = f"shard_{len(self.settings['shards']):05d}"
        shard_dir = self.root / "shards"
        path = shard_dir / f"{name}.npy"
        try:
            with atomic_path(path) as tmp:
                np.save(tmp, np.concatenate(self._emb) if self._emb else np.zeros((0, self.settings["dim"]),
                                                                                    np.float32))
            path = shard_dir / f"{name}.json"
            atomic_write(path, json.dumps(self._rows))
            path = self.root / SETTINGS
            self.write_settings({**self.settings, "shards": [*self.settings["shards"], name]})
        except OSError as err:  # disk full, file-size limit, read-only: index.json still lists the complete shards
            raise IndexWriteError(f"{path}: cannot write the moment index ({type(err).__name__}: {err}); it keeps "
                                  f"its {len(self.settings['shards'])} complete shard(s); rerun the same command "
                                  "once there is space: it resumes with the videos not yet done") from err
        self.settings["shards"].append(name)
        with open(self.root / DONE, "a") as f:  # after the shard: a crash before this line redoes these videos
            f.writelines(v + "\n" for v in self._videos)
        self.done.update(self._videos)
        self._emb, self._rows, self._videos = [], [], []

    def write_settings(self, settings: Optional[Dict[str, Any]] = None) -> None:
        atomic_write(self.root / SETTINGS, json.dumps(self.settings if settings is None else settings, indent=1))

    def close(self) -> None:
        self.flush()
        self.write_settings()


def read_lines(path: Path) -> List[str]:
    return [line for line in path.read_text().splitlines() if line] if path.is_file() else []


def read_failed(root: PathLike) -> List[Tuple[str, str]]:
    return [tuple(line.split("\t", 1)) for line in read_lines(Path(root) / FAILED)]  # type: ignore[misc]


def load_shards(root: PathLike) -> Tuple[np.ndarray, List[List[Any]]]:
    """All embeddings (N×D) and rows [video, start, end] of an index directory, in shard order."""
    root = Path(root)
    settings = read_settings(root)
    embs, rows = [], []
    for name in settings.get("shards", []):
        emb = np.load(root / "shards" / f"{name}.npy")
        meta = json.loads((root / "shards" / f"{name}.json").read_text())
        if len(meta) != emb.shape[0]:
            raise ValueError(f"{root / 'shards' / name}: {emb.shape[0]} embeddings but {len(meta)} rows")
        embs.append(emb)
        rows += meta
    dim = int(settings.get("dim", 0))
    return (np.concatenate(embs) if embs else np.zeros((0, dim), np.float32)), rows


def read_settings(root: PathLike) -> Dict[str, Any]:
    path = Path(root) / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a moment index (no {SETTINGS}; build one with tools/extract.py)")
    return json.loads(path.read_text())


def build_faiss(root: PathLike, nlist: int = 0, nprobe: int = 16) -> Dict[str, Any]:
    """Write faiss.index from the shards: IndexFlatIP (exact) or, with nlist > 0, IndexIVFFlat (approximate, for
    millions of windows; trained on the stored vectors). Returns what was built."""
    import faiss

    root = Path(root)
    emb, rows = load_shards(root)
    if emb.shape[0] == 0:
        raise ValueError(f"{root}: no embeddings to index (did every video fail? see {root / FAILED})")
    bad = nonfinite_rows(emb)
    if bad.size:  # shards written before the check: never let them into faiss
        video, start, end = rows[int(bad[0])]
        raise NonFiniteEmbedding(f"{root}: {bad.size} non-finite embedding row(s) in the shards, the first row "
                                 f"{int(bad[0])} ({video}, {start}-{end} s); faiss.index not written (re-extract "
                                 "those videos into a new --out)")
    dim = emb.shape[1]
    if nlist > 0:
        if emb.shape[0] < 39 * nlist:
            raise ValueError(f"IVF with nlist={nlist} needs at least {39 * nlist} vectors, the index has "
                             f"{emb.shape[0]}: use a smaller nlist or the exact index (nlist=0)")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
        index.nprobe = int(nprobe)
        kind = f"IVFFlat(nlist={nlist}, nprobe={nprobe})"
    else:
        index = faiss.IndexFlatIP(dim)
        kind = "FlatIP"
    index.add(emb)
    try:
        with atomic_path(root / FAISS) as tmp:
            faiss.write_index(index, str(tmp))
    except (OSError, RuntimeError) as err:  # faiss reports a failed write as RuntimeError
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise IndexWriteError(f"{root / FAISS}: cannot write the faiss index ({type(err).__name__}: {first}); the "
                              "previous faiss.index, if any, is intact; rerun once there is space") from err
    settings = read_settings(root)
    settings.update({"faiss": kind, "rows": int(emb.shape[0])})
    atomic_write(root / SETTINGS, json.dumps(settings, indent=1))
    return {"faiss": kind, "rows": int(emb.shape[0]), "dim": int(dim)}


class MomentIndex:
    """Read side: `search(query N×D or D, k) -> per query a list of {video, start, end, score}`."""

    def __init__(self, root: PathLike):
        import faiss

        self.root = Path(root)
        self.settings = read_settings(self.root)
        path = self.root / FAISS
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no faiss index; run tools/extract.py (it builds one at the end)")
        self.index = faiss.read_index(str(path))
        _, self.rows = load_shards(self.root)
        if self.index.ntotal != len(self.rows):
            raise ValueError(f"{path}: {self.index.ntotal} vectors but the shards hold {len(self.rows)} rows; "
                             f"rebuild with tools/extract.py --rebuild-index")
        if hasattr(self.index, "nprobe"):
            self.index.nprobe = int(self.settings.get("nprobe", 16))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def videos(self) -> List[str]:
        return sorted({r[0] for r in self.rows})

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
