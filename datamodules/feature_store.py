"""Pre-extracted per-video features: file layout, loading, clip pooling, and HowTo100M's caption merging.

Layout: one directory per feature type, one `<video_id>.npy` per video holding T×D rows at `rate` rows per second
(HowTo100M: 2D ResNet-152 at 1 fps, 3D ResNeXt-101 at 1.5 fps). The rate comes from the config or from a JSON
sidecar `<video_id>.json` (or `<video_id>.npy.json`) with {"rate": r}, as tools/extract.py writes; when both exist
they must agree.

Pure functions restate howto100m/youtube_dataloader.py (PROTOCOLS.md Part A §4.3):

* ``merge_captions``: grow caption `index` by whole neighbouring captions until end − start ≥ min_time, toward the
  side giving the shorter span, left on ties (with min_time == 0 the original flips the comparison and goes
  left when the left span is ≥ the right one); words are
  concatenated in merge order (the caption itself, then each merged neighbour appended, left ones included).
* ``pool_clip``: per feature type rows [int(s·rate), int(e·rate) + 1), max over rows, L2-normalised; the types
  concatenated in order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np


class FeatureError(RuntimeError):
    """A feature file that is missing, unreadable or malformed, or a clip with no feature rows; names the file."""


@dataclass(frozen=True)
class FeatureSource:
    dir: str
    rate: Optional[float] = None     # rows per second; None = read from each video's sidecar


def merge_captions(starts: Sequence[float], ends: Sequence[float], index: int,
                   min_time: float) -> Tuple[int, int, List[int]]:
    """(first, last, rows in merge order) of HowTo100M's grown caption `index`."""
    n = len(starts)
    if not 0 <= index < n:
        raise IndexError(f"caption {index} out of range for {n} captions")
    first = last = index
    order = [index]
    while ends[last] - starts[first] < min_time:
        if first > 0 and last < n - 1:
            right_span = ends[last + 1] - starts[first]
            left_span = ends[last] - starts[first - 1]
            go_left = left_span <= right_span if min_time > 0 else left_span >= right_span
        elif first > 0:
            go_left = True
        elif last < n - 1:
            go_left = False
        else:
            break
        if go_left:
            first -= 1
            order.append(first)
        else:
            last += 1
            order.append(last)
    return first, last, order


def row_range(start: float, end: float, rate: float) -> Tuple[int, int]:
    """Rows [int(start·rate), int(end·rate) + 1) covering [start, end] seconds."""
    return int(start * rate), int(end * rate) + 1


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), eps)     # as torch.nn.functional.normalize


def pool_clip(arrays: Sequence[np.ndarray], rates: Sequence[float], start: float, end: Optional[float],
              names: Sequence[str] = ()) -> np.ndarray:
    """Max-pool each T_i×D_i array over the clip's rows, L2-normalise each, concatenate → float32 ΣD_i.

    end=None pools every row (a whole-video item). A clip with no row in some array raises FeatureError.
    """
    parts = []
    for i, (x, rate) in enumerate(zip(arrays, rates)):
        lo, hi = (0, len(x)) if end is None else row_range(start, end, rate)
        rows = x[max(lo, 0):hi]
        if len(rows) == 0:
            name = names[i] if i < len(names) else f"feature {i}"
            raise FeatureError(f"{name}: clip [{start}, {end}] s maps to rows [{lo}, {hi}) at {rate}/s but the "
                               f"file has {len(x)} rows")
        parts.append(l2_normalize(rows.max(axis=0).astype(np.float32)))
    return np.concatenate(parts).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------- files
def feature_path(source: FeatureSource, video_id: str) -> Path:
    return Path(source.dir) / f"{video_id}.npy"


def _sidecar_rate(path: Path) -> Optional[float]:
    for side in (path.with_suffix(".json"), Path(str(path) + ".json")):
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
                return float(meta["rate"])
            except (ValueError, KeyError, TypeError) as err:
                raise FeatureError(f"{side}: sidecar must be a JSON object with a numeric 'rate' "
                                   f"({type(err).__name__}: {err})") from None
    return None


def load_features(source: FeatureSource, video_id: str) -> Tuple[np.ndarray, float]:
    """(T×D float32 rows, rate) of one video; FeatureError naming the file when it cannot be used."""
    path = feature_path(source, video_id)
    if not path.is_file():
        raise FeatureError(f"{path}: feature file not found")
    side = _sidecar_rate(path)
    rate = source.rate if source.rate is not None else side
    if rate is None:
        raise FeatureError(f"{path}: no rate configured for {source.dir} and no sidecar {path.with_suffix('.json')}")
    if side is not None and source.rate is not None and abs(side - source.rate) > 1e-6:
        raise FeatureError(f"{path}: sidecar rate {side}/s disagrees with the configured {source.rate}/s")
    if not rate > 0:
        raise FeatureError(f"{path}: rate must be > 0, got {rate}")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - numpy raises several types for truncated / foreign files
        raise FeatureError(f"{path}: unreadable .npy ({type(err).__name__}: {err})") from None
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise FeatureError(f"{path}: expected a non-empty T×D array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise FeatureError(f"{path}: expected numeric rows, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise FeatureError(f"{path}: contains NaN or infinite values")
    return x, float(rate)


def load_video_features(sources: Sequence[FeatureSource], video_id: str) -> Tuple[List[np.ndarray], List[float]]:
    arrays, rates = [], []
    for s in sources:
        x, r = load_features(s, video_id)
        arrays.append(x)
        rates.append(r)
    return arrays, rates


def feature_dim(sources: Sequence[FeatureSource], video_id: str) -> int:
    """The concatenated feature size, read off one video's files."""
    return sum(x.shape[1] for x in load_video_features(sources, video_id)[0])
