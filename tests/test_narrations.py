"""Narrations: the original MIL-NCE bag / window / seek semantics, the memory-mapped index, the readers."""
from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamodules.narrations.readers import CaptionError, CaptionStats, clean_asr, escapes_root
from datamodules.narrations.json_stream import JsonMembers
from datamodules.narrations.bags import (NarrationIndex, NoClipFits, TrainingClipSampler, bag_indices,
                                    build_index_from_captions, clip_window, nearest_candidates,
                                    read_caption_csv, read_caption_folder, read_caption_json,
                                    read_howto100m_meta, read_video_list, sample_seek, seek_range,
                                    starts_inside)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ nearest_candidates (hand cases)
def test_k1_is_the_narration_itself():
    assert nearest_candidates([0, 1, 2], [1, 2, 3], 1, 1) == 1


def test_start_at_first_line_returns_zero():
    # index 0: the loop returns 0 at once, whatever the spans
    assert nearest_candidates([0, 1, 2, 3], [1, 2, 3, 4], 0, 3) == 0


def test_end_at_last_line_snaps_back():
    assert nearest_candidates([0, 1, 2, 3, 4], [1, 2, 3, 4, 5], 4, 3) == 2


def test_extends_left_when_left_span_is_shorter():
    starts, ends = [0.0, 9.0, 10.0, 20.0], [1.0, 10.0, 11.0, 21.0]
    # around index 2: left span end[2]-start[1] = 2 < right span end[3]-start[2] = 11 -> left
    assert nearest_candidates(starts, ends, 2, 2) == 1
    assert bag_indices(starts, ends, 2, 2) == [1, 2]


def test_extends_right_when_right_span_is_shorter():
    starts, ends = [0.0, 1.0, 10.0, 11.0], [1.0, 2.0, 11.0, 12.0]
    # around index 2: left end[2]-start[1] = 10 > right end[3]-start[2] = 2 -> right
    assert nearest_candidates(starts, ends, 2, 2) == 2


def test_ties_go_right():
    starts, ends = [0.0, 4.0, 8.0, 12.0], [2.0, 6.0, 10.0, 14.0]
    # around 1: left end[1]-start[0] = 6, right end[2]-start[1] = 6 -> right
    assert nearest_candidates(starts, ends, 1, 2) == 1


def test_grows_left_then_hits_first_line():
    starts, ends = [0.0, 1.0, 2.0, 30.0], [1.0, 2.0, 3.0, 31.0]
    # from 2: left (3-1=2 < 31-2=29), now start=1 -> left again (3-0=3 < 31-1=30): K=3 reached at start 0
    assert nearest_candidates(starts, ends, 2, 3) == 0
    # K=4: after reaching start 0 with n=3 the next round returns 0
    assert bag_indices(starts, ends, 2, 4) == [0, 1, 2, 3]


def test_grows_right_then_hits_last_line():
    starts, ends = [0.0, 20.0, 21.0, 22.0], [1.0, 21.0, 22.0, 23.0]
    # from 1: right (21-0=21 vs 22-20=2), end=2; right again (22-0 vs 23-20); end=3 == last with n=3 -> 1-(4-3)=0
    assert nearest_candidates(starts, ends, 1, 4) == 0
    assert nearest_candidates(starts, ends, 1, 3) == 1


def test_fewer_lines_than_k_clamps_like_the_original():
    starts, ends = [0.0, 5.0], [4.0, 9.0]
    assert nearest_candidates(starts, ends, 1, 4) == -2          # end==last: 1 - (4 - 1)
    assert bag_indices(starts, ends, 1, 4) == [0, 0, 0, 1]
    assert nearest_candidates(starts, ends, 0, 4) == 0
    assert bag_indices(starts, ends, 0, 4) == [0, 1, 1, 1]       # the last line repeats
    assert bag_indices([3.0], [4.0], 0, 3) == [0, 0, 0]


