"""PyAV backend of datamodules.video.decode: seek to the keyframe before the window, decode only what the frames need.

Which packets the decoder gets. Frame i of a clip shows the last frame with timestamp p <= a_i (see video.Targets).
A packet with timestamp p is needed iff some a_i lies in [p, q), q the next larger timestamp. Packets arrive in
decode order, so q may not be known yet; but any larger timestamp q' already seen bounds q from above, and "no a_i
in [p, q')" proves the packet is not needed. Packets proven unneeded are sent with skip_frame=NONREF: the decoder
drops them if no other frame references them (a requested frame is never dropped, and its references are all
decoded). On x264 files about 40% of the frames between the keyframe and the window's end are dropped that way.

Output frames come out in display order; a target is resolved by the last output frame at or before it. Demuxing
stops once a packet's dts passes the last target (no later packet can be displayed earlier), then the decoder is
drained.
"""
from __future__ import annotations

import bisect
from collections import deque
from fractions import Fraction
from typing import BinaryIO, List, Optional

import av
import numpy as np

from datamodules.video.base import (DecodeError, Targets, VideoInfo, VideoReader, WindowError, check_deadline,
                                    exact_tolerance)
from datamodules.video.transforms import short_side_shape

_TRUNCATION_SLACK = 0.5  # seconds the header's duration may exceed the decodable frames before we call it truncated


class _Resample(Exception):
    """The seek landed after the first target: seek earlier."""


