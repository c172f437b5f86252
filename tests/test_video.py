"""datamodules.video.decode on tiny real videos written with PyAV: frame exactness, shapes, odd inputs, failures, deadlines.

Frame k of every test video is a flat colour that encodes k (red: k mod 16, green: k div 16, in steps of 16), so a
decoded frame tells which source frame it is despite lossy compression. A white block marks the top-left corner.
"""
import os
import pickle
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from datamodules.video import decode as video_mod
from datamodules.video.decode import DecodeError, WindowError, probe, read_clip, read_video

BACKENDS = ["pyav", "decord"]


# -- writing tiny videos ------------------------------------------------------------------------------------------
def frame_image(k, width, height, gray=False):
    if gray:
        img = np.full((height, width, 3), (k % 16) * 16 + 8, np.uint8)
    else:
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = (k % 16) * 16 + 8
        img[..., 1] = (k // 16 % 16) * 16 + 8
        img[..., 2] = 128
    img[: height // 4, : width // 4] = 255
    return img


def write_video(path, num_frames=60, fps=30, width=64, height=48, codec="libx264", pix_fmt="yuv420p",
                pts_ms=None, rotation=None, options=None, container_options=None):
    """Write frames 0..num_frames-1; pts_ms gives explicit presentation times in milliseconds (variable rate)."""
    gray = pix_fmt == "gray"
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {"g": "25", **(options or {})} if codec.startswith("libx26") else dict(options or {})
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k in range(num_frames):
            img = frame_image(k, width, height, gray)
            frame = av.VideoFrame.from_ndarray(img[..., 0].copy() if gray else img, "gray" if gray else "rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = int(pts_ms[k]), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def write_audio_only(path, seconds=1.0):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        tone = (0.1 * np.sin(np.arange(samples) * 0.05)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def frame_index(frame, gray=False):
    """Which source frame a decoded T×H×W×3 frame shows (read away from the white corner block)."""
    h, w = frame.shape[:2]
    patch = frame[h * 3 // 8: h * 5 // 8 + 1, w * 3 // 8: w * 5 // 8 + 1].float().mean(dim=(0, 1))
    r, g = (float(patch[0]) - 8) / 16, (float(patch[1]) - 8) / 16
    assert abs(r - round(r)) < 0.3 and abs(g - round(g)) < 0.3, f"frame is not a flat test colour: {patch}"
    return int(round(r)) if gray else int(round(r)) + 16 * int(round(g))


def indices(clip, gray=False):
    return [frame_index(f, gray) for f in clip]


def expected_exact(times, start, num_frames, fps):
    """Index of the frame on screen at start + i/fps: the last one with time <= t."""
    times = np.asarray(times)
    return [int(np.searchsorted(times, start + i / fps + 1e-9, side="right") - 1) for i in range(num_frames)]


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    """90 frames, 30 fps, keyframe every 25 frames, B-frames (x264 defaults)."""
    return write_video(tmp_path_factory.mktemp("v") / "h264.mp4", num_frames=90)


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    """90 frames, 30 fps, keyframe every 25 frames, hidden alt-ref frames, WebM."""
    return write_video(tmp_path_factory.mktemp("v") / "vp9.webm", num_frames=90, codec="libvpx-vp9",
                       options={"g": "25", "auto-alt-ref": "1", "lag-in-frames": "16", "cpu-used": "8"})


# -- frame exactness ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fps", [5, 10, 7])
@pytest.mark.parametrize("kind", ["h264", "vp9"])
def test_frames_are_the_ones_on_screen(request, kind, backend, fps):
    path = request.getfixturevalue(kind)
    times = np.arange(90) / 30
    for start in [0.0, 0.5, 0.8, 24.5 / 30, 25 / 30, 1.0, 1.64, 2.0]:  # frame 25 is a keyframe
        n = max(1, min(6, int((3.0 - start) * fps)))
        clip = read_clip(path, start, n, fps, None, backend=backend)
        assert clip.dtype == torch.uint8 and clip.shape == (n, 48, 64, 3)
        assert indices(clip) == expected_exact(times, start, n, fps), (start, fps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ffmpeg_sampling_reproduces_the_original_loader(h264, backend):
    # ffmpeg's fps filter: the last source frame before start + (i + 1/2)/fps -> 2 frames late at 30 -> 5 fps
    clip = read_clip(h264, 1.0, 5, 5, None, backend=backend, sampling="ffmpeg")
    assert indices(clip) == [32, 38, 44, 50, 56]
    clip = read_clip(h264, 1.0, 5, 10, None, backend=backend, sampling="ffmpeg")
    assert indices(clip) == [31, 34, 37, 40, 43]


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate(tmp_path, backend):
    rng = np.random.default_rng(0)
    pts = np.cumsum(np.r_[0, rng.choice([10, 33, 50, 120], size=59)])
    path = write_video(tmp_path / "vfr.mp4", num_frames=60, pts_ms=pts)
    times = pts / 1000.0
    for start, fps in [(0.0, 10), (0.37, 25), (1.0, 4)]:
        clip = read_clip(path, start, 8, fps, None, backend=backend)
        assert indices(clip) == expected_exact(times, start, 8, fps), (start, fps)


def write_ntsc_video(path, rate, num_frames):
    """A file at rate = N/1001 fps whose stream time base is one frame (1001/N): the timestamps are exact."""
    tick = 1 / rate
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "25"}
        stream.time_base = stream.codec_context.time_base = tick
        for k in range(num_frames):
            frame = av.VideoFrame.from_ndarray(frame_image(k, 64, 48), "rgb24")
            frame.pts, frame.time_base = k, tick
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as f:  # mp4 stores it as 1001 ticks of 1/N: frame k starts at exactly k*1001/N s
        stream = f.streams.video[0]
        stamps = sorted(Fraction(p.pts) * Fraction(stream.time_base) for p in f.demux(stream) if p.pts is not None)
        assert stamps == [k * tick for k in range(num_frames)]
    return str(path)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rate,fps", [(Fraction(30000, 1001), 10), (Fraction(30000, 1001), 30),
                                      (Fraction(60000, 1001), 10), (Fraction(24000, 1001), 24),
                                      (Fraction(24000, 1001), 5)])
def test_ntsc_rates_are_frame_exact(tmp_path, backend, rate, fps):
    # frame k starts at k*1001/N s, just after k/(N/1000): a target that a frame misses by 33 us is not its frame
    path = write_ntsc_video(tmp_path / "ntsc.mp4", rate, 75)
    times = [float(k / rate) for k in range(75)]
    for start in [0.0, 0.5, 1.0, 24 / 24000 * 1001]:
        n = min(8, int((float(74 / rate) - start) * fps))
        clip = read_clip(path, start, n, fps, None, backend=backend)
        assert indices(clip) == expected_exact(times, start, n, fps), (start, fps)
    if rate == Fraction(30000, 1001) and fps == 10:
        # frame 2 is on screen at 0.1 s; frame 3 starts at 0.1001 s
        assert indices(read_clip(path, 0.0, 3, 10, None, backend=backend)) == [0, 2, 5]


def test_decoder_threads_keep_frames_exact(h264):
    one = read_clip(h264, 0.7, 10, 10, None, backend="pyav", threads=1)
    two = read_clip(h264, 0.7, 10, 10, None, backend="pyav", threads=2)
    assert torch.equal(one, two)


@pytest.mark.parametrize("codec,ext,pix_fmt,size", [
    ("libvpx-vp9", "webm", "yuv420p", (64, 48)),
    ("libvpx-vp9", "webm", "yuv420p", (129, 97)),
    ("libx264", "mp4", "yuv444p", (129, 97)),
    ("libx264", "mp4", "yuv420p10le", (64, 48)),
    ("ffv1", "mkv", "gray", (64, 48)),
])
def test_odd_files_decode_exactly(tmp_path, codec, ext, pix_fmt, size):
    width, height = size
    options = {"auto-alt-ref": "1", "lag-in-frames": "10", "cpu-used": "8"} if codec == "libvpx-vp9" else None
    path = write_video(tmp_path / f"v.{ext}", num_frames=40, width=width, height=height, codec=codec,
                       pix_fmt=pix_fmt, options=options)
    gray = pix_fmt == "gray"
    for backend in ["auto"] + BACKENDS:
        clip = read_clip(path, 0.2, 6, 10, None, backend=backend)
        assert clip.shape == (6, height, width, 3)
        assert indices(clip, gray) == [(6 + 3 * i) % 16 if gray else 6 + 3 * i for i in range(6)], backend


@pytest.mark.parametrize("codec,ext", [("libx264", "mp4"), ("libvpx-vp9", "webm")])
def test_backends_agree(tmp_path, codec, ext):
    path = write_video(tmp_path / f"v.{ext}", num_frames=45, codec=codec,
                       options={"cpu-used": "8"} if codec == "libvpx-vp9" else None)
    a = read_clip(path, 0.3, 8, 10, None, backend="pyav")
    b = read_clip(path, 0.3, 8, 10, None, backend="decord")
    assert torch.equal(a, b)
    a = read_clip(path, 0.3, 8, 10, 32, backend="pyav")
    b = read_clip(path, 0.3, 8, 10, 32, backend="decord")
    assert a.shape == b.shape == (8, 32, 43, 3)
    assert (a.float() - b.float()).abs().mean() < 3  # libswscale vs torch bilinear resampling


# -- windows ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_window_past_the_end_repeats_the_last_frame(h264, backend):
    clip = read_clip(h264, 2.7, 6, 5, None, backend=backend)  # 2.7, 2.9, 3.1, ... ; the video ends at 3.0 s
    assert indices(clip) == [81, 87, 89, 89, 89, 89]
    assert clip[2:].float().mean() > 20  # repeated real frames, never black


@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
@pytest.mark.parametrize("start", [3.0, 3.5, 100.0, -0.1, float("nan")])
def test_window_outside_the_video_is_an_error(h264, backend, start):
    with pytest.raises(WindowError) as info:
        read_clip(h264, start, 4, 5, None, backend=backend)
    assert "h264.mp4" in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_frame_video(tmp_path, backend):
    path = write_video(tmp_path / "one.mp4", num_frames=1)
    clip = read_clip(path, 0.0, 4, 5, None, backend=backend)
    assert indices(clip) == [0, 0, 0, 0]
    with pytest.raises(WindowError):
        read_clip(path, 0.5, 4, 5, None, backend=backend)
    assert read_video(path, 5, None, backend=backend).shape == (1, 48, 64, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_last_frame_is_reachable(h264, backend):
    clip = read_clip(h264, 2.99, 1, 5, None, backend=backend)
    assert indices(clip) == [89]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_short_side(h264, backend):
    clip = read_clip(h264, 0.0, 3, 5, 24, backend=backend)
    assert clip.shape == (3, 24, 32, 3)
    assert indices(clip) == [0, 6, 12]
    assert read_clip(h264, 0.0, 3, 5, 0, backend=backend).shape == (3, 48, 64, 3)


# -- rotation -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    path = write_video(tmp_path / "rot.mp4", num_frames=20, rotation=rotation)
    clip = read_clip(path, 0.1, 3, 10, None)  # auto: decord fails on 90/270 and PyAV takes over
    expected = np.rot90(frame_image(3, 64, 48), rotation // 90)  # ffmpeg's autorotation: counter-clockwise
    assert clip.shape[1:3] == expected.shape[:2]
    white = torch.from_numpy(np.ascontiguousarray(expected)).float().mean(-1) == 255
    assert clip[0].float().mean(-1)[white].mean() > 240 and clip[0].float().mean(-1)[~white].mean() < 200
    assert indices(clip) == [3, 6, 9]
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (expected.shape[1], expected.shape[0], rotation % 360)


def test_decord_names_rotation_as_the_cause(tmp_path):
    path = write_video(tmp_path / "rot.mp4", num_frames=10, rotation=90)
    with pytest.raises(DecodeError, match="rotation"):
        read_clip(path, 0.0, 2, 5, None, backend="decord")


# -- bad files ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, h264):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    data = open(h264, "rb").read()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom (index) at the end: gone
    write_audio_only(root / "audio.m4a")
    (root / "dir.mp4").mkdir()
    return {"missing": str(root / "missing.mp4"), "empty": str(root / "empty.mp4"), "text": str(root / "text.mp4"),
            "truncated": str(root / "truncated.mp4"), "audio": str(root / "audio.m4a"), "dir": str(root / "dir.mp4")}


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "audio", "dir"])
@pytest.mark.parametrize("backend", ["auto"] + BACKENDS)
def test_bad_files_raise_decode_error(bad_files, case, backend):
    path = bad_files[case]
    for call in (lambda: read_clip(path, 0.0, 4, 5, None, backend=backend),
                 lambda: read_video(path, 5, None, backend=backend),
                 lambda: probe(path, backend=backend)):
        with pytest.raises(DecodeError) as info:
            call()
        assert path in str(info.value) and info.value.reason


def test_truncated_faststart_file(tmp_path):
    # index at the front: the intact part decodes, windows in the missing part are errors
    path = write_video(tmp_path / "fast.mp4", num_frames=300, container_options={"movflags": "faststart"})
    data = open(path, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    assert len(indices(read_clip(cut, 0.5, 4, 5, None, backend="pyav"))) == 4
    with pytest.raises(WindowError, match="truncated"):
        read_clip(cut, 9.0, 4, 5, None, backend="pyav")


def test_integral_floats_are_accepted(h264):
    assert read_clip(h264, 0, 2.0, 5, 24.0).shape == (2, 24, 32, 3)


def test_bad_arguments_raise_decode_error(h264):
    for kwargs in [dict(num_frames=0), dict(num_frames=2.5), dict(fps=0.0), dict(fps="5"), dict(size=-1),
                   dict(size=32.5), dict(backend="nope"), dict(sampling="x")]:
        args = dict(path=h264, start=0.0, num_frames=4, fps=5.0, size=None)
        args.update(kwargs)
        with pytest.raises(DecodeError):
            read_clip(**args)


# -- deadlines ----------------------------------------------------------------------------------------------------
def _unblock(fifo):
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer that hangs up: the stuck open() returns
    except OSError:
        pass


def test_hanging_read_times_out(tmp_path):
    fifo = str(tmp_path / "stuck.mp4")
    os.mkfifo(fifo)  # opening it for reading blocks until a writer appears, like a stalled network file system
    t0 = time.monotonic()
    try:
        with pytest.raises(DecodeError, match="timed out"):
            read_clip(fifo, 0.0, 4, 5, None, backend="pyav", timeout=0.5)
        assert time.monotonic() - t0 < 3.0
    finally:
        _unblock(fifo)


class _FifoDataset(torch.utils.data.Dataset):
    def __init__(self, fifo, good):
        self.paths = [fifo, good]

    def __len__(self):
        return 2

    def __getitem__(self, i):
        try:
            return read_clip(self.paths[i], 0.0, 2, 5, None, backend="pyav", timeout=0.5).shape[0]
        except DecodeError as err:
            return str(err)


def test_timeout_works_inside_dataloader_workers(tmp_path, h264):
    fifo = str(tmp_path / "stuck.mp4")
    os.mkfifo(fifo)
    loader = torch.utils.data.DataLoader(_FifoDataset(fifo, h264), batch_size=None, num_workers=1,
                                         worker_init_fn=video_mod.worker_init, timeout=20)
    try:
        out = list(loader)
    finally:
        _unblock(fifo)
    assert "timed out" in out[0] and out[1] == 2


# -- whole videos, metadata, errors, threads ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_read_video(h264, backend):
    frames = read_video(h264, 5, None, backend=backend)
    assert frames.shape == (15, 48, 64, 3)
    assert indices(frames) == list(range(0, 90, 6))
    assert read_video(h264, 4, 24, backend=backend).shape == (12, 24, 32, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe(h264, backend):
    info = probe(h264, backend=backend)
    assert abs(info.duration - 3.0) < 1e-3 and abs(info.fps - 30) < 1e-3
    assert (info.width, info.height, info.num_frames) == (64, 48, 90)


def test_decode_error_survives_pickling_and_reraise():
    err = pickle.loads(pickle.dumps(DecodeError("/x.mp4", "broken")))
    assert isinstance(err, DecodeError) and str(err) == "/x.mp4: broken" and err.path == "/x.mp4"
    assert str(DecodeError("message only")) == "message only"  # how DataLoader re-raises a worker's exception


def test_set_decoder_threads(h264):
    before = torch.get_num_threads()
    try:
        video_mod.set_decoder_threads(2)
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        with video_mod.open_reader(h264, "pyav") as reader:
            assert reader.threads == 2 and reader.stream.codec_context.thread_count == 2
        video_mod.worker_init(0)
        assert torch.get_num_threads() == 1
        with video_mod.open_reader(h264, "pyav") as reader:
            assert reader.threads == 1
    finally:
        video_mod.set_decoder_threads(1)
        torch.set_num_threads(before)


# -- memory -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_decodes_keep_memory_flat(tmp_path, backend):
    psutil = pytest.importorskip("psutil")
    path = write_video(tmp_path / "m.mp4", num_frames=300, width=256, height=144)
    rng = np.random.default_rng(0)
    proc = psutil.Process()
    for _ in range(200):  # warm-up: allocator pools, codec tables
        read_clip(path, float(rng.uniform(0, 9)), 16, 5, None, backend=backend)
    rss0 = proc.memory_info().rss
    for _ in range(2000):
        read_clip(path, float(rng.uniform(0, 9)), 16, 5, None, backend=backend)
    growth = (proc.memory_info().rss - rss0) / 2**20
    print(f"\n{backend}: RSS growth over 2,000 clip decodes: {growth:+.1f} MiB")
    assert growth < 20


# -- packing ------------------------------------------------------------------------------------------------------
def test_pack_video_keeps_frames_and_shortens_the_gop(tmp_path, h264):
    from datamodules.video.pack import pack_corpus, pack_video

    out = tmp_path / "packed.mp4"
    stats = pack_video(h264, out, short_side=None, fps=30, keyframe_interval=0.5, crf=10, preset="ultrafast")
    assert stats["frames"] == 90
    assert indices(read_clip(out, 0.9, 6, 10, None)) == [27, 30, 33, 36, 39, 42]
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        keys = sorted(round(float(p.pts * stream.time_base) * 30) for p in container.demux(stream) if p.is_keyframe)
    assert keys[0] == 0 and max(np.diff(keys + [90])) <= 15  # keyframes at most 0.5 s apart (plus scene cuts)
    resampled = pack_video(h264, tmp_path / "r.mp4", short_side=24, fps=10, crf=10, preset="ultrafast")
    assert resampled["frames"] == 30
    clip = read_clip(tmp_path / "r.mp4", 0.0, 4, 10, None)
    assert clip.shape == (4, 24, 32, 3) and indices(clip) == [0, 3, 6, 9]
    result = pack_corpus([h264, str(tmp_path / "missing.mp4")], None, str(tmp_path / "corpus"), progress=False,
                         short_side=24, preset="ultrafast")
    assert len(result["packed"]) == 1 and "missing.mp4" in next(iter(result["failed"]))


def test_pack_video_applies_rotation(tmp_path):
    from datamodules.video.pack import pack_video

    src = write_video(tmp_path / "rot.mp4", num_frames=10, rotation=90)
    pack_video(src, tmp_path / "p.mp4", short_side=None, fps=30, crf=10, preset="ultrafast")
    info = probe(tmp_path / "p.mp4")
    assert (info.width, info.height, info.rotation) == (48, 64, 0)