def test_bad_arguments():
    with pytest.raises(IndexError):
        nearest_candidates([0.0], [1.0], 1, 2)
    with pytest.raises(ValueError):
        nearest_candidates([0.0], [1.0], 0, 0)


def _restated(starts, ends, index, k):
    """The bag rule said another way: among the two K-growing choices take the one of smaller total span."""
    lo, hi = index, index
    while hi - lo + 1 < k:
        if lo == 0:
            return 0
        if hi == len(starts) - 1:
            return hi - k + 1
        left_span, right_span = ends[hi] - starts[lo - 1], ends[hi + 1] - starts[lo]
        lo, hi = (lo - 1, hi) if left_span < right_span else (lo, hi + 1)
    return lo


@st.composite
def _narrations(draw):
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.floats(0, 20, allow_nan=False), min_size=n, max_size=n))
    lengths = draw(st.lists(st.floats(0, 15, allow_nan=False), min_size=n, max_size=n))
    starts = np.cumsum(gaps)
    return starts, starts + np.asarray(lengths), draw(st.integers(0, n - 1)), draw(st.integers(1, 8))


@settings(max_examples=300, deadline=None)
@given(_narrations())
def test_bag_property(case):
    starts, ends, index, k = case
    first = nearest_candidates(starts, ends, index, k)
    bag = bag_indices(starts, ends, index, k)
    assert len(bag) == k and all(0 <= b < len(starts) for b in bag)
    if len(starts) >= k:
        assert first == _restated(starts, ends, index, k)
        assert bag == list(range(first, first + k)) and index in bag
    else:
        assert sorted(set(bag)) == list(range(len(starts)))


# ------------------------------------------------------------------------------------------ clip window
@pytest.mark.parametrize("start,end,window", [
    (3.7, 10.2, (3, 10)),       # long enough: only int() truncation
    (2.0, 7.0, (2, 7)),         # exactly min_time: unchanged
    (10.0, 12.0, (8, 13)),      # diff 3 -> 8.5 .. 13.5 -> truncated
    (0.5, 1.5, (0, 5)),         # widened left past 0 -> clamped to 0, end = 0 + 5
    (4.2, 4.2, (1, 6)),         # zero length: 1.7 .. 6.7
])
def test_clip_window(start, end, window):
    assert clip_window(start, end, 5.0) == window
    assert all(isinstance(v, int) for v in clip_window(start, end, 5.0))


def test_clip_window_keeps_fractions_on_request():
    assert clip_window(10.0, 12.0, 5.0, integer=False) == (8.5, 13.5)
    assert clip_window(3.7, 10.2, 5.0, integer=False) == (3.7, 10.2)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 2000, allow_nan=False), st.floats(0, 20, allow_nan=False), st.sampled_from([1.0, 5.0, 7.3]))
def test_clip_window_matches_the_original_float_order(start, length, min_time):
    end = start + length
    s, e = start, end                         # the original's statements, verbatim in order
    if e - s < min_time:
        diff = min_time - e + s
        s = max(0, s - diff / 2)
        e = s + min_time
    assert clip_window(start, end, min_time) == (int(s), int(e))


# ----------------------------------------------------------------------------------------------- seeks
def test_integer_seek_covers_the_original_range():
    rng = np.random.default_rng(0)
    seeks = {sample_seek(8, 13, 3.2, rng) for _ in range(300)}
    assert seeks == {8.0, 9.0}                # randint(8, int(max(8, 13 - 3.2))) = randint(8, 9)
    assert {sample_seek(8, 10, 3.2, rng) for _ in range(20)} == {8.0}   # window shorter than the clip


def test_fractional_seek_range():
    rng = np.random.default_rng(0)
    seeks = np.array([sample_seek(8.5, 13.5, 3.2, rng, fractional=True) for _ in range(500)])
    assert seeks.min() >= 8.5 and seeks.max() <= 10.3 and len(set(seeks)) > 400