class PyAVReader(VideoReader):
    name = "pyav"

    def __init__(self, path: str, threads: Optional[int] = None, source: Optional[BinaryIO] = None):
        """`source`: a file object to read instead of opening `path` (a video held in memory, e.g. a shard's
        sample); `path` then only names it in errors."""
        super().__init__(path, threads)
        try:
            self.container = av.open(self.path if source is None else source, mode="r", metadata_errors="ignore")
        except Exception as err:  # noqa: BLE001
            raise DecodeError(self.path, f"cannot open: {type(err).__name__}: {err}") from err
        try:
            if not self.container.streams.video:
                kinds = sorted({s.type for s in self.container.streams}) or ["no"]
                raise DecodeError(self.path, f"no video stream ({', '.join(kinds)} streams only)")
            self.stream = self.container.streams.video[0]
            ctx = self.stream.codec_context
            ctx.thread_count = self.threads
            ctx.thread_type = "AUTO" if self.threads > 1 else "SLICE"
            self.tb = Fraction(self.stream.time_base)
            self.origin = self.stream.start_time if self.stream.start_time is not None else 0
            self._tb_float = float(self.tb)
            rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
            self.rate = float(rate) if rate else 0.0
            self.header_duration = self._header_duration()
            self._reformatter = av.video.reformatter.VideoReformatter()
            self._fresh = True
            self._info: Optional[VideoInfo] = None
        except BaseException:
            self.container.close()
            raise

    # -- time bookkeeping ----------------------------------------------------------------------------------------
    def _sec(self, pts) -> Optional[float]:
        return None if pts is None else (pts - self.origin) * self._tb_float

    def _header_duration(self) -> Optional[float]:
        if self.stream.duration:
            return float(self.stream.duration * self.tb)
        if self.container.duration:
            start = self.container.start_time or 0
            return (self.container.duration + start) / av.time_base - float(self.origin * self.tb)
        return None

    def tolerance(self, t: Optional[float]) -> float:
        """Timestamps are exact (pts - start) × time_base: double rounding only, and under half a tick."""
        if t is None:
            t = self.header_duration or 0.0
        return min(exact_tolerance(t), float(self.tb) / 2)

    # -- decoding ------------------------------------------------------------------------------------------------
    def _seek(self, seconds: float) -> None:
        if seconds <= 0 and self._fresh:
            return
        self._fresh = False
        target = self.origin + int(seconds / self.tb) if seconds > 0 else self.origin
        self.container.seek(int(target), stream=self.stream, backward=True, any_frame=False)
        self.stream.codec_context.flush_buffers()

    def _to_rgb(self, frame: av.VideoFrame, size: Optional[int]) -> np.ndarray:
        turns = int(round((frame.rotation or 0) / 90.0)) % 4
        width, height = frame.width, frame.height
        if size:
            shown = (width, height) if turns % 2 == 0 else (height, width)
            out_h, out_w = short_side_shape(shown[1], shown[0], size)
            height, width = (out_h, out_w) if turns % 2 == 0 else (out_w, out_h)
        # threads=1: libswscale's default (auto) spins up a thread pool per context, ~10x the cost of a small frame
        rgb = self._reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                         interpolation="BILINEAR", threads=1).to_ndarray()
        return np.rot90(rgb, turns) if turns else rgb

    def _frames(self, targets: Targets, size: Optional[int], deadline: Optional[float]) -> np.ndarray:
        backoff = 0.0
        for _ in range(12):
            seek_to = max(0.0, targets.key(0) - backoff)
            try:
                return self._decode(targets, size, deadline, seek_to)
            except _Resample:
                backoff = backoff * 2 if backoff else 1.0
        raise DecodeError(self.path, f"seeking never reached a frame before {targets.start:.3f}s")

    def _decode(self, tg: Targets, size, deadline, seek_to: float) -> np.ndarray:
        ctx = self.stream.codec_context
        self._seek(seek_to)
        seen: List[float] = []          # sorted timestamps of the packets demuxed so far
        pending = deque()               # demuxed packets not yet sent to the decoder
        last_key = None if tg.count is None else tg.key(tg.count - 1)
        picked: List[np.ndarray] = []   # unique frames, converted
        assign: List[int] = []          # target i -> index into picked
        prev = None                     # [time, frame, picked index or -1, duration] of the last output frame
        state = {"first_packet": True, "demux_done": False, "end_of_file": False}

        def emit(frame) -> bool:        # returns True when every target is resolved
            nonlocal prev
            t = self._sec(frame.pts)
            if t is None:
                t = prev[0] + prev[3] if prev else 0.0
            while (tg.count is None or len(assign) < tg.count) and tg.key(len(assign)) < t:
                if prev is None:
                    if seek_to > 0:
                        raise _Resample()
                    prev = [t, frame, -1, 0.0]  # target before the first frame: clamp to it
                if prev[2] < 0:
                    picked.append(self._to_rgb(prev[1], size))
                    prev[2] = len(picked) - 1
                assign.append(prev[2])
            duration = frame.duration * self._tb_float if frame.duration else (1.0 / self.rate if self.rate else 0.0)
            prev = [t, frame, -1, duration]
            return tg.count is not None and len(assign) >= tg.count

        def send(packet) -> bool:
            p = self._sec(packet.pts)
            if p is None:
                needed = True
            else:
                k = bisect.bisect_right(seen, p)
                q = seen[k] if k < len(seen) else float("inf")
                needed = tg.any_in(p, q)
            ctx.skip_frame = "DEFAULT" if needed else "NONREF"
            for frame in ctx.decode(packet):
                if emit(frame):
                    return True
            return False

        def decidable(packet) -> bool:
            p = self._sec(packet.pts)
            return p is None or state["demux_done"] or bisect.bisect_right(seen, p) < len(seen)

        done = False
        try:
            for packet in self.container.demux(self.stream):
                check_deadline(self.path, deadline)
                if packet.size == 0 or packet.is_corrupt:  # end of file, or the cut-off last packet of a truncated one
                    state["end_of_file"] = True
                    break
                p = self._sec(packet.pts)
                if state["first_packet"]:
                    state["first_packet"] = False
                    if p is not None and seek_to > 0 and p > tg.key(0):
                        raise _Resample()
                if p is not None:
                    bisect.insort(seen, p)
                pending.append(packet)
                while pending and decidable(pending[0]):
                    if send(pending.popleft()):
                        done = True
                        break
                dts = self._sec(packet.dts)
                if done or (last_key is not None and dts is not None and dts > last_key):
                    break
            else:
                state["end_of_file"] = True
            if not done:
                state["demux_done"] = True  # every packet that can still matter has been demuxed
                while pending and not done:
                    done = send(pending.popleft())
                if not done:
                    ctx.skip_frame = "DEFAULT"
                    for frame in ctx.decode(None):
                        if emit(frame):
                            done = True
                            break
        except (_Resample, DecodeError):
            raise
        except Exception as err:  # noqa: BLE001
            raise DecodeError(self.path, f"decoding failed near {tg.start:.3f}s: {type(err).__name__}: {err}") from err
        finally:
            ctx.skip_frame = "DEFAULT"
            self._fresh = False
        if not done:
            self._finish(tg, prev, picked, assign, size, state["end_of_file"], seek_to)
        return np.stack(picked)[np.asarray(assign, dtype=np.int64)]

    def _finish(self, tg: Targets, prev, picked, assign, size, end_of_file: bool, seek_to: float) -> None:
        """Decoding stopped before every target was resolved: the rest show the last frame (held on screen, or
        repeated past the end of the file); windows after the end and truncated files raise."""
        if prev is None and end_of_file and seek_to > 0:
            raise _Resample()  # nothing after the seek point (a truncated file?): look earlier
        if prev is None:
            raise DecodeError(self.path, "no decodable video frame" +
                              (f" at or after {tg.start:.3f}s" if tg.start > 0 else ""))
        end = prev[0] + prev[3]
        missing = (self.header_duration or 0.0) - end
        if end_of_file and missing > max(_TRUNCATION_SLACK, 2 * prev[3]) \
                and (tg.count is None or tg.key(tg.count - 1) >= end):
            raise WindowError(self.path, f"truncated: frames end at {end:.3f}s, the header says "
                                         f"{self.header_duration:.3f}s")
        if end_of_file and tg.start >= end:
            raise WindowError(self.path, f"window starts at {tg.start:.3f}s, at or after the video's end ({end:.3f}s)")
        if prev[2] < 0:
            picked.append(self._to_rgb(prev[1], size))
            prev[2] = len(picked) - 1
        if tg.count is not None:
            assign.extend([prev[2]] * (tg.count - len(assign)))
        else:
            while tg.start + len(assign) / tg.fps < end - 1e-9:
                assign.append(prev[2])

    # -- metadata ------------------------------------------------------------------------------------------------
    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            self._info = self._probe()
        return self._info

    def _probe(self) -> VideoInfo:
        self._seek(0.0)
        rotation = 0
        try:
            for frame in self.container.decode(self.stream):
                rotation = int(frame.rotation or 0) % 360
                width, height = (frame.width, frame.height) if rotation % 180 == 0 else (frame.height, frame.width)
                break
            else:
                raise DecodeError(self.path, "no decodable video frame")
        except DecodeError:
            raise
        except Exception as err:  # noqa: BLE001
            raise DecodeError(self.path, f"cannot decode the first frame: {type(err).__name__}: {err}") from err
        finally:
            self._fresh = False
        duration = self.header_duration
        if duration is None:
            duration = self._scan_duration()
        frames = self.stream.frames or int(round(duration * self.rate))
        fps = self.rate or (frames / duration if duration else 0.0)
        return VideoInfo(duration=duration, fps=fps, width=width, height=height, num_frames=frames,
                         rotation=rotation, codec=self.stream.codec_context.name)

    def _scan_duration(self) -> float:
        """No duration in the header: the end of the last packet (demuxing only)."""
        self._seek(0.0)
        end = 0.0
        for packet in self.container.demux(self.stream):
            if packet.pts is not None:
                end = max(end, self._sec(packet.pts) + float((packet.duration or 0) * self.tb))
        return end

    def close(self) -> None:
        self.container.close()
