"""Write a HowTo100M-layout corpus (videos, or videos packed by `milnce pack_videos`, with their narrations) into
litdata shards and the manifest (manifest.py).

One sample per video: its file's bytes unchanged (decoded later from memory, datamodules.video.read_clip_bytes),
its narrations, id, duration and sha256. A video that cannot be read or probed is left out and listed under
"failed" in the manifest. Shards are written to a temporary folder next to `out_dir` and renamed into place, so a
killed writer never leaves a half-written set that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from datamodules.atomic import atomic_write
from datamodules.narrations.index import NarrationIndex
from datamodules.narrations.words import split_words
from datamodules.shards.manifest import FORMAT, MANIFEST, sha256_file
from datamodules.video.decode import DecodeError, probe


def shard_sample(video_bytes: bytes, video_id: str, duration: float, starts, ends, texts) -> Dict[str, Any]:
    """The sample dict stored in the shards (a uint8 array keeps litdata's per-sample byte-range reads)."""
    return {"video": np.frombuffer(video_bytes, dtype=np.uint8), "video_id": str(video_id),
            "duration": float(duration), "sha256": hashlib.sha256(video_bytes).hexdigest(),
            "narrations": json.dumps({"start": [float(x) for x in starts], "end": [float(x) for x in ends],
                                      "text": [str(t) for t in texts]})}


def write_shards(index: NarrationIndex, paths: Sequence[str], out_dir, chunk_bytes: str = "256MB",
                 progress: bool = True, overwrite: bool = False) -> Dict[str, Any]:
    """Videos `paths[i]` with the narrations of `index` video i -> litdata shards + manifest.json in `out_dir`."""
    from litdata.streaming.writer import BinaryWriter  # heavy optional dependency ([shards] extra)

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite to replace it)")
    tmp = out.with_name(f".{out.name}.writing-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = BinaryWriter(str(tmp), chunk_bytes=chunk_bytes)
    videos, failed, words = [], {}, Counter()
    for i, path in enumerate(tqdm(paths, desc=f"writing shards to {out}", unit="video", disable=not progress)):
        video_id = index.video_ids[i]
        try:
            duration = probe(path).duration
            data = Path(path).read_bytes()
        except (DecodeError, OSError) as err:
            failed[str(path)] = str(err)
            continue
        if not (duration and math.isfinite(duration)):
            failed[str(path)] = f"no duration ({duration!r})"
            continue
        starts, ends, texts = index.narrations(i)
        sample = shard_sample(data, video_id, duration, starts, ends, texts)
        writer[len(videos)] = sample
        videos.append({"video_id": video_id, "duration": float(duration), "bytes": len(data),
                       "sha256": sample["sha256"]})
        for text in texts:
            words.update(split_words(text))
    if not videos:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"no video could be written to shards ({len(failed)} failed: {list(failed.items())[:3]})")
    writer.done()
    writer.merge()
    manifest = _manifest(tmp, videos, words, failed)
    atomic_write(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return manifest


def _manifest(folder: Path, videos, words: Counter, failed: Dict[str, str]) -> Dict[str, Any]:
    chunks = json.loads((folder / "index.json").read_text())["chunks"]
    shards, first = [], 0
    for number, chunk in enumerate(chunks):
        members = videos[first:first + chunk["chunk_size"]]
        for v in members:
            v["shard"] = number
        shards.append({"file": chunk["filename"], "samples": chunk["chunk_size"],
                       "bytes": (folder / chunk["filename"]).stat().st_size,
                       "sha256": sha256_file(folder / chunk["filename"]),
                       "seconds": round(sum(v["duration"] for v in members), 3)})
        first += chunk["chunk_size"]
    return {"format": FORMAT, "engine": f"litdata {version('litdata')}", "samples": len(videos),
            "seconds": round(sum(v["duration"] for v in videos), 3), "shards": shards, "videos": videos,
            "words": dict(sorted(words.items())), "failed": failed}
