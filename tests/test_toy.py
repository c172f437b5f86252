"""The synthetic corpus: every file parses in its real format, the content follows the config, and it is
deterministic. One tiny corpus (a few short videos) is rendered per session and shared by the tests."""
import json
import math
import re
import sys
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from datamodules.toy.corpus import (MANIFEST, ToyCorpusConfig, load_manifest, make_toy_corpus, plan_corpus,
                             toy_corpus_exists)
from datamodules.toy.render import SpriteBank, make_scene, render_frames, rgb_to_yuv
from datamodules.toy.story import (ACTIONS, COLOURS, FILLER_LINES, SHAPES, Segment, Timeline, canonical_caption,
                                    content_words, split_object, step_phrase, step_sentence)

TINY = ToyCorpusConfig.small(num_train_videos=3, num_youcook_videos=2, num_youcook_train_videos=1,
                             num_msrvtt_clips=3, num_msrvtt_train_clips=2, num_crosstask_videos=3,
                             num_crosstask_val_videos=1, duration_range=(20.0, 24.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "corpus"
    manifest = make_toy_corpus(root, TINY, progress=False, workers=1)
    return root, manifest


def read_frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def parse_tasks_primary(path):
    """tasks_primary.txt as Zhukov's read_task_info reads it: 6-line blocks, steps split on ','."""
    lines = Path(path).read_text().split("\n")
    tasks = {}
    i = 0
    while i + 4 < len(lines) and lines[i]:
        task_id, k, steps = lines[i], int(lines[i + 3]), lines[i + 4].split(",")
        assert len(steps) == k, f"task {task_id}: K={k} but {len(steps)} steps"
        assert lines[i + 5] == ""
        tasks[task_id] = steps
        i += 6
    return tasks


def test_every_file_parses_in_its_format(tiny):
    root, manifest = tiny
    videos = manifest["videos"]
    # HowTo100M
    listed = pd.read_csv(root / "howto100m/videos.csv")
    assert list(listed.columns) == ["video_path"]
    ids = [p.split(".")[0] for p in listed.video_path]
    assert len(ids) == TINY.num_train_videos and all((root / "videos" / p).is_file() for p in listed.video_path)
    captions = json.loads((root / "howto100m/caption.json").read_text())
    assert sorted(captions) == sorted(ids)
    for vid in ids:
        per_video = pd.read_csv(root / f"howto100m/captions/{vid}.csv")
        assert list(per_video.columns) == ["start", "end", "text"]
        assert per_video.text.tolist() == captions[vid]["text"]
        assert np.allclose(per_video.start, captions[vid]["start"]) and np.allclose(per_video.end, captions[vid]["end"])
        assert (np.diff(per_video.start) >= 0).all() and (per_video.end > per_video.start).all()
    meta = pd.read_csv(root / "howto100m/HowTo100M_v1.csv")
    assert list(meta.columns) == ["video_id", "category_1", "category_2", "rank", "task_id"]
    task_names = pd.read_csv(root / "howto100m/task_ids.csv", sep="\t", header=None, names=["task_id", "name"])
    assert set(meta.task_id) <= set(task_names.task_id) and len(task_names) == TINY.num_tasks
    # YouCook2
    val = pd.read_csv(root / "youcook2/validation_youcook.csv")
    assert list(val.columns) == ["end", "start", "task", "text", "video_id"]
    assert val.start.dtype.kind == "i" and val.end.dtype.kind == "i" and (val.end > val.start).all()
    for row in val.itertuples():
        assert (root / f"youcook2/validation/{row.task}/{row.video_id}.mp4").is_file()
    database = json.loads((root / "youcook2/youcookii_annotations_trainval.json").read_text())["database"]
    assert sorted(v["subset"] for v in database.values()) == ["training"] + ["validation"] * 2
    for vid, entry in database.items():
        folder = "training" if entry["subset"] == "training" else "validation"
        assert (root / f"youcook2/{folder}/{entry['recipe_type']}/{vid}.mp4").is_file()
        assert set(entry) == {"annotations", "duration", "subset", "recipe_type", "video_url"}
        for ann in entry["annotations"]:
            assert set(ann) == {"id", "segment", "sentence"} and 0 <= ann["segment"][0] < ann["segment"][1]
    # MSR-VTT
    test = pd.read_csv(root / "msrvtt/msrvtt_test.csv")
    assert list(test.columns) == ["key", "vid_key", "video_id", "sentence"]
    assert test.key.tolist() == [f"ret{i}" for i in range(len(test))]
    assert all(v.startswith("video") and k == "msr" + v[5:] for k, v in zip(test.vid_key, test.video_id))
    data = json.loads((root / "msrvtt/MSRVTT_data.json").read_text())
    train_ids = pd.read_csv(root / "msrvtt/MSRVTT_train.9k.csv").video_id.tolist()
    assert len(train_ids) == TINY.num_msrvtt_train_clips and not set(train_ids) & set(test.video_id)
    for v in data["videos"]:
        assert {"video_id", "category", "start time", "end time", "split", "url", "id"} <= set(v)
        assert (root / f"msrvtt/videos/{v['video_id']}.mp4").is_file()
        caps = [s["caption"] for s in data["sentences"] if s["video_id"] == v["video_id"]]
        assert len(caps) == TINY.msrvtt_captions_per_video
    test_caps = {s["caption"] for s in data["sentences"] if s["video_id"] in set(test.video_id)}
    assert set(test.sentence) <= test_caps
    # CrossTask
    tasks = parse_tasks_primary(root / "crosstask/tasks_primary.txt")
    assert len(tasks) == TINY.num_tasks
    listed = pd.read_csv(root / "crosstask/videos.csv", header=None, names=["task", "video", "url"], dtype=str)
    val_listed = pd.read_csv(root / "crosstask/videos_val.csv", header=None, names=["task", "video", "url"], dtype=str)
    assert len(listed) == TINY.num_crosstask_videos and set(val_listed.video) <= set(listed.video)
    assert all((root / f"crosstask/videos/{v}.mp4").is_file() for v in listed.video)
    # every video decodes, with the frames, size and rate the manifest says
    for vid, entry in videos.items():
        with av.open(str(root / entry["path"])) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            assert (stream.width, stream.height) == (TINY.width, TINY.height)
            assert float(stream.average_rate) == TINY.fps
            count = sum(1 for _ in container.decode(video=0))
        assert count == entry["num_frames"] == round(entry["duration"] * TINY.fps), vid


def test_decord_reads_the_videos(tiny):
    decord = pytest.importorskip("decord")
    root, manifest = tiny
    entry = next(iter(manifest["videos"].values()))
    reader = decord.VideoReader(str(root / entry["path"]))
    assert len(reader) == entry["num_frames"] and abs(reader.get_avg_fps() - TINY.fps) < 1e-6
    batch = reader.get_batch([0, len(reader) // 2, len(reader) - 1]).asnumpy()
    assert batch.shape == (3, TINY.height, TINY.width, 3)
    assert np.abs(batch[1].astype(int) - read_frames(root / entry["path"])[len(reader) // 2]).max() <= 2


def test_same_seed_same_corpus_other_seed_other_corpus(tiny, tmp_path):
    root, manifest = tiny
    cfg = replace(TINY, num_youcook_videos=0, num_youcook_train_videos=0, num_msrvtt_clips=1,
                  num_msrvtt_train_clips=0, num_crosstask_videos=0, num_crosstask_val_videos=0)
    again = make_toy_corpus(tmp_path / "again", cfg, progress=False, workers=1)
    assert again["vocabulary"] == manifest["vocabulary"]
    first_captions = json.loads((root / "howto100m/caption.json").read_text())
    assert json.loads((tmp_path / "again/howto100m/caption.json").read_text()) == first_captions
    vid = next(v for v, e in again["videos"].items() if e["split"] == "howto100m")
    assert again["videos"][vid] == manifest["videos"][vid]
    a, b = root / manifest["videos"][vid]["path"], tmp_path / "again" / again["videos"][vid]["path"]
    assert np.array_equal(read_frames(a), read_frames(b))
    assert a.read_bytes() == b.read_bytes()
    _, other = plan_corpus(replace(TINY, seed=TINY.seed + 1))
    texts = [ln.text for p in other if p.split == "howto100m" for ln in p.timeline.lines]
    assert texts != [t for v in first_captions.values() for t in v["text"]]


def test_parallel_rendering_writes_the_same_files(tmp_path):
    cfg = replace(TINY, num_train_videos=2, num_youcook_videos=0, num_youcook_train_videos=0, num_msrvtt_clips=2,
                  num_msrvtt_train_clips=0, num_crosstask_videos=0, num_crosstask_val_videos=0)
    one = make_toy_corpus(tmp_path / "one", cfg, progress=False, workers=1)
    two = make_toy_corpus(tmp_path / "two", cfg, progress=False, workers=2)
    assert one["files"] == two["files"]
    for rel in one["files"]:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def _narrated(cfg):
    _, plans = plan_corpus(cfg)
    return [p for p in plans if p.split == "howto100m"]


PLAN_ONLY = dict(num_train_videos=150, num_youcook_videos=0, num_youcook_train_videos=0, num_msrvtt_clips=0,
                 num_msrvtt_train_clips=0, num_crosstask_videos=0, num_crosstask_val_videos=0)


@pytest.mark.parametrize("offset,filler", [(3.0, 0.4), (0.5, 0.25), (6.0, 0.0)])
def test_narration_offsets_and_filler_fraction_follow_the_config(offset, filler):
    plans = _narrated(ToyCorpusConfig(narration_offset=offset, filler_fraction=filler, **PLAN_ONLY))
    lines = [ln for p in plans for ln in p.timeline.lines]
    step_lines = [ln for ln in lines if ln.segment >= 0]
    offsets = np.array([ln.offset for ln in step_lines])
    assert np.abs(offsets).max() <= offset + 0.011
    if offset >= 3.0:  # spread out, not all clamped to zero
        assert np.abs(offsets).mean() > 0.3 * offset
    fraction = 1 - len(step_lines) / len(lines)
    assert abs(fraction - filler) < 0.03, fraction
    for p in plans:
        for ln in p.timeline.lines:
            assert 0 <= ln.start < ln.end <= p.timeline.duration + 1e-9
            if ln.segment >= 0:
                seg = p.timeline.segments[ln.segment]
                assert seg.start <= ln.anchor <= seg.end
                colour, shape = split_object(seg.object)
                about = set(COLOURS[colour][0]) | set(SHAPES[shape]) | {w for f in ACTIONS[seg.action] for w in f}
                assert set(ln.text.split()) & about, ln.text


def test_fillers_say_nothing_about_the_video():
    words = content_words()
    for line in FILLER_LINES:
        assert not set(re.findall(r"[\w']+", line)) & words, line


def test_canonical_step_words_are_covered_by_the_narrations():
    cfg = ToyCorpusConfig(**{**PLAN_ONLY, "num_train_videos": 160})
    tasks, plans = plan_corpus(cfg)
    vocab = {w for p in plans for ln in p.timeline.lines for w in re.findall(r"[\w']+", ln.text)}
    for task in tasks:
        for obj, action in task.steps:
            for text in (step_phrase(obj, action), step_sentence(obj, action)):
                assert set(text.split()) <= vocab, text
        two_steps = [Segment(k, obj, action, 0.0, 1.0) for k, (obj, action) in enumerate(task.steps[:2])]
        assert set(canonical_caption(two_steps).split()) <= vocab


def test_step_segments_lie_inside_the_videos(tiny):
    root, manifest = tiny
    for vid, entry in manifest["videos"].items():
        steps = entry["steps"]
        assert steps, vid
        for a, b in zip(steps, steps[1:]):
            assert a["end"] <= b["start"]
        for s in steps:
            assert 0 <= s["start"] < s["end"] <= entry["duration"]
    val = pd.read_csv(root / "youcook2/validation_youcook.csv")
    for row in val.itertuples():
        assert 0 <= row.start < row.end <= manifest["videos"][row.video_id]["duration"]
    _, plans = plan_corpus(ToyCorpusConfig(**{**PLAN_ONLY, "num_msrvtt_clips": 50}))
    for p in plans:
        lo, hi = (0, math.inf) if p.split.startswith("msrvtt") else ToyCorpusConfig().duration_range
        assert lo <= p.timeline.duration <= hi
        assert all(0 <= s.start < s.end <= p.timeline.duration for s in p.timeline.segments)
        if p.task is not None:  # steps follow the task order
            assert [s.step for s in p.timeline.segments] == sorted(s.step for s in p.timeline.segments)


def test_crosstask_annotations_are_one_based_and_match_the_step_lists(tiny):
    root, manifest = tiny
    tasks = parse_tasks_primary(root / "crosstask/tasks_primary.txt")
    listed = pd.read_csv(root / "crosstask/videos.csv", header=None, names=["task", "video", "url"], dtype=str)
    vocab_tasks = {t["task_id"]: t for t in manifest["vocabulary"]["tasks"]}
    for row in listed.itertuples():
        ann = pd.read_csv(root / f"crosstask/annotations/{row.task}_{row.video}.csv", header=None,
                          names=["step", "start", "end"])
        assert ann.step.dtype.kind == "i" and ann.step.min() >= 1 and ann.step.max() <= len(tasks[row.task])
        truth = manifest["videos"][row.video]["steps"]
        assert ann.step.tolist() == [s["step"] + 1 for s in truth]
        assert np.allclose(ann.start, [s["start"] for s in truth]) and (ann.end > ann.start).all()
        for k, s in zip(ann.step, truth):
            assert tasks[row.task][k - 1] == step_phrase(s["object"], s["action"])
        assert [st["phrase"] for st in vocab_tasks[row.task]["steps"]] == tasks[row.task]


def _object_mask(frame_yuv, obj):
    target = rgb_to_yuv(np.asarray(COLOURS[split_object(obj)[0]][1], np.float32))
    return np.abs(frame_yuv.astype(np.float32) - target).max(axis=-1) < 20


@pytest.fixture(scope="module")
def bank():
    return SpriteBank(TINY.object_radius * TINY.height)


@pytest.mark.parametrize("obj", ["red square", "yellow circle", "blue triangle", "green cross", "orange star",
                                 "purple ring"])
def test_actions_are_visually_distinct(obj, bank):
    cfg = replace(TINY, distractor_prob=0.0, idle_prob=0.0, seconds_per_cut=0.0)
    stats = {}
    for action in ACTIONS:
        timeline = Timeline(3.0, [Segment(0, obj, action, 0.0, 3.0)])
        scene = make_scene(timeline, np.random.default_rng(0), cfg.width, cfg.height, cfg)
        masks = [_object_mask(f, obj) for f in render_frames(scene, 3.0, cfg.width, cfg.height, 10, bank)]
        counts = np.array([m.sum() for m in masks])
        centres = np.array([np.argwhere(m).mean(axis=0) if m.any() else (np.nan, np.nan) for m in masks])
        # how much of the object's pixels differ between frames half a second apart
        change = np.mean([(a ^ b).sum() / max((a | b).sum(), 1) for a, b in zip(masks, masks[5:])])
        stats[action] = (counts, np.nanstd(centres, axis=0), change)
    counts, (sy, sx), _ = stats["slide"]
    assert sx > 8 and sy < 1
    counts, (sy, sx), _ = stats["bounce"]
    assert sy > 4 and sx < 1
    counts, (sy, sx), change = stats["shake"]
    assert 0.5 < max(sx, sy) < 6 and change > 0.05
    counts, _, _ = stats["grow"]
    assert counts.max() > 1.8 * counts.min() > 0
    counts, _, _ = stats["flash"]
    assert (counts == 0).sum() >= 5 and (counts > 100).sum() >= 5
    counts, (sy, sx), change = stats["spin"]
    assert max(sx, sy) < 2 and change > 0.12 and counts.min() > 100


def test_toy_corpus_exists_detects_incomplete_corpora(tmp_path):
    cfg = replace(TINY, num_train_videos=1, num_youcook_videos=1, num_youcook_train_videos=0, num_msrvtt_clips=1,
                  num_msrvtt_train_clips=0, num_crosstask_videos=0, num_crosstask_val_videos=0)
    root = tmp_path / "toy"
    assert not toy_corpus_exists(root)
    manifest = make_toy_corpus(root, cfg, progress=False, workers=1)
    assert toy_corpus_exists(root) and toy_corpus_exists(root, cfg)
    assert not toy_corpus_exists(root, replace(cfg, seed=5))
    assert not list(tmp_path.glob(".toy.*"))  # no temporary folders left behind
    video = root / next(iter(manifest["videos"].values()))["path"]
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    assert not toy_corpus_exists(root)
    video.unlink()
    assert not toy_corpus_exists(root)
    make_toy_corpus(root, cfg, progress=False, workers=1)  # an incomplete corpus is replaced
    assert toy_corpus_exists(root) and video.read_bytes() == data
    (root / MANIFEST).write_text("{not json")
    assert not toy_corpus_exists(root)
    other = tmp_path / "not_a_corpus"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not_a_corpus"):
        make_toy_corpus(other, cfg, progress=False)
    assert (other / "thesis.tex").read_text() == "precious"
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(other)


def test_extended_palette_and_unique_test_captions(tmp_path):
    """A larger palette (6 colours x 6 shapes) reaches tasks, narrations, captions and the manifest; with
    unique_test_captions every YouCook2-style validation sentence names exactly one clip."""
    from datamodules.toy.story import all_objects

    cfg = replace(TINY, num_colours=6, num_shapes=6, num_tasks=12, num_youcook_videos=6, num_train_videos=2,
                  num_crosstask_videos=1, num_msrvtt_clips=1, num_msrvtt_train_clips=0, num_youcook_train_videos=0,
                  unique_test_captions=True)
    tasks, plans = plan_corpus(cfg)
    used = {obj for t in tasks for obj, _ in t.steps}
    assert used <= set(all_objects(6, 6)) and used - set(all_objects(4, 4))   # new objects are used
    root = tmp_path / "c"
    manifest = make_toy_corpus(root, cfg, progress=False, workers=1)
    assert len(manifest["vocabulary"]["objects"]) == 36 and "ring" in manifest["vocabulary"]["shapes"]
    val = pd.read_csv(root / "youcook2" / "validation_youcook.csv")
    assert val.text.is_unique and len(val) > 0
    all_steps = [canonical_caption([s]) for p in plans if p.split == "youcook2_val" for s in p.timeline.segments]
    assert sorted(val.text) == sorted(set(all_steps))          # one clip per distinct sentence, none dropped
    first = {}
    for p in plans:
        for s in (p.timeline.segments if p.split == "youcook2_val" else []):
            first.setdefault(canonical_caption([s]), p.video_id)
    assert all(first[t] == v for t, v in zip(val.text, val.video_id))   # the first clip in video order is kept


def test_default_palette_is_the_original_four_by_four():
    from datamodules.toy.story import all_objects

    assert all_objects() == all_objects(4, 4) and len(all_objects()) == 16
    assert {split_object(o)[1] for o in all_objects()} == {"circle", "square", "triangle", "cross"}
    with pytest.raises(ValueError, match="colours"):
        ToyCorpusConfig(num_colours=7)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="filler_fraction"):
        ToyCorpusConfig(filler_fraction=1.0)
    with pytest.raises(ValueError, match="duration_range"):
        ToyCorpusConfig(duration_range=(30.0, 20.0))
    with pytest.raises(ValueError, match="even"):
        ToyCorpusConfig(width=161)


def test_command_line_tool(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import make_toy_corpus as tool

    args = [str(tmp_path / "c"), "--quiet", "--workers", "1", "--set", "num_train_videos=1", "num_youcook_videos=1",
            "num_youcook_train_videos=0", "num_msrvtt_clips=1", "num_msrvtt_train_clips=0",
            "num_crosstask_videos=1", "num_crosstask_val_videos=0", "duration_range=(20.0, 22.0)"]
    assert tool.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["howto100m"] == 1 and summary["frames"] > 0 and toy_corpus_exists(tmp_path / "c")
    assert tool.main(args) == 0 and "exists" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="num_train_video'"):
        tool.main([str(tmp_path / "d"), "--set", "num_train_video=3"])
