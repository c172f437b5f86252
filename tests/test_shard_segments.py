"""`milnce shard --segment-seconds`: every clip the sampler draws from segmented shards is, frame for frame, the
clip drawn from whole-video shards; a clip reads one segment, not its video; the manifest lists the segments with
their checksums and --verify checks them; a clip longer than the overlap is refused naming the option."""
import io
import json
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

pytest.importorskip("litdata")


from datamodules.epoch_sampler import EpochShardSampler  # noqa: E402
from datamodules.shards.manifest import read_manifest, verify_shards  # noqa: E402
from datamodules.shards.reader import ShardReader  # noqa: E402
from datamodules.shards.segments import SegmentWindowError, cut_segments, segment_for  # noqa: E402
from datamodules.video.decode import read_clip, read_clip_bytes  # noqa: E402
from datamodules.video.pyav import PyAVReader  # noqa: E402
from milnce.commands.shard import main as shard_main  # noqa: E402
from shard_fakes import shard_dataset  # noqa: E402

SEGMENT, OVERLAP = 8.0, 1.0      # the tiny corpus: 20-24 s videos, a keyframe every 2 s (toy encoder, g=20 at 10 fps)


def dataset(corpus, shards, **kw):
    return shard_dataset(corpus, shards, seed=5, **kw)