def test_seek_respects_a_known_duration():
    assert seek_range(8, 20, 3.2, duration=12.0) == (8, 8)
    assert seek_range(8, 20, 3.2, duration=11.0) is None
    assert seek_range(8.0, 20.0, 3.2, fractional=True, duration=12.0) == (8.0, pytest.approx(8.8))
    assert seek_range(8, 20, 3.2, duration=float("nan")) == (8, 16)
    with pytest.raises(ValueError, match="no clip"):
        sample_seek(8, 20, 3.2, np.random.default_rng(0), duration=10.0)
    assert starts_inside([0.0, 5.0, 9.9, 10.0], 10.0).tolist() == [True, True, True, False]
    assert starts_inside([0.0, 50.0], float("nan")).all()


# --------------------------------------------------------------------------------------------- index
def _random_videos(n_videos=40, seed=0):
    rng = np.random.default_rng(seed)
    words = ["cut", "the", "onion", "añadir", "sel", "胡椒", "mix", "well", "now"]
    for v in range(n_videos):
        n = int(rng.integers(1, 30))
        starts = np.cumsum(rng.uniform(0, 5, n))
        texts = [" ".join(rng.choice(words, int(rng.integers(0, 5)))) for _ in range(n)]
        yield f"vid{v:03d}-{'é' if v % 7 == 0 else 'x'}", starts, starts + rng.uniform(0.5, 6, n), texts


@pytest.fixture(params=["mmap", "pread"])
def built(tmp_path, request):
    videos = list(_random_videos())
    meta = {vid: {"task_id": i * 3, "category_1": f"cat{i % 4}", "rank": i + 0.5}
            for i, (vid, *_rest) in enumerate(videos[::2])}
    NarrationIndex.build(iter(videos), tmp_path / "index", meta=meta)
    index = NarrationIndex.open(tmp_path / "index", access=request.param)
    assert index.access == request.param
    return videos, index


def test_index_round_trip(built):
    videos, index = built
    assert len(index) == len(videos) and index.num_narrations == sum(len(v[1]) for v in videos)
    assert list(index.video_ids) == [v[0] for v in videos]
    for i, (vid, starts, ends, texts) in enumerate(videos):
        got_s, got_e, got_t = index.narrations(i)
        assert np.array_equal(got_s, starts) and np.array_equal(got_e, ends) and got_t == texts
        assert index.video_index(vid) == i and vid in index.video_ids
        assert index.texts(i, [len(texts) - 1, 0]) == [texts[-1], texts[0]]
        assert index.texts(i, []) == []
    assert index.meta(0) == {"task_id": 0, "category_1": "cat0", "rank": 0.5}
    assert index.meta(1) == {"task_id": -1, "category_1": "", "rank": pytest.approx(float("nan"), nan_ok=True)}
    assert index.meta_columns == {"task_id": "int", "category_1": "str", "rank": "float"}
    assert math.isnan(index.duration(0))
    with pytest.raises(KeyError, match="nope"):
        index.video_index("nope")
    with pytest.raises(IndexError):
        index.narrations(len(index))
    with pytest.raises(IndexError):
        index.texts(0, [len(videos[0][3])])
    assert index.narrations(-1)[2] == videos[-1][3]


def test_index_pickles_small_and_reopens(built):
    videos, index = built
    blob = pickle.dumps(index)
    assert len(blob) < 4000 and b"onion" not in blob
    again = pickle.loads(blob)
    assert again._arrays is None and again.access == index.access
    assert again.narrations(5)[2] == videos[5][3]


