"""Re-encode videos once for fast random access: short side, constant frame rate, short keyframe interval.

A random clip costs decoding from the keyframe before it to its end. HowTo100M's files keep x264's default keyframe
interval (up to 250 frames, 8.3 s at 30 fps), so most of a 3.2 s clip's cost is the pre-roll; a 1 s interval cuts
it to about half a second. Output: H.264 (libx264, yuv420p, even sizes), rotation applied, audio dropped (the
preprocessed HowTo100M has none). Frames are resampled with datamodules.video.decode's timing rule (output frame j shows
the source frame on screen at j/fps).
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import av
import numpy as np
from tqdm.auto import tqdm

from datamodules.atomic import atomic_path
from datamodules.video.decode import DecodeError, open_reader, short_side_shape

_EPS = 1e-4


def _even(n: int) -> int:
    return max(2, int(round(n / 2.0)) * 2)


def iter_frames(path, fps: float, size: Optional[int] = None, threads: int = 1) -> Iterator[av.VideoFrame]:
    """Frames of the whole video at `fps` (the one on screen at j/fps), rotated upright, scaled so the short side
    is `size` (even dimensions), as yuv420p VideoFrames; streams, so memory does not grow with the video."""
    reader = open_reader(path, "pyav", threads)
    try:
        stream, reformat = reader.stream, av.video.reformatter.VideoReformatter()
        out_size, prev, prev_time, j = None, None, 0.0, 0
        for frame in reader.container.decode(stream):
            t = reader._sec(frame.pts)
            t = prev_time + 1.0 / fps if t is None else t
            if out_size is None:
                turns = int(round((frame.rotation or 0) / 90.0)) % 4
                shown_h, shown_w = (frame.height, frame.width) if turns % 2 == 0 else (frame.width, frame.height)
                h, w = short_side_shape(shown_h, shown_w, size) if size else (shown_h, shown_w)
                out_size = (_even(h), _even(w), turns)
            while prev is not None and j / fps + _EPS < t:
                yield prev
                j += 1
            prev, prev_time = _convert(frame, out_size, reformat), t
        if prev is None:
            raise DecodeError(path, "no decodable video frame")
        end = prev_time + (1.0 / reader.rate if reader.rate else 1.0 / fps)
        while j / fps + _EPS < end:
            yield prev
            j += 1
    finally:
        reader.close()


def _convert(frame: av.VideoFrame, out_size, reformat) -> av.VideoFrame:
    height, width, turns = out_size
    if turns == 0:
        return reformat.reformat(frame, width=width, height=height, format="yuv420p", interpolation="BICUBIC")
    pre_w, pre_h = (width, height) if turns % 2 == 0 else (height, width)
    rgb = reformat.reformat(frame, width=pre_w, height=pre_h, format="rgb24", interpolation="BICUBIC").to_ndarray()
    upright = np.ascontiguousarray(np.rot90(rgb, turns))
    return av.VideoFrame.from_ndarray(upright, format="rgb24").reformat(format="yuv420p")


def pack_video(src, dst, short_side: Optional[int] = 256, fps: float = 30.0, keyframe_interval: float = 1.0,
               crf: int = 23, preset: str = "medium", threads: int = 1) -> Dict[str, float]:
    """Re-encode `src` into `dst` (.mp4); written to a temporary name and renamed, so `dst` is never partial."""
    dst = Path(dst)
    gop = max(1, int(round(keyframe_interval * fps)))
    count = 0
    try:
        with atomic_path(dst) as tmp, av.open(str(tmp), "w", options={"movflags": "faststart"}) as out:
            stream = None
            for frame in iter_frames(src, fps, short_side):
                if stream is None:
                    rate = Fraction(fps).limit_denominator(1001)
                    stream = out.add_stream("libx264", rate=rate)
                    stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                    stream.codec_context.thread_count = threads
                    stream.options = {"crf": str(crf), "preset": preset, "g": str(gop)}
                frame.pts, frame.time_base = count, 1 / rate
                out.mux(stream.encode(frame))
                count += 1
            if stream is not None:
                out.mux(stream.encode(None))
    except DecodeError:
        raise
    except Exception as err:  # noqa: BLE001
        raise DecodeError(str(src), f"packing failed: {type(err).__name__}: {err}") from err
    return {"frames": count, "seconds": count / fps, "bytes": dst.stat().st_size}


def _pack_one(job):
    src, dst, options = job
    try:
        pack_video(src, dst, **options)
        return src, str(dst), None
    except DecodeError as err:
        return src, str(dst), err.reason


def pack_corpus(paths: Sequence[str], root: Optional[str], out_dir: str, skip_existing: bool = True,
                jobs: int = 1, progress: bool = True, **options) -> Dict[str, object]:
    """Pack every video into out_dir, keeping paths relative to `root` (or the file name), in `jobs` processes.

    Returns {"packed": [dst …], "failed": {src: reason}}; an existing output newer than its source is kept.
    """
    done: List[str] = []
    failed: Dict[str, str] = {}
    todo = []
    for src in paths:
        rel = Path(os.path.relpath(src, root)) if root else Path(Path(src).name)
        if rel.is_absolute() or ".." in rel.parts:
            failed[str(src)] = f"not under the video root {root}"
            continue
        dst = Path(out_dir) / rel.with_suffix(".mp4")
        if skip_existing and dst.exists() and Path(src).exists() and dst.stat().st_mtime >= Path(src).stat().st_mtime:
            done.append(str(dst))
            continue
        todo.append((str(src), dst, options))
    bar = tqdm(total=len(todo), desc="packing videos", unit="video", disable=not progress)
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = [f.result() for f in _track(as_completed([pool.submit(_pack_one, j) for j in todo]), bar)]
    else:
        results = [_pack_one(j) for j in _track(todo, bar)]
    bar.close()
    for src, dst, reason in results:
        if reason is None:
            done.append(dst)
        else:
            failed[src] = reason
    return {"packed": done, "failed": failed}


def _track(items, bar):
    for item in items:
        yield item
        bar.update(1)
