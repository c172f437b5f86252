"""Extraction that decodes each video once: its windows are read_clip's frames, its index equals the per-window
path's, it resumes, and its faiss index comes from a factory string; rows.parquet is read without the embeddings."""
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from api_fakes import save_lightning_checkpoint, tiny_module, write_video
from milnce.api import load_model, plan_windows
from milnce.search.extract import extract
from milnce.search.faiss_build import build_faiss, min_training_points
from milnce.search.index import IndexWriter, MomentIndex, load_shards, read_failed
from milnce.search.windows import VideoWindows, chunk_windows, decode_windows
from datamodules.video.clip_spec import ClipSpec
from datamodules.video.decode import open_reader, read_clip
from datamodules.video.transforms import center_crop


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory):
    # 7 fps source, 6.3 s: targets at 4 / 5 fps fall between source frames, the last window is off the grid and
    # the tail of a window runs past the end (repeats the last frame)
    return write_video(tmp_path_factory.mktemp("v") / "moving.mp4", seconds=6.3, fps=7, width=64, height=40)


@pytest.mark.parametrize("fps,num_frames,window,stride,sampling,chunk", [
    (4.0, 4, 2.0, 1.0, "exact", 3.0),     # two clips per window, chunks of 3 s: several chunks per video
    (5.0, 8, 4.0, 1.0, "exact", 60.0),    # the demo clip, a 4 s window: one chunk
    (5.0, 4, 1.6, 0.5, "ffmpeg", 4.0),    # the original loader's frame choice; every other window off the grid
])
def test_decoded_once_windows_are_read_clips_frame_for_frame(clip_video, fps, num_frames, window, stride, sampling,
                                                             chunk):
    spec = ClipSpec(fps, num_frames, resize=24, crop=20, sampling=sampling)
    with open_reader(clip_video) as reader:
        plan = plan_windows(reader.info.duration, window, stride, spec.seconds)
        got = list(decode_windows(reader, plan, spec, "once", chunk_seconds=chunk))
        each = list(decode_windows(reader, plan, spec, "per_window"))
    assert sorted(w for w, _, _ in got) == list(range(len(plan.starts))) == [w for w, _, _ in each]
    assert all(torch.equal(clips, each[w][1]) for w, clips, _ in got)
    for w, clips, _ in got:
        for c, start in enumerate(plan.clips[w]):
            expected = center_crop(read_clip(clip_video, float(start), num_frames, fps, 24, sampling=sampling), 20)
            assert torch.equal(clips[c], expected), f"window {w} clip {c} at {start:.2f} s"
    decoded = sum(f for _, _, f in got)
    assert decoded < plan.clips.size * num_frames    # fewer frames than one decode per clip


def test_chunks_cover_each_window_once_and_respect_the_chunk_size():
    spec = ClipSpec(5.0, 8, 48, 48)
    plan = plan_windows(100.3, 4.0, 1.0, spec.seconds)
    groups, off_grid = chunk_windows(plan, spec, chunk_frames=100)
    assert sorted(w for g in groups for w in g) + off_grid == list(range(len(plan.starts)))
    assert off_grid == [len(plan.starts) - 1]                           # the end-aligned window
    assert [len(g) for g in groups] == [17] * 5 + [12]                  # 20-frame windows every 5 frames
    for g in groups:
        ks = np.rint(plan.clips[g] * spec.fps)
        assert ks.max() + spec.num_frames - ks.min() <= 100