def test_index_in_spawned_process(built, tmp_path):
    videos, index = built
    (tmp_path / "index.pkl").write_bytes(pickle.dumps(index))
    code = ("import pickle,sys,json; sys.path.insert(0, sys.argv[1]); "
            "ix = pickle.load(open(sys.argv[2], 'rb')); print(json.dumps(ix.narrations(7)[2]))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path / "index.pkl")],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == videos[7][3]


def test_index_in_dataloader_workers(built):
    torch = pytest.importorskip("torch")
    videos, index = built

    class Texts(torch.utils.data.Dataset):
        def __len__(self):
            return len(index)

        def __getitem__(self, i):
            return "\n".join(index.narrations(i)[2])

    loader = torch.utils.data.DataLoader(Texts(), batch_size=None, num_workers=2)
    assert list(loader) == ["\n".join(v[3]) for v in videos]


def test_subset_view(built):
    videos, index = built
    sub = index.subset([9, 2, 30])
    assert len(sub) == 3 and list(sub.video_ids) == [videos[j][0] for j in (9, 2, 30)]
    assert sub.video_index(videos[2][0]) == 1 and videos[3][0] not in sub.video_ids
    assert sub.narrations(2)[2] == videos[30][3]
    assert sub.num_narrations == sum(len(videos[j][1]) for j in (9, 2, 30))
    assert pickle.loads(pickle.dumps(sub)).narrations(0)[2] == videos[9][3]
    assert sub.subset([2]).narrations(0)[2] == videos[30][3]
    with pytest.raises(ValueError):
        index.subset([1, 1])


def test_build_errors_leave_nothing_behind(tmp_path):
    out = tmp_path / "ix"
    with pytest.raises(ValueError, match="appears twice"):
        NarrationIndex.build([("a", [0], [1], ["x"]), ("a", [2], [3], ["y"])], out)
    with pytest.raises(ValueError, match="no video"):
        NarrationIndex.build([("a", [], [], [])], out)
    with pytest.raises(ValueError, match="'b'.*2 starts"):
        NarrationIndex.build([("b", [0, 1], [1], ["x"])], out)
    assert list(tmp_path.iterdir()) == []
    NarrationIndex.build([("a", [0], [1], ["x"])], out)
    with pytest.raises(FileExistsError):
        NarrationIndex.build([("a", [0], [1], ["x"])], out)
    NarrationIndex.build([("b", [0], [1], ["y"])], out, overwrite=True)
    assert list(NarrationIndex.open(out).video_ids) == ["b"]


def test_truncated_index_is_refused(built):
    _, index = built
    data = (index.path / "starts.npy").read_bytes()
    (index.path / "starts.npy").write_bytes(data[:-80])
    with pytest.raises(ValueError):
        NarrationIndex.open(index.path)
    with pytest.raises(FileNotFoundError, match="no index.json"):
        NarrationIndex.open(index.path.parent)


# --------------------------------------------------------------------------------------------- sampler
def _one_video_index(tmp_path, starts, ends, duration=None):
    meta = {"v": {"duration": duration}} if duration is not None else None
    return NarrationIndex.build([("v", starts, ends, [f"t{i}" for i in range(len(starts))])],
                                tmp_path / "ix", meta=meta)


def test_sampler_defaults_are_the_original(tmp_path):
    starts = [0.0, 3.0, 4.0, 9.0, 15.0, 16.5]
    ends = [2.5, 4.0, 8.0, 14.0, 16.0, 30.0]
    index = _one_video_index(tmp_path, starts, ends)
    sampler = TrainingClipSampler(index, num_candidates=3, min_time=5.0, clip_seconds=3.2)
    rng = np.random.default_rng(1)
    drawn = set()
    for _ in range(200):
        s = sampler.sample(0, rng)
        drawn.add(s.narration)
        assert s.bag == bag_indices(starts, ends, s.narration, 3)
        assert s.texts == [f"t{i}" for i in s.bag]
        assert s.window == clip_window(starts[s.narration], ends[s.narration], 5.0)
        lo, hi = seek_range(*s.window, 3.2)
        assert lo <= s.seek <= hi and s.seek == int(s.seek)
    assert drawn == set(range(6))
    again = TrainingClipSampler(index, num_candidates=3)
    assert again.sample(0, np.random.default_rng(5)) == again.sample(0, np.random.default_rng(5))


def test_sampler_options(tmp_path):
    starts, ends = [0.0, 3.0, 4.0, 9.0], [2.5, 4.0, 8.0, 14.0]
    index = _one_video_index(tmp_path, starts, ends)
    rng = np.random.default_rng(0)
    bag_window = TrainingClipSampler(index, num_candidates=2, window="bag", integer_window=False,
                                     fractional_seek=True)
    for _ in range(50):
        s = bag_window.sample(0, rng)
        lo, hi = min(starts[i] for i in s.bag), max(ends[i] for i in s.bag)
        assert s.window == clip_window(lo, hi, 5.0, integer=False)
    several = TrainingClipSampler(index, clips_per_video=3).sample_clips(0, rng)
    assert len(several) == 3 and len({c.narration for c in several}) == 3
    assert len({c.narration for c in TrainingClipSampler(index).sample_clips(0, rng, 6)}) == 4
    with pytest.raises(ValueError):
        TrainingClipSampler(index, window="union")


def test_sampler_resamples_windows_outside_the_video(tmp_path):
    # narrations 2 and 3 lie past the 8 s video: their clips cannot be decoded
    index = _one_video_index(tmp_path, [0.0, 2.0, 10.0, 20.0], [1.0, 4.0, 12.0, 25.0], duration=8.0)
    sampler = TrainingClipSampler(index, clip_seconds=3.2)
    rng = np.random.default_rng(0)
    for _ in range(100):
        s = sampler.sample(0, rng)
        assert s.narration in (0, 1) and s.seek + 3.2 <= 8.0
    short = NarrationIndex.build([("w", [0.0], [1.0], ["x"])], tmp_path / "ix2", meta={"w": {"duration": 2.0}})
    with pytest.raises(NoClipFits, match="'w'"):
        TrainingClipSampler(short, clip_seconds=3.2).sample(0, rng)


# --------------------------------------------------------------------------------------------- readers
def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


CAPTIONS = {"vid_a": {"start": [0.0, 4.5, 9.0], "end": [4.0, 8.0, 12.5], "text": ["cut onion", "add salt", "stir"]},
            "vid-b": {"start": [1, 2], "end": [3, 6], "text": ["heat pan", "pour oil"]}}


@pytest.mark.parametrize("indent", [None, 2])
def test_read_caption_json(tmp_path, indent):
    path = _write(tmp_path / "caption.json", json.dumps(CAPTIONS, indent=indent))
    videos = list(read_caption_json(path))
    assert [v[0] for v in videos] == ["vid_a", "vid-b"]
    for vid, starts, ends, texts in videos:
        assert starts.tolist() == CAPTIONS[vid]["start"] and ends.tolist() == CAPTIONS[vid]["end"]
        assert texts == CAPTIONS[vid]["text"]
    assert [v[0] for v in read_caption_json(path, video_ids=["vid-b"])] == ["vid-b"]


def test_json_stream_across_chunk_boundaries(tmp_path):
    data = {f"v{i}": {"start": [i * 0.1, 12345.678], "end": [1e3, 2e4], "text": ["é\"q\\", f"{i}"]} for i in range(50)}
    path = _write(tmp_path / "c.json", json.dumps(data, indent=1, ensure_ascii=False))
    assert {k: v for k, v, _ in JsonMembers(path, CaptionError, chunk_chars=7)} == data


def test_read_caption_folder_and_csv(tmp_path):
    _write(tmp_path / "caps" / "vid_a.csv", "start,end,text\n0.0,4.0,cut onion\n4.5,8.0,\"salt, pepper\"\n")
    _write(tmp_path / "caps" / "sub" / "vid_c.csv", "text,end,start,extra\nstir,2,1,x\n")
    videos = list(read_caption_folder(tmp_path / "caps"))
    assert [v[0] for v in videos] == ["sub/vid_c", "vid_a"]
    assert videos[1][3] == ["cut onion", "salt, pepper"] and videos[0][1].tolist() == [1.0]
    assert read_caption_csv(tmp_path / "caps" / "vid_a.csv")[0] == "vid_a"


def test_read_meta_and_video_list(tmp_path):
    meta = read_howto100m_meta(_write(tmp_path / "HowTo100M_v1.csv",
                                      "video_id,category_1,category_2,rank,task_id\n"
                                      "-abc,Food and Entertaining,Recipes,3,11967\nxyz,Cars,Repair,1,77\n"))
    assert meta.loc["-abc", "task_id"] == 11967 and meta.loc["xyz", "category_1"] == "Cars"
    listed = read_video_list(_write(tmp_path / "videos.csv", "video_path\n33ocZ8pSh3Q.mp4\nsub/x.y.webm\n"))
    assert listed == [("33ocZ8pSh3Q", "33ocZ8pSh3Q.mp4"), ("sub/x", "sub/x.y.webm")]


def test_clean_asr_rule():
    texts = ["so today we are going", "we are going to make", "to make", "  ", "a cake", "a cake with cream"]
    stats = CaptionStats()
    s, e, t = clean_asr(list(range(6)), list(range(1, 7)), texts, stats=stats)
    # line 2 restates 'we are going' (3 words): trimmed; line 3 wholly restates line 2's end: dropped;
    # the blank line: dropped; 'a cake' shares nothing with 'to make': kept; the last restates 'a cake': trimmed
    assert t == ["so today we are going", "to make", "a cake", "with cream"]
    assert s == [0, 1, 4, 5]
    assert (stats.asr_empty, stats.asr_repeats_dropped, stats.asr_repeats_trimmed) == (1, 1, 2)
    # a single shared word is not treated as a repeat
    assert clean_asr([0, 1], [1, 2], ["cut the", "the onion"])[2] == ["cut the", "the onion"]


def test_build_index_from_captions_end_to_end(tmp_path):
    caps = dict(CAPTIONS, vid_late={"start": [0.0, 50.0], "end": [3.0, 55.0], "text": ["early", "late"]})
    path = _write(tmp_path / "caption.json", json.dumps(caps))
    meta = _write(tmp_path / "meta.csv", "video_id,category_1,category_2,rank,task_id\nvid_a,F,R,1,5\n")
    durations = _write(tmp_path / "dur.csv", "video_id,duration\nvid_late,20\nvid_a,13.5\n")
    videos = _write(tmp_path / "videos.csv", "video_path\nvid_a.mp4\nvid_late.mp4\n")
    index = build_index_from_captions(path, tmp_path / "ix", video_list=videos, meta=meta, durations=durations,
                                      progress=False)
    assert list(index.video_ids) == ["vid_a", "vid_late"]
    assert index.narrations(1)[2] == ["early"] and index.duration(1) == 20.0
    assert index.meta(0)["task_id"] == 5 and index.meta(1)["task_id"] == -1
    stats = index.manifest["build_stats"]
    assert stats["dropped_rows"] == {"beyond_duration": 1} and stats["narrations"] == 4


# -------------------------------------------------------------------------------------- bad captions
def _error(fn, *args, **kwargs) -> CaptionError:
    with pytest.raises(CaptionError) as info:
        result = fn(*args, **kwargs)
        list(result) if result is not None and not isinstance(result, tuple) else result
    return info.value


BAD_ROWS = {  # case -> (CSV row, JSON start, end, text, reason)
    "end_before_start": ("5.0,2.0,stir", 5.0, 2.0, "stir", "end 2.0 < start 5.0"),
    "negative_time": ("-1,2,stir", -1, 2, "stir", "negative"),
    "nan_time": ("nan,2,stir", float("nan"), 2, "stir", "finite"),
    "not_a_number": ("abc,2,stir", "abc", 2, "stir", "finite"),
    "empty_text": ("1,2,", 1, 2, "", "empty text"),
    "duplicate": ("0.0,4.0,cut onion", 0.0, 4.0, "cut onion", "duplicate"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_csv_row_is_named_and_dropped_or_raised(tmp_path, case):
    row, *_rest, reason = BAD_ROWS[case]
    path = _write(tmp_path / "v.csv", f"start,end,text\n0.0,4.0,cut onion\n{row}\n6,7,ok\n")
    err = _error(read_caption_csv, path, strict=True)
    assert err.path == str(path) and err.line == 3 and reason in str(err) and "line 3" in str(err)
    stats = CaptionStats()
    with pytest.warns(UserWarning, match="line 3"):
        video = read_caption_csv(path, stats=stats)
    assert video[3] == ["cut onion", "ok"] and sum(stats.dropped.values()) == 1


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_json_entry_is_named(tmp_path, case):
    _, start, end, text, reason = BAD_ROWS[case]
    data = {"good": CAPTIONS["vid-b"], "bad": {"start": [0.0, start], "end": [4.0, end], "text": ["cut onion", text]}}
    text_of_file = json.dumps(data, indent=1)
    path = _write(tmp_path / "caption.json", text_of_file)
    bad_line = text_of_file.split("\n").index(' "bad": {') + 1
    err = _error(read_caption_json, path, strict=True)
    assert err.line == bad_line and err.key == "video 'bad' entry 1" and reason in str(err)
    with pytest.warns(UserWarning):
        videos = list(read_caption_json(path))
    assert videos[1][3] == ["cut onion"]


def test_non_utf8_text(tmp_path):
    path = _write(tmp_path / "v.csv", b"start,end,text\n0,1,ok\n1,2,caf\xe9\n")
    assert _error(read_caption_csv, path, strict=True).line == 3
    with pytest.warns(UserWarning, match="UTF-8"):
        assert read_caption_csv(path)[3] == ["ok"]
    bad_json = _write(tmp_path / "c.json", b'{"a": {"start": [0],\n "end": [1], "text": ["caf\xe9"]}}')
    err = _error(read_caption_json, bad_json)
    assert err.line == 2 and "UTF-8" in str(err)
    assert "UTF-8" in str(_error(read_caption_csv, _write(tmp_path / "h.csv", b"st\xffart,end,text\n0,1,a\n")))


@pytest.mark.parametrize("content", ["", "start,end,text\n", "\n"])
def test_empty_caption_csv_always_raises(tmp_path, content):
    err = _error(read_caption_csv, _write(tmp_path / "v.csv", content))
    assert err.line in (1, 2) and "v.csv" in str(err)


@pytest.mark.parametrize("content,line", [("", 1), ("{}", 1), ("{\n}", 2), ('{"a": {"start": [], "end": [], "text": []}}', 1)])
def test_empty_caption_json_always_raises(tmp_path, content, line):
    err = _error(read_caption_json, _write(tmp_path / "caption.json", content))
    assert err.line == line and "caption.json" in str(err)


def test_missing_column_always_raises(tmp_path):
    err = _error(read_caption_csv, _write(tmp_path / "v.csv", "start,end,txt\n0,1,a\n"))
    assert err.line == 1 and "missing column" in str(err) and "'text'" in str(err)
    err = _error(read_caption_json, _write(tmp_path / "c.json", '{"a": {"start": [0], "end": [1]}}'))
    assert err.key == "video 'a'" and "missing key" in str(err)
    err = _error(read_video_list, _write(tmp_path / "l.csv", "path\nx.mp4\n"))
    assert "video_path" in str(err) and err.line == 1
    err = _error(read_howto100m_meta, _write(tmp_path / "m.csv", "video_id,category_1,rank,task_id\nx,F,1,2\n"))
    assert "category_2" in str(err)


def test_json_structure_errors(tmp_path):
    err = _error(read_caption_json, _write(tmp_path / "c.json", '{"a": {"start": [0, 1], "end": [1], "text": ["x"]}}'))
    assert "unequal length" in str(err) and err.key == "video 'a'"
    err = _error(read_caption_json, _write(tmp_path / "d.json", '{"a": {"start": [0],\n\n "end": [1] "text": ["x"]}}'))
    assert err.line == 3 and "invalid JSON" in str(err)
    twice = '{"a": {"start": [0], "end": [1], "text": ["x"]},\n"a": {"start": [0], "end": [1], "text": ["x"]}}'
    assert _error(read_caption_json, _write(tmp_path / "e.json", twice)).line == 2
    skipped = CaptionStats()
    assert len(list(read_caption_json(tmp_path / "e.json", skip_bad_videos=True, stats=skipped))) == 1
    assert len(skipped.bad_videos) == 1


def test_odd_values_take_the_checked_path(tmp_path):
    data = {"a": {"start": [True, 1], "end": [2, 3], "text": ["x", "y"]}, "b": {"start": [0], "end": [1], "text": [7]}}
    path = _write(tmp_path / "c.json", json.dumps(data))
    with pytest.warns(UserWarning):
        videos = list(read_caption_json(path))
    assert [(v[0], v[3]) for v in videos] == [("a", ["y"])]
    assert "text is int" in str(_error(read_caption_json, path, video_ids=["b"], strict=True))


def test_unsorted_rows_are_sorted_and_counted(tmp_path):
    stats = CaptionStats()
    path = _write(tmp_path / "v.csv", "start,end,text\n5,6,b\n1,2,a\n5,7,c\n")
    _, starts, ends, texts = read_caption_csv(path, stats=stats)
    assert starts.tolist() == [1, 5, 5] and ends.tolist() == [2, 6, 7] and texts == ["a", "b", "c"]
    assert stats.videos_resorted == 1


def test_too_few_fields_and_skip_bad_videos(tmp_path):
    path = _write(tmp_path / "caps" / "a.csv", "start,end,text\n0,1,x\n2,3\n")
    assert "too few fields" in str(_error(read_caption_csv, path, strict=True))
    _write(tmp_path / "caps" / "b.csv", "")
    stats = CaptionStats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "b.csv" in str(_error(read_caption_folder, tmp_path / "caps"))
        assert [v[0] for v in read_caption_folder(tmp_path / "caps", skip_bad_videos=True, stats=stats)] == ["a"]
    assert len(stats.bad_videos) == 1 and stats.dropped == {"too_few_fields": 1}


@pytest.mark.parametrize("video_path", ["../secret.mp4", "a/../../b.mp4", "/abs/x.mp4", "C:\\x.mp4", "\\\\host\\x.mp4"])
def test_video_paths_escaping_the_root_raise(tmp_path, video_path):
    path = _write(tmp_path / "videos.csv", f"video_path\nok.mp4\n\"{video_path}\"\n")
    err = _error(read_video_list, path)
    assert err.line == 3 and "escapes the video root" in str(err) and "videos.csv" in str(err)
    assert escapes_root(video_path) and not escapes_root("a/b..c.mp4")


def test_duplicate_video_list_rows(tmp_path):
    path = _write(tmp_path / "videos.csv", "video_path\na.mp4\nb.mp4\na.mp4\n")
    assert _error(read_video_list, path, strict=True).line == 4
    with pytest.warns(UserWarning, match="1 bad"):
        assert [v for v, _ in read_video_list(path)] == ["a", "b"]


# ---------------------------------------------------------------------------------------------- tools
def test_prepare_captions_tool(tmp_path):
    _write(tmp_path / "caps" / "a.csv", "start,end,text\n0,1,x\n3,1,bad\n")
    _write(tmp_path / "caps" / "b.csv", "start,end,text\n0,2,y\n")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_captions.py"), str(tmp_path / "caps"),
                             str(tmp_path / "ix"), "--no-progress"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["videos"] == 2 and summary["narrations"] == 2 and summary["dropped_rows_total"] == 1
    assert NarrationIndex.open(tmp_path / "ix").texts(0) == ["x"]
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_captions.py"), str(tmp_path / "caps"),
                          str(tmp_path / "ix2"), "--strict", "--no-progress"], capture_output=True, text=True)
    assert bad.returncode != 0 and "a.csv, line 3" in bad.stderr


@pytest.mark.slow
def test_bench_narrations_small():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_narrations.py"), "--videos", "300",
                             "--narrations", "30000", "--samples", "2000"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["narrations"] == 30000 and len(report["mmap"]["workers"]) == 4 and report["within_few_mb"]