@pytest.fixture(scope="module")
def sets(tiny_toy_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("segment_shards")
    whole, cut = base / "whole", base / "cut"
    assert shard_main(["--root", str(tiny_toy_corpus), "--out", str(whole), "--chunk-bytes", "300KB"]) == 0
    assert shard_main(["--root", str(tiny_toy_corpus), "--out", str(cut), "--chunk-bytes", "300KB",
                       "--segment-seconds", str(SEGMENT), "--overlap-seconds", str(OVERLAP)]) == 0
    return whole, cut


@pytest.mark.parametrize("kw", [{}, {"fractional_seek": True, "clips_per_video": 2, "num_frames": 5}])
def test_every_drawn_clip_from_segments_equals_the_clip_from_whole_videos(tiny_toy_corpus, sets, kw):
    whole, cut = (dataset(tiny_toy_corpus, s, **kw) for s in sets)
    assert len(whole) == len(cut) == 6
    sampler = EpochShardSampler(len(whole), seed=5)
    reads = []
    original = cut.reader.read
    cut.reader.read = lambda n: reads.append(n) or original(n)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for code in sampler:
            a, b = whole[code], cut[code]
            assert torch.equal(a["video"], b["video"]) and torch.equal(a["text"], b["text"])
            assert torch.equal(a["video_index"], b["video_index"]) and b["failures"] == 0
    videos = read_manifest(str(sets[1]))["videos"]
    segment_samples = {v["sample"] + 1 + k for v in videos for k in range(len(v["segments"]))}
    assert segment_samples & set(reads) and len(set(reads) & segment_samples) > 6   # clips came from segments


def test_a_clip_reads_one_segment_bounded_by_the_segment_length(tiny_toy_corpus, sets):
    ds = dataset(tiny_toy_corpus, sets[1])
    manifest = read_manifest(str(sets[1]))
    read = []
    original = ds.reader.read
    ds.reader.read = lambda n: (lambda s: read.append(len(s.video)) or s)(original(n))
    for code in EpochShardSampler(len(ds), seed=5):
        ds[code]
    largest = max(seg["bytes"] for v in manifest["videos"] for seg in v["segments"])
    whole = np.mean([v["bytes"] for v in manifest["videos"]])
    clip_reads = [n for n in read if n]                        # the narrations sample holds no video bytes
    assert len(read) == 2 * len(ds) and len(clip_reads) == len(ds)
    assert max(clip_reads) <= largest and np.mean(clip_reads) < 0.75 * whole
    gop = 2.0
    assert all(seg["duration"] <= SEGMENT + 2 * gop + 1e-6 for v in manifest["videos"] for seg in v["segments"])


def test_the_manifest_lists_keyframe_aligned_overlapping_segments_and_verify_checks_them(sets, tmp_path):
    cut = sets[1]
    manifest = read_manifest(str(cut))
    assert manifest["segment_seconds"] == SEGMENT and manifest["overlap_seconds"] == OVERLAP
    assert verify_shards(cut) == [] and shard_main(["--verify", str(cut)]) == 0
    reader = ShardReader(str(cut))
    for v in manifest["videos"]:
        segs = v["segments"]
        assert len(segs) >= 3 and segs[0]["start"] == 0.0
        assert segs[-1]["start"] + segs[-1]["duration"] == pytest.approx(v["duration"])
        for a, b in zip(segs, segs[1:]):
            assert a["start"] < b["start"] and a["start"] + a["duration"] - b["start"] >= OVERLAP - 1e-6
        for k, seg in enumerate(segs):
            sample = reader.read(v["sample"] + 1 + k)
            assert len(sample.video) == seg["bytes"] and sample.duration == pytest.approx(seg["duration"])
            with PyAVReader("segment", source=io.BytesIO(sample.video)) as r:
                first = next(r.container.decode(r.stream))
                assert first.key_frame and r._sec(first.pts) == 0.0          # starts at a keyframe, at time 0
            assert seg["start"] % 2.0 == 0.0                                  # a source keyframe (every 2 s)
    # a segment checksum that disagrees with the manifest is what --verify reports, shards intact or not
    bad = tmp_path / "bad"
    shutil.copytree(cut, bad)
    edited = json.loads((bad / "manifest.json").read_text())
    edited["videos"][2]["segments"][1]["sha256"] = "0" * 64
    (bad / "manifest.json").write_text(json.dumps(edited))
    assert verify_shards(bad) == [] and shard_main(["--verify", str(bad)]) == 1


def test_a_clip_longer_than_the_overlap_is_refused_naming_the_option(tiny_toy_corpus, sets):
    with pytest.raises(SegmentWindowError, match="--overlap-seconds"):
        dataset(tiny_toy_corpus, sets[1], num_frames=8)        # 8 frames at 5 fps = 1.6 s > 1 s overlap
    segs = read_manifest(str(sets[1]))["videos"][0]["segments"]
    straddling = segs[1]["start"] + segs[1]["duration"] - 0.5  # ends past segment 1, starts before segment 2
    assert segment_for(segs, segs[0]["start"] + segs[0]["duration"] + 0.1, 0.8, OVERLAP, "v") == 1
    with pytest.raises(SegmentWindowError, match="--overlap-seconds"):
        segment_for(segs[:2], straddling, 1.6, OVERLAP, "v")


def test_segments_of_a_b_frame_video_with_short_gops_decode_to_the_source_frames(tmp_path):
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w") as out:             # x264 medium: B-frames (pts != dts), a keyframe every 10
        stream = out.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"preset": "medium", "g": "10", "bf": "3", "threads": "1"}
        for i in range(25 * 8):
            img = np.zeros((64, 96, 3), np.uint8)
            img[:, (i * 3) % 86:(i * 3) % 86 + 10] = 255
            img[i % 64, :] = 128
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as c:
        assert any(p.pts != p.dts for p in c.demux(c.streams.video[0]) if p.size)
    segments = cut_segments(path, 3.0, 1.0)
    assert len(segments) >= 3
    used = set()
    for seek in np.arange(0.0, 7.2, 0.29):
        number = segment_for([{"start": s.start, "duration": s.duration} for s in segments], seek, 0.8, 1.0, "v")
        seg = segments[number]
        assert torch.equal(read_clip(path, float(seek), 8, 10.0, 32),
                           read_clip_bytes(seg.data, "segment", float(seek) - seg.start, 8, 10.0, 32))
        used.add(number)
    assert len(used) >= 3