def test_windows_are_split_between_ranks_and_an_unreadable_video_is_one_error_batch(clip_video, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    spec = ClipSpec(4.0, 4, 24, 20)
    videos = [str(clip_video), str(bad), str(clip_video) + ".missing"]
    parts = [VideoWindows(videos, spec, 2.0, 1.0, batch_size=3, rank=r, world_size=2) for r in (0, 1)]
    assert [p.my_videos() for p in parts] == [videos[0::2], videos[1::2]]
    batches = list(parts[0])
    assert [b["last"] for b in batches] == [False, False, True, True] and batches[-1]["error"]  # 6 windows by 2 (3 clips → 2 windows)
    assert batches[0]["clips"].shape == (2 * 2, 3, 4, 20, 20)          # 2 windows × 2 clips
    assert "bad.mp4" in list(parts[1])[0]["error"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    ckpt = save_lightning_checkpoint(tiny_module(), root / "model.ckpt")
    videos = [write_video(root / "videos" / f"{name}.mp4", seconds=s, colour=c)
              for name, s, c in (("a", 3.5, (220, 20, 20)), ("b", 2.0, (20, 20, 220)), ("c", 4.2, (20, 220, 20)))]
    (root / "videos" / "broken.mp4").write_bytes(b"\x00" * 100)
    return load_model(ckpt), [str(v) for v in videos] + [str(root / "videos" / "broken.mp4")]


def test_decode_once_index_equals_the_per_window_index_and_resumes(collection, tmp_path):
    model, videos = collection
    torch.set_num_threads(1)
    old = extract(model, videos, tmp_path / "old", window=2.0, stride=1.0, mode="per_window", progress=False)
    new = extract(model, videos[:2], tmp_path / "new", window=2.0, stride=1.0, progress=False, num_workers=1,
                  shard_rows=4)
    assert (new["encoded"], new["failed"]) == (2, 0)
    again = extract(model, videos, tmp_path / "new", window=2.0, stride=1.0, progress=False, num_workers=0,
                    shard_rows=4)                                        # resumes: a and b are done
    assert (again["skipped_done"], again["encoded"], again["failed"]) == (2, 1, 1)
    assert (old["encoded"], old["failed"], old["rows"]) == (3, 1, again["rows"])
    assert old["frames_per_window"] == 8 and again["frames_per_window"] < 8
    assert [v for v, _ in read_failed(tmp_path / "new")] == [videos[3]]
    e_old, r_old = load_shards(tmp_path / "old")
    e_new, r_new = load_shards(tmp_path / "new")
    order = sorted(range(len(r_new)), key=lambda i: tuple(r_new[i]))
    assert sorted(map(tuple, r_old)) == [tuple(r_new[i]) for i in order]
    np.testing.assert_allclose(e_new[order], e_old[sorted(range(len(r_old)), key=lambda i: tuple(r_old[i]))],
                               rtol=1e-4, atol=1e-5)
    rows = pq.read_table(tmp_path / "new" / "rows.parquet")
    assert rows.column_names == ["row", "video", "start", "end"] and rows.column("row").to_pylist() == \
        list(range(len(r_new)))


class _NanForBlue(torch.nn.Module):
    """The tiny model, except that a mostly blue clip embeds to NaN (a numerically broken video)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.preprocess, self.checkpoint_path = model, model.preprocess, None

    @property
    def clip_spec(self):
        return self.model.clip_spec

    def embed_video(self, clips):
        out = self.model.embed_video(clips)
        blue = clips.float().mean(dim=(2, 3, 4))[:, 2] > clips.float().mean(dim=(2, 3, 4))[:, 0] + 5
        return torch.where(blue[:, None], torch.full_like(out, float("nan")), out)


def test_decode_once_refuses_a_video_with_nonfinite_embeddings(collection, tmp_path):
    model, videos = collection
    out = extract(_NanForBlue(model), videos[:3], tmp_path / "i", window=2.0, stride=1.0, progress=False,
                  num_workers=0, features_dir=tmp_path / "f")
    assert (out["encoded"], out["failed"]) == (2, 1)
    [(video, reason)] = read_failed(tmp_path / "i")
    assert video == videos[1] and "non-finite embedding in" in reason
    _, rows = load_shards(tmp_path / "i")
    assert {r[0] for r in rows} == {videos[0], videos[2]} and not (tmp_path / "f" / "b.npy").exists()


def test_moment_index_reads_rows_without_the_shard_embeddings(collection, tmp_path):
    model, videos = collection
    extract(model, videos[:2], tmp_path / "i", window=2.0, stride=1.0, progress=False, num_workers=0)
    emb, rows = load_shards(tmp_path / "i")
    shutil.rmtree(tmp_path / "i" / "shards")                            # search needs faiss.index + rows.parquet
    index = MomentIndex(tmp_path / "i")
    assert len(index) == len(rows) and [tuple(index.rows[i]) for i in range(len(rows))] == [tuple(r) for r in rows]
    assert index.rows[-1] == tuple(rows[-1]) and index.videos == sorted(videos[:2])
    with pytest.raises(IndexError, match="out of range"):
        index.rows[len(rows)]
    hit = index.search(emb[2], k=1)[0]
    assert hit["row"] == int(np.argmax(emb @ emb[2])) and (hit["video"], hit["start"]) == tuple(rows[hit["row"]][:2])


def _writer(tmp_path, n=400, dim=8, seed=0):
    data = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    writer = IndexWriter(tmp_path, {"window": 1.0, "stride": 1.0}, shard_rows=100)
    for v in range(n // 10):
        writer.add(f"v{v}.mp4", np.arange(10.0), np.arange(10.0) + 1, data[v * 10:(v + 1) * 10])
    writer.close()
    return data


def test_faiss_factory_specs_and_a_training_sample_too_small_for_them(tmp_path):
    data = _writer(tmp_path, n=800)
    assert min_training_points("IVF4096,PQ64") == 39 * 4096 and min_training_points("IVF8,PQ4x4") == 39 * 16
    with pytest.raises(ValueError, match=r"'IVF4,Flat' needs at least 156 training vectors.*train_sample=100"):
        build_faiss(tmp_path, spec="IVF4,Flat", train_sample=100)
    with pytest.raises(ValueError, match="not a faiss index_factory string"):
        build_faiss(tmp_path, spec="NoSuchIndex12")
    with pytest.raises(ValueError, match=r"'IVF4,PQ2x4' needs at least 624 .*train_sample=300"):
        build_faiss(tmp_path, spec="IVF4,PQ2x4", train_sample=300)     # 16 PQ centroids × 39
    built = build_faiss(tmp_path, spec="IVF4,PQ2x4", train_sample=700, nprobe=4)
    assert (built["faiss"], built["rows"], built["trained_on"]) == ("IVF4,PQ2x4", 800, 700)
    index = MomentIndex(tmp_path)
    assert type(index.index).__name__ == "IndexIVFPQ" and len(index) == 800
    hits = index.search(data[:20], k=10)
    recall = np.mean([int(np.argmax(data @ q)) in {h["row"] for h in hs} for q, hs in zip(data[:20], hits)])
    assert recall >= 0.5                                                # approximate, but finds its neighbours
    assert json.loads((tmp_path / "index.json").read_text())["faiss_spec"] == "IVF4,PQ2x4"


def test_a_legacy_json_index_still_loads_and_rebuilding_converts_it(tmp_path, capsys):
    from milnce.commands.extract import main as extract_main

    data = _writer(tmp_path, n=40)
    build_faiss(tmp_path)
    for shard in (tmp_path / "shards").glob("*.parquet"):              # what an index written before Parquet holds
        table = pq.read_table(shard)
        rows = [[v, s, e] for v, s, e in zip(*(table.column(k).to_pylist() for k in ("video", "start", "end")))]
        (shard.with_suffix(".json")).write_text(json.dumps(rows))
        shard.unlink()
    (tmp_path / "rows.parquet").unlink()
    index = MomentIndex(tmp_path)
    assert "no rows.parquet" in capsys.readouterr().err and index.rows[13] == ("v1.mp4", 3.0, 4.0)
    assert index.search(data[13], k=1)[0]["row"] == int(np.argmax(data @ data[13]))
    assert extract_main(["--rebuild-index", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "rows.parquet").is_file() and MomentIndex(tmp_path).rows[13] == ("v1.mp4", 3.0, 4.0)
    assert "no rows.parquet" not in capsys.readouterr().err


@pytest.mark.slow
def test_two_ranks_with_ddp_spawn_index_disjoint_videos_once_each(collection, tmp_path):
    model, videos = collection
    out = extract(model, videos, tmp_path / "ddp", window=2.0, stride=1.0, progress=False, num_workers=0,
                  accelerator="cpu", devices=2, strategy="ddp_spawn")
    ref = extract(model, videos, tmp_path / "one", window=2.0, stride=1.0, progress=False, num_workers=0)
    assert (out["encoded"], out["failed"], out["rows"]) == (ref["encoded"], ref["failed"], ref["rows"])
    names = sorted(p.stem for p in (tmp_path / "ddp" / "shards").glob("*.parquet"))
    assert names[0].startswith("shard_r0_") and names[-1].startswith("shard_r1_")
    _, rows = load_shards(tmp_path / "ddp")
    assert len({tuple(r) for r in rows}) == len(rows)                  # no window twice
