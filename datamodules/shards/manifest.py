"""The shard set's manifest (manifest.json, next to litdata's index.json): what a shard set holds and how to check it.

{"format": FORMAT, "engine": "litdata <version>", "samples": N, "seconds": total video seconds,
 "shards": [{"file", "samples", "bytes", "sha256", "seconds"}], "videos": [{"video_id", "duration", "bytes",
 "sha256", "shard", "sample"}] (sample order), "words": {word: count} (the vocabulary of all narrations),
 "failed": {video: why}}

Whole-video sets: sample i of the set is videos[i]. Segmented sets (`milnce shard --segment-seconds`) add
"segment_seconds", "overlap_seconds" and per video "segments": [{"start", "duration", "bytes", "sha256", "shard"}]:
sample videos[i]["sample"] holds the video's narrations, the next ones its segments in order. Each sample also
carries its own sha256, checked on every read (reader.py), so a corrupt sample is found without reading its whole
shard. `verify_shards` checks a local set against the manifest (segmented sets: every segment's sha256 too, read
through reader.py by `milnce shard --verify`).
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

FORMAT = "milnce-shards/1"
MANIFEST = "manifest.json"


class ShardError(ValueError):
    """A shard set that is missing, of another format, or does not match its manifest; names the file."""


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def sha256_file(path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(url: str, storage_options: Optional[dict] = None) -> Dict[str, Any]:
    """manifest.json of a local folder or an object-store prefix (s3://, gs://, … through litdata's downloaders;
    S3-compatible endpoints from AWS_ENDPOINT_URL)."""
    where = f"{str(url).rstrip('/')}/{MANIFEST}"
    if is_remote(url):
        from litdata.streaming.downloader import get_downloader  # heavy optional dependency ([shards] extra)

        buf = io.BytesIO()
        try:
            get_downloader(str(url), "", [], storage_options).download_fileobj(where, buf)
        except Exception as err:  # noqa: BLE001 - any transport error names the object
            raise ShardError(f"{where}: cannot read the shard manifest ({type(err).__name__}: {err})") from err
        text = buf.getvalue().decode("utf-8")
    else:
        path = Path(str(url).removeprefix("file://")) / MANIFEST
        if not path.is_file():
            raise ShardError(f"{path}: no shard manifest (write shards with `milnce shard`)")
        text = path.read_text(encoding="utf-8")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise ShardError(f"{where}: not valid JSON: {err}") from None
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{where}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def verify_shards(folder) -> List[str]:
    """Every shard of a local set against the manifest's size and sha256; the problems found (empty: all good)."""
    folder = Path(folder)
    manifest = read_manifest(str(folder))
    problems = []
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != shard["bytes"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says {shard['bytes']}")
        elif sha256_file(path) != shard["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest's")
    expected = sum(1 + len(v["segments"]) if "segments" in v else 1 for v in manifest["videos"])
    if not sum(s["samples"] for s in manifest["shards"]) == manifest["samples"] == expected:
        problems.append(f"{folder / MANIFEST}: sample counts of shards, videos and total disagree")
    return problems
