"""Write a HowTo100M-layout corpus (videos, or videos packed by `milnce pack_videos`, with their narrations) into
litdata shards and the manifest (manifest.py).

One sample per video: its file's bytes unchanged (decoded later from memory, datamodules.video.read_clip_bytes),
its narrations, id, duration and sha256. With `segment_seconds` > 0, each video is instead one narrations sample
(no video bytes) followed by its keyframe-aligned stream-copy segments (segments.py), each a sample with its id,
segment number, start in the source, duration and sha256; the manifest's per-video table lists them, so a clip is
read from one segment and never from the whole video. A video that cannot be read, probed or cut is left out and
listed under "failed" in the manifest. Shards are written to a temporary folder next to `out_dir` and renamed into
place, so a killed writer never leaves a half-written set that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import av
import numpy as np
from tqdm.auto import tqdm

from datamodules.atomic import atomic_dir
from datamodules.narrations.index import NarrationIndex
from datamodules.narrations.words import split_words
from datamodules.shards.manifest import FORMAT, MANIFEST, sha256_file
from datamodules.shards.segments import cut_segments
from datamodules.video.decode import DecodeError, probe


def shard_sample(video_bytes: bytes, video_id: str, duration: float, starts, ends, texts,
                 sha256: Optional[str] = None) -> Dict[str, Any]:
    """The sample dict stored in the shards (a uint8 array keeps litdata's per-sample byte-range reads);
    `sha256`: the bytes' digest where the caller has it already."""
    return {"video": np.frombuffer(video_bytes, dtype=np.uint8), "video_id": str(video_id),
            "duration": float(duration), "sha256": sha256 or hashlib.sha256(video_bytes).hexdigest(),
            "narrations": json.dumps({"start": [float(x) for x in starts], "end": [float(x) for x in ends],
                                      "text": [str(t) for t in texts]})}


def segment_sample(video_bytes: bytes, video_id: str, segment: int, start: float, duration: float,
                   starts=(), ends=(), texts=()) -> Dict[str, Any]:
    """A sample of a segmented set: segment -1 is the video's narrations (no bytes), 0.. its segments."""
    sample = shard_sample(video_bytes, video_id, duration, starts, ends, texts)
    sample.update(segment=int(segment), start=float(start))
    return sample


def _segmented_samples(path, video_id, duration, narrations, length: float, overlap: float):
    """The samples of one video and its manifest entry's segment table."""
    samples = [segment_sample(b"", video_id, -1, 0.0, duration, *narrations)]
    table = []
    for number, seg in enumerate(cut_segments(path, length, overlap)):
        samples.append(segment_sample(seg.data, video_id, number, seg.start, seg.duration))
        table.append({"start": seg.start, "duration": seg.duration, "bytes": len(seg.data),
                      "sha256": samples[-1]["sha256"]})
    return samples, table


def write_shards(index: NarrationIndex, paths: Sequence[str], out_dir, chunk_bytes: str = "256MB",
                 progress: bool = True, overwrite: bool = False, segment_seconds: float = 0.0,
                 overlap_seconds: float = 10.0) -> Dict[str, Any]:
    """Videos `paths[i]` with the narrations of `index` video i -> litdata shards + manifest.json in `out_dir`;
    `segment_seconds` > 0: as segments overlapping by `overlap_seconds` instead of whole videos."""
    from litdata.streaming.writer import BinaryWriter  # heavy optional dependency ([shards] extra)

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True / --overwrite to replace it)")
    with atomic_dir(out) as tmp:   # the set appears whole or not at all; an old set is replaced only then
        writer = BinaryWriter(str(tmp), chunk_bytes=chunk_bytes)
        videos, failed, words, written = [], {}, Counter(), 0
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
            digest = hashlib.sha256(data).hexdigest()
            entry = {"video_id": video_id, "duration": float(duration), "bytes": len(data), "sha256": digest,
                     "sample": written}
            if segment_seconds > 0:
                try:
                    samples, entry["segments"] = _segmented_samples(path, video_id, duration, (starts, ends, texts),
                                                                    segment_seconds, overlap_seconds)
                except (ValueError, OSError, av.FFmpegError) as err:
                    failed[str(path)] = f"cannot cut into segments: {err}"
                    continue
            else:
                samples = [shard_sample(data, video_id, duration, starts, ends, texts, sha256=digest)]
            for sample in samples:
                writer[written] = sample
                written += 1
            videos.append(entry)
            for text in texts:
                words.update(split_words(text))
        if not videos:
            raise ValueError(f"no video could be written to shards ({len(failed)} failed: "
                             f"{list(failed.items())[:3]})")
        writer.done()
        writer.merge()
        manifest = _manifest(tmp, videos, words, failed, written)
        if segment_seconds > 0:
            manifest.update(segment_seconds=float(segment_seconds), overlap_seconds=float(overlap_seconds))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _manifest(folder: Path, videos, words: Counter, failed: Dict[str, str], samples: int) -> Dict[str, Any]:
    chunks = json.loads((folder / "index.json").read_text())["chunks"]
    shard_of = [number for number, chunk in enumerate(chunks) for _ in range(chunk["chunk_size"])]
    seconds = [0.0] * len(chunks)
    for v in videos:   # a video's shard: that of its first sample (segments may spill into the next shards)
        v["shard"] = shard_of[v["sample"]]
        seconds[v["shard"]] += v["duration"]
        for number, seg in enumerate(v.get("segments", ())):
            seg["shard"] = shard_of[v["sample"] + 1 + number]
    shards = [{"file": chunk["filename"], "samples": chunk["chunk_size"],
               "bytes": (folder / chunk["filename"]).stat().st_size,
               "sha256": sha256_file(folder / chunk["filename"]), "seconds": round(seconds[number], 3)}
              for number, chunk in enumerate(chunks)]
    return {"format": FORMAT, "engine": f"litdata {version('litdata')}", "samples": samples,
            "seconds": round(sum(v["duration"] for v in videos), 3), "shards": shards, "videos": videos,
            "words": dict(sorted(words.items())), "failed": failed}
