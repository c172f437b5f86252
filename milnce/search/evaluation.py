"""Does text search find the right moments? Precision@k of object×action queries against ground-truth segments.

On the toy corpus every video's manifest entry lists its step segments (object, action, start, end). A query names
an object and an action ("the red circle spins"); a returned moment is a hit when at least `min_overlap` of it lies
inside a segment where that object performs that action in that video.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from datamodules.toy.corpus import load_manifest

PathLike = Union[str, Path]


def segments_by_video(manifest: Dict[str, Any]) -> Dict[str, List[Tuple[str, str, float, float]]]:
    """video id (file stem) → [(object, action, start, end)]."""
    return {vid: [(s["object"], s["action"], float(s["start"]), float(s["end"])) for s in v.get("steps", [])]
            for vid, v in manifest["videos"].items()}


def is_hit(moment: Dict[str, Any], segments: Sequence[Tuple[str, str, float, float]], obj: str, action: str,
           min_overlap: float = 0.5) -> bool:
    start, end = float(moment["start"]), float(moment["end"])
    length = max(end - start, 1e-6)
    for o, a, s, e in segments:
        if o == obj and a == action and (min(end, e) - max(start, s)) / length >= min_overlap:
            return True
    return False


def precision_at_k(search, queries: Sequence[Tuple[str, str, str]], segments: Dict[str, List], k: int = 5,
                   min_overlap: float = 0.5) -> Dict[str, Any]:
    """search(text, k) → moments; queries: (text, object, action). Mean precision@k over queries + per query."""
    per_query = []
    for text, obj, action in queries:
        moments = search(text, k)
        hits = [is_hit(m, segments.get(Path(m["video"]).stem, []), obj, action, min_overlap) for m in moments]
        per_query.append({"query": text, "hits": int(sum(hits)), "precision": float(np.mean(hits)) if hits else 0.0})
    mean = float(np.mean([q["precision"] for q in per_query])) if per_query else float("nan")
    return {"precision_at_k": mean, "k": k, "queries": len(per_query), "min_overlap": min_overlap,
            "per_query": per_query}


def toy_queries(manifest: Dict[str, Any], videos: Optional[Sequence[str]] = None) -> List[Tuple[str, str, str]]:
    """Every (object, action) pair that occurs in the given videos (default: all), as the corpus' canonical sentence
    "the <colour> <shape> <3rd-person verb>"."""
    actions = manifest["vocabulary"]["actions"]
    stems = None if videos is None else {Path(v).stem for v in videos}
    pairs = sorted({(s["object"], s["action"]) for vid, v in manifest["videos"].items()
                    if stems is None or vid in stems for s in v.get("steps", [])})
    return [(f"the {obj} {actions[action][0][1]}", obj, action) for obj, action in pairs]


def chance_precision(rows: Sequence[Sequence[Any]], queries: Sequence[Tuple[str, str, str]],
                     segments: Dict[str, List], min_overlap: float = 0.5) -> float:
    """Expected precision of k moments drawn at random from the index rows [video, start, end]."""
    if not queries or not rows:
        return float("nan")
    per_query = []
    for _, obj, action in queries:
        per_query.append(np.mean([is_hit({"start": r[1], "end": r[2]}, segments.get(Path(r[0]).stem, []), obj,
                                         action, min_overlap) for r in rows]))
    return float(np.mean(per_query))


def evaluate_toy_search(searcher, toy_root: PathLike, k: int = 5, min_overlap: float = 0.5,
                        distinct: bool = False) -> Dict[str, Any]:
    """Precision@k of every object×action query occurring in the indexed toy videos, with its chance level and
    the fraction of queries with at least one hit in the top k."""

    manifest = load_manifest(toy_root)
    segments = segments_by_video(manifest)
    queries = toy_queries(manifest, searcher.index.videos)
    result = precision_at_k(lambda text, n: searcher.search(text, n, distinct=distinct), queries, segments, k,
                            min_overlap)
    result["distinct"] = distinct
    result["chance_precision"] = chance_precision(searcher.index.rows, queries, segments, min_overlap)
    result["queries_with_hit"] = float(np.mean([q["hits"] > 0 for q in result["per_query"]])) \
        if result["per_query"] else float("nan")
    return result
