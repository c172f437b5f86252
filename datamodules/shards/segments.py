"""Keyframe-aligned segments of a video by stream copy (`milnce shard --segment-seconds`), the choice of the
segment that holds a clip, and the check of a written set's segments against its manifest.

Segment k covers at least [k·step, k·step + length) of the source, step = length − overlap: it starts at the last
keyframe at or before k·step and ends just before the first keyframe at or after k·step + length (or at the end
of the video). Consecutive segments therefore overlap by at least `overlap` seconds, so any clip of at most
`overlap` seconds lies whole inside one segment. Packets are copied, not re-encoded (decoded pixels are the
source's); timestamps are shifted so a segment starts at 0, and its `start` is its first keyframe's time in the
source. Only the video stream is kept. Cutting at keyframe packets assumes closed GOPs (x264's default), where no
frame after a keyframe in decode order references one before it.
"""
from __future__ import annotations

import bisect
import hashlib
import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, List, Sequence

import av
from tqdm.auto import tqdm

from datamodules.shards.manifest import ShardError
from datamodules.shards.reader import ShardReader
from datamodules.video.decode import DecodeError


@dataclass(frozen=True)
class Segment:
    data: bytes          # an .mp4 holding the segment's video packets, timestamps from 0
    start: float         # its first keyframe's time in the source video (seconds)
    duration: float      # seconds it covers: up to the next cut keyframe, or the last frame's end


@dataclass(frozen=True)
class _Packet:
    data: bytes
    pts: int
    dts: int
    duration: int
    key: bool


class SegmentWindowError(ShardError):
    """A clip that fits no segment of a segmented shard set (its overlap is shorter than the clip)."""


def _mux(packets: Sequence[_Packet], base: int, tb: Fraction, template) -> bytes:
    """The packets as an .mp4 with pts/dts shifted by `base` (copied: no decoding or encoding)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream_from_template(template)
        for p in packets:
            packet = av.Packet(p.data)
            packet.pts, packet.dts, packet.duration = p.pts - base, p.dts - base, p.duration
            packet.time_base, packet.stream, packet.is_keyframe = tb, stream, p.key
            out.mux(packet)
    return buf.getvalue()


def cut_segments(path, length: float, overlap: float) -> List[Segment]:
    """The video at `path` as keyframe-aligned segments of at least `length` s overlapping by at least `overlap` s."""
    if not (length > 0 and 0 <= overlap < length):
        raise ValueError(f"--segment-seconds must be > 0 and --overlap-seconds in [0, segment seconds), got "
                         f"{length} and {overlap}")
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream to segment")
        source = container.streams.video[0]
        tb, origin = Fraction(source.time_base), source.start_time or 0
        packets = sorted((_Packet(bytes(p), p.pts, p.dts if p.dts is not None else p.pts, p.duration or 0,
                                  p.is_keyframe) for p in container.demux(source) if p.size and p.pts is not None),
                         key=lambda p: p.dts)                     # decode order
        keys = [i for i, p in enumerate(packets) if p.key]
        if not keys or keys[0] != 0:
            raise ValueError(f"{path}: the first video packet is not a keyframe; cannot cut by stream copy")
        key_times = [float((packets[i].pts - origin) * tb) for i in keys]
        end_time = max(float((p.pts + p.duration - origin) * tb) for p in packets)
        step, segments, k, last_first = length - overlap, [], 0, None
        while True:
            a = k * step
            first = keys[max(0, bisect.bisect_right(key_times, a + 1e-9) - 1)]
            after = bisect.bisect_left(key_times, a + length - 1e-9)
            stop = keys[after] if after < len(keys) else len(packets)
            if first != last_first:
                start = float((packets[first].pts - origin) * tb)
                end = float((packets[stop].pts - origin) * tb) if stop < len(packets) else end_time
                data = _mux(packets[first:stop], packets[first].pts, tb, source)
                segments.append(Segment(data, start, end - start))
                last_first = first
            if stop >= len(packets):
                return segments
            k += 1


def segment_for(segments: Sequence[Dict], seek: float, seconds: float, overlap: float, name: str,
                option: str = "--overlap-seconds") -> int:
    """The number of the first segment (manifest entries with start, duration) holding [seek, seek + seconds]."""
    for number, seg in enumerate(segments):
        if seg["start"] <= seek and seek + seconds <= seg["start"] + seg["duration"] + 1e-6:
            return number
    raise SegmentWindowError(
        f"{name}: the clip [{seek:.3f}, {seek + seconds:.3f}] s ({seconds:.3f} s) fits in no segment: the shard "
        f"set's segments overlap by {overlap} s; rewrite it with `milnce shard {option}` of at least {seconds} s "
        f"(or train shorter clips)")


def check_overlap(manifest: Dict, seconds: float, where: str) -> None:
    """A clip longer than the set's overlap would not always fit one segment: refuse it before training starts."""
    overlap = manifest.get("overlap_seconds")
    if overlap is not None and seconds > overlap + 1e-9:
        raise SegmentWindowError(
            f"{where}: clips of {seconds:.3f} s (data.num_frames / data.fps) do not always fit one segment: the "
            f"segments overlap by {overlap} s; rewrite the set with `milnce shard --overlap-seconds` of at least "
            f"{seconds} s (or train shorter clips)")


def verify_segments(reader: ShardReader, manifest: Dict) -> List[str]:
    """Every sample of a segmented set read back and checked against its own and the manifest's sha256."""
    problems = []
    videos = manifest["videos"]
    for v in tqdm(videos, desc="verifying segments", unit="video", disable=len(videos) < 100):
        try:
            if reader.read(v["sample"]).video_id != v["video_id"]:
                problems.append(f"{reader.name(v['sample'])}: not the narrations of {v['video_id']}")
        except DecodeError as err:
            problems.append(str(err))
        for number, seg in enumerate(v.get("segments", ())):
            at = v["sample"] + 1 + number
            try:
                sample = reader.read(at)
            except DecodeError as err:
                problems.append(str(err))
                continue
            if sample.video_id != v["video_id"] or hashlib.sha256(sample.video).hexdigest() != seg["sha256"]:
                problems.append(f"{reader.name(at, v['video_id'])}: segment {number} differs from the manifest's "
                                f"(video id or sha256)")
    return problems
