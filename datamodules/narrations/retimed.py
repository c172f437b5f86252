"""Re-timed narrations on disk: the alignment sidecar (Parquet) and the caption files made from it.

`milnce align` writes, per corpus, alignment.parquet with one row per narration:
    video (str), index (int: the narration's position in the ASR captions as the loaders read them), text,
    asr_start, asr_end, pred_start, pred_end (seconds), score, alignability, margin (float)
and from it caption.json + captions/<video_id>.csv in the HowTo100M layouts with the predicted times (rows in time
order), so `data.captions=<dir>/caption.json` trains on them. `filtered_captions` drops narrations whose
alignability is below a threshold (data.min_alignability). Lives in datamodules (no model needed): pyarrow only.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datamodules.atomic import atomic_path, atomic_write

PathLike = Union[str, Path]
SIDECAR = "alignment.parquet"
SCHEMA = pa.schema([("video", pa.string()), ("index", pa.int64()), ("text", pa.string()),
                    ("asr_start", pa.float64()), ("asr_end", pa.float64()), ("pred_start", pa.float64()),
                    ("pred_end", pa.float64()), ("score", pa.float64()), ("alignability", pa.float64()),
                    ("margin", pa.float64())])


class SidecarError(ValueError):
    """An alignment sidecar that is missing, unreadable or lacks columns; the message names the file."""


def video_table(video: str, texts: List[str], columns: Dict[str, np.ndarray]) -> pa.Table:
    """One video's rows (index = 0..N-1 in ASR order)."""
    n = len(texts)
    data = {"video": [video] * n, "index": np.arange(n, dtype=np.int64), "text": list(texts)}
    data.update({k: np.asarray(columns[k], np.float64) for k in SCHEMA.names[3:]})
    return pa.table(data, schema=SCHEMA)


def write_table(path: PathLike, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp))


def read_sidecar(path: PathLike) -> pa.Table:
    path = Path(path)
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as err:
        raise SidecarError(f"{path}: cannot read the alignment sidecar ({err})") from err
    missing = [c for c in SCHEMA.names if c not in table.column_names]
    if missing:
        raise SidecarError(f"{path}: alignment sidecar lacks columns {missing} (has {table.column_names})")
    return table.select(SCHEMA.names)


def captions_from_sidecar(table: pa.Table, min_alignability: Optional[float] = None) -> Dict[str, dict]:
    """{video: {"start": [...], "end": [...], "text": [...]}} with the predicted times, in time order per video."""
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in SCHEMA.names}
    keep = np.ones(len(table), bool) if min_alignability is None else cols["alignability"] >= min_alignability
    out: Dict[str, dict] = {}
    videos = cols["video"]
    order = np.lexsort((cols["index"], cols["pred_start"], videos))
    for i in order:
        if not keep[i]:
            continue
        entry = out.setdefault(str(videos[i]), {"start": [], "end": [], "text": []})
        entry["start"].append(round(float(cols["pred_start"][i]), 3))
        entry["end"].append(round(float(cols["pred_end"][i]), 3))
        entry["text"].append(str(cols["text"][i]))
    return out


def write_captions(out_dir: PathLike, captions: Dict[str, dict], csv_folder: bool = True) -> Path:
    """caption.json (and captions/<video>.csv) under out_dir; returns the caption.json path."""
    out_dir = Path(out_dir)
    path = out_dir / "caption.json"
    atomic_write(path, json.dumps(captions))
    if csv_folder:
        for vid, c in captions.items():
            with atomic_path(out_dir / "captions" / f"{vid}.csv") as tmp, open(tmp, "w", newline="") as f:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(["start", "end", "text"])
                writer.writerows(zip(c["start"], c["end"], c["text"]))
    return path


def filtered_captions(captions: PathLike, min_alignability: float, sidecar: Optional[PathLike] = None) -> Path:
    """A caption.json beside `captions` keeping only narrations with alignability >= min_alignability, read from
    the sidecar (default: alignment.parquet beside `captions`); written once per threshold, reused after."""
    captions = Path(captions)
    sidecar = Path(sidecar) if sidecar else captions.parent / SIDECAR
    if not sidecar.is_file():
        raise SidecarError(f"{sidecar}: data.min_alignability needs the alignment sidecar `milnce align` writes "
                           f"beside {captions.name}; none found")
    out = captions.parent / f"{captions.stem}.min_alignability_{min_alignability:g}.json"
    if not out.is_file() or out.stat().st_mtime < sidecar.stat().st_mtime:
        atomic_write(out, json.dumps(captions_from_sidecar(read_sidecar(sidecar), min_alignability)))
    return out
