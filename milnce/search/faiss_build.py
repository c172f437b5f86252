"""Build a moment index's faiss.index and rows.parquet from its complete shards, streaming (no shard is loaded whole).

The index type is a faiss factory string (faiss.index_factory): "Flat" (exact, full vectors), "IVF4096,Flat"
(approximate, full vectors), "IVF4096,PQ64" (approximate, 64 bytes a vector: 10^8 windows in ~6.4 GB instead of
200 GB), "HNSW32", … Types that need training are trained on `train_sample` vectors drawn at random (seeded) from
all shards; k-means wants ~39 points per centroid, so a sample smaller than that for the spec is an error naming the
option rather than faiss's warning and a poor index.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from datamodules.atomic import atomic_path, atomic_write
from milnce.search.index import (FAILED, FAISS, ROWS, IndexWriteError, NonFiniteEmbedding, complete_shards,
                                 nonfinite_rows, read_settings, read_shard_rows, shard_embeddings)

PathLike = Union[str, Path]
POINTS_PER_CENTROID = 39      # faiss's own minimum before it warns that clustering is poor
DEFAULT_TRAIN_SAMPLE = 262_144
ADD_CHUNK = 65_536


def spec_from_nlist(nlist: int) -> str:
    return f"IVF{int(nlist)},Flat" if nlist and nlist > 0 else "Flat"


def min_training_points(spec: str) -> int:
    """Fewest training vectors a factory string's quantizers want: 39 per IVF list and per PQ/SQ-free codebook
    centroid (PQm[xb]: 2^b centroids, b = 8 by default)."""
    need = 0
    for nlist in re.findall(r"IVF(\d+)", spec):
        need = max(need, POINTS_PER_CENTROID * int(nlist))
    for bits in re.findall(r"PQ\d+(?:x(\d+))?", spec):
        need = max(need, POINTS_PER_CENTROID * 2 ** int(bits or 8))
    return need


def _row_tables(root: Path, names: List[str]) -> List[pa.Table]:
    tables = []
    for name in names:
        table, emb = read_shard_rows(root, name), shard_embeddings(root, name)
        if table.num_rows != emb.shape[0]:
            raise ValueError(f"{root / 'shards' / name}: {emb.shape[0]} embeddings but {table.num_rows} rows")
        tables.append(table)
    return tables


def _check_finite(root: Path, emb: np.ndarray, table: pa.Table, first_row: int, name: str) -> None:
    bad = nonfinite_rows(emb)
    if bad.size:  # shards written before the check: never let them into faiss
        i = int(bad[0])
        video, start, end = (table.column(k)[i].as_py() for k in ("video", "start", "end"))
        raise NonFiniteEmbedding(f"{root}: {bad.size} non-finite embedding row(s) in shard {name}, the first row "
                                 f"{first_row + i} ({video}, {start}-{end} s); faiss.index not written (re-extract "
                                 "those videos into a new --out)")


def _chunks(root: Path, names: List[str], tables: List[pa.Table]) -> Iterator[np.ndarray]:
    """The shards' embeddings in row order, ADD_CHUNK rows at a time, each checked finite before it is handed out."""
    first_row = 0
    for name, table in zip(names, tables):
        emb = shard_embeddings(root, name)
        for lo in range(0, table.num_rows, ADD_CHUNK):
            chunk = np.ascontiguousarray(emb[lo:lo + ADD_CHUNK], dtype=np.float32)
            _check_finite(root, chunk, table.slice(lo, ADD_CHUNK), first_row + lo, name)
            yield chunk
        first_row += table.num_rows


def _scan_finite(root: Path, names: List[str], tables: List[pa.Table]) -> None:
    for _ in _chunks(root, names, tables):
        pass


def _training_sample(root: Path, names: List[str], sizes: List[int], count: int, seed: int) -> np.ndarray:
    total = int(sum(sizes))
    pick = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts = []
    for s, name in enumerate(names):
        local = pick[(pick >= bounds[s]) & (pick < bounds[s + 1])] - bounds[s]
        if local.size:
            parts.append(np.asarray(shard_embeddings(root, name)[local], dtype=np.float32))
    return np.ascontiguousarray(np.concatenate(parts))


def build_faiss(root: PathLike, nlist: int = 0, nprobe: int = 16, spec: Optional[str] = None,
                train_sample: int = DEFAULT_TRAIN_SAMPLE, seed: int = 0, progress: bool = False) -> Dict[str, Any]:
    """Write faiss.index (inner product) and rows.parquet from every complete shard. spec: a faiss factory string
    (default "Flat", or "IVF{nlist},Flat" when nlist > 0). Returns what was built."""
    import faiss  # optional dependency ([search] extra): imported where an index is built

    root = Path(root)
    spec = spec or spec_from_nlist(nlist)
    names = complete_shards(root)
    tables = _row_tables(root, names)
    sizes = [t.num_rows for t in tables]
    total = int(sum(sizes))
    if total == 0:
        raise ValueError(f"{root}: no embeddings to index (did every video fail? see {root / FAILED})")
    dim = int(shard_embeddings(root, names[0]).shape[1])
    try:
        index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        first = (str(err).strip().splitlines() or [""])[-1][:200]
        raise ValueError(f"faiss spec {spec!r} is not a faiss index_factory string ({first})") from err
    trained_on = 0
    if not index.is_trained:
        need = min_training_points(spec)
        count = min(int(train_sample), total)
        if count < need:
            origin = f" (from nlist={nlist})" if nlist and spec == spec_from_nlist(nlist) else ""
            raise ValueError(f"faiss spec {spec!r}{origin} needs at least {need} training vectors "
                             f"({POINTS_PER_CENTROID} per centroid); train_sample={train_sample} and the index "
                             f"holds {total}: raise train_sample (--train-sample), index more windows, or use a "
                             f"smaller spec (fewer IVF lists, or 'Flat')")
        sample = _training_sample(root, names, sizes, count, seed)
        if nonfinite_rows(sample).size:  # name the first bad row of the shards, as the add loop would
            _scan_finite(root, names, tables)
        index.train(sample)
        trained_on = count
    for chunk in tqdm(_chunks(root, names, tables), desc="faiss add", unit="chunk", disable=not progress):
        index.add(chunk)
    rows = pa.concat_tables(tables)
    rows = rows.add_column(0, "row", pa.array(np.arange(total, dtype=np.int64)))
    try:
        path = root / FAISS
        with atomic_path(path) as tmp:
            faiss.write_index(index, str(tmp))
        path = root / ROWS
        with atomic_path(path) as tmp:
            pq.write_table(rows, tmp)
    except (OSError, RuntimeError) as err:  # faiss reports a failed write as RuntimeError
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise IndexWriteError(f"{path}: cannot write the faiss index ({type(err).__name__}: {first}); the "
                              "previous faiss.index, if any, is intact; rerun once there is space") from err
    settings = read_settings(root)
    kind = spec if spec != "Flat" else "FlatIP"
    settings.update({"faiss": kind, "faiss_spec": spec, "rows": total, "shards": names, "nprobe": int(nprobe),
                     "train_sample": int(train_sample), "trained_on": trained_on, "dim": dim})
    atomic_write(root / "index.json", json.dumps(settings, indent=1))
    return {"faiss": kind, "rows": total, "dim": dim, "trained_on": trained_on}
