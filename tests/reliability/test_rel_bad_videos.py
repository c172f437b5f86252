"""Bad videos through the training dataset (HowTo100MDataModule → NarratedClips → DataLoader).

A video that cannot give a clip is replaced by another video's clip and counted (batch["failures"], the names in
batch["failed"]); a video that is odd but decodable gives its own clip; no emitted clip or frame is all zeros.
The per-decode deadline (data.decode_timeout) turns a hanging read into a counted failure.
"""
import os
import time

import pytest
import torch

from datamodules.howto100m import HowTo100MDataModule
from reliability_media import (BAD_VIDEO_CASES, ODD_VIDEO_CASES, assert_real_clip, data_config, toy_tokenizer,
                               write_bad_video, write_corpus, write_video)

EPOCHS = 3  # each video's item is drawn in this many epochs (different narrations and seeks)


def _datamodule(root, **overrides):
    dm = HowTo100MDataModule(data_config(root, **overrides), tokenizer=toy_tokenizer, progress=False)
    dm.setup("fit")
    dm.train_dataloader()  # builds dm.dataset
    return dm


def _draw(dataset, item):
    return [dataset[epoch * len(dataset) + item] for epoch in range(EPOCHS)]


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_corpus")
    videos = {case: None for case in BAD_VIDEO_CASES if case != "window_past_the_end"}
    videos["window_past_the_end"] = dict(num_frames=30)               # 3 s long, narrated at 20-25 s
    paths = write_corpus(root, videos, narrations={"window_past_the_end": [(20.0, 25.0, "plate the dish")]})
    for case in videos:
        if videos[case] is None:
            write_bad_video(root / "videos" / f"{case}.mp4", case, paths["good0"])
    return root


@pytest.fixture(scope="module")
def odd_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd_corpus")
    write_corpus(root, dict(ODD_VIDEO_CASES),
                 narrations={"single_frame": [(0.0, 0.1, "one frame only")],
                             "shorter_than_clip": [(0.0, 0.5, "a very short video")]})
    return root


@pytest.mark.parametrize("case", BAD_VIDEO_CASES)
def test_bad_video_is_replaced_and_counted(bad_corpus, case):
    dm = _datamodule(bad_corpus)
    ds = dm.dataset
    item = list(ds.index.video_ids).index(case)
    for out in _draw(ds, item):
        assert out["failures"] >= 1
        assert f"{case}.mp4" in out["failed"].splitlines()[0]
        assert int(out["video_index"][0]) != item
        assert_real_clip(out["video"])


@pytest.mark.parametrize("case", sorted(ODD_VIDEO_CASES))
def test_odd_but_decodable_video_gives_its_own_clip(odd_corpus, case):
    dm = _datamodule(odd_corpus)
    ds = dm.dataset
    item = list(ds.index.video_ids).index(case)
    for out in _draw(ds, item):
        assert out["failures"] == 0, out["failed"]
        assert int(out["video_index"][0]) == item
        assert out["video"].shape[-4:] == (3, 4, 32, 32)
        assert_real_clip(out["video"])


def test_whole_epochs_over_a_broken_corpus_count_every_failure(bad_corpus, tmp_path):
    """Every item of 3 epochs through the DataLoader: each batch full, failures counted per item, no black clip."""
    dm = _datamodule(bad_corpus, batch_size=3)
    loader = dm.train_dataloader()
    items = failures = 0
    named = set()
    for epoch in range(EPOCHS):
        dm.sampler.set_epoch(epoch)
        for batch in loader:
            assert batch["video"].shape[0] == 3
            assert_real_clip(batch["video"])
            items += batch["video"].shape[0]
            failures += int(batch["failures"].sum())
            named |= {line.split(": ", 1)[0].rsplit("/", 1)[-1] for block in batch["failed"]
                      for line in block.splitlines()}
    broken = len(BAD_VIDEO_CASES)
    assert items == EPOCHS * (len(dm.dataset) // 3) * 3
    assert failures >= EPOCHS * broken - 3 * EPOCHS  # at most the dropped last partial batch goes unseen
    assert named <= {f"{c}.mp4" for c in BAD_VIDEO_CASES}
    print(f"\n{items} items over {EPOCHS} epochs of {len(dm.dataset)} videos ({broken} broken): "
          f"{failures} failed decodes counted and replaced, 0 all-zero clips")


def test_in_memory_corpus_replaces_the_same_videos(bad_corpus):
    dm = _datamodule(bad_corpus, cache_in_memory=True, fps=2.0)
    ds = dm.dataset
    assert set(os.path.basename(p) for p in ds.clips.failed) == \
        {f"{c}.mp4" for c in BAD_VIDEO_CASES if c != "window_past_the_end"}
    for case in BAD_VIDEO_CASES:
        item = list(ds.index.video_ids).index(case)
        for out in _draw(ds, item):
            assert out["failures"] >= 1 and int(out["video_index"][0]) != item
            assert_real_clip(out["video"])


# -- a read that hangs ----------------------------------------------------------------------------------------------
def _unblock(fifo):
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.fixture
def hanging_corpus(tmp_path):
    root = tmp_path / "hang"
    write_corpus(root, {"stuck": None})
    fifo = str(root / "videos" / "stuck.mp4")
    os.mkfifo(fifo)  # open() for reading blocks until a writer appears: a stalled network file system
    yield root
    _unblock(fifo)


def test_hanging_read_is_a_counted_failure_not_a_stalled_run(hanging_corpus):
    dm = _datamodule(hanging_corpus, decode_timeout=0.5)
    ds = dm.dataset
    item = list(ds.index.video_ids).index("stuck")
    t0 = time.monotonic()
    out = ds[item]
    elapsed = time.monotonic() - t0
    assert out["failures"] == 1 and "timed out" in out["failed"] and "stuck.mp4" in out["failed"]
    assert int(out["video_index"][0]) != item
    assert_real_clip(out["video"])
    assert elapsed < 5.0, elapsed


def test_hanging_read_inside_a_dataloader_worker(hanging_corpus):
    dm = _datamodule(hanging_corpus, decode_timeout=0.5, num_workers=1, batch_size=4)
    loader = dm.train_dataloader()
    t0 = time.monotonic()
    batches = list(torch.utils.data.DataLoader(dm.dataset, batch_size=4, sampler=dm.sampler, num_workers=1,
                                               timeout=30))
    assert len(batches) == 1 and len(loader) == 1
    batch = batches[0]
    assert int(batch["failures"].sum()) == 1 and "timed out" in "".join(batch["failed"])
    assert_real_clip(batch["video"])
    assert time.monotonic() - t0 < 30


def test_decode_timeout_reaches_the_reader(tmp_path):
    root = tmp_path / "c"
    write_corpus(root, {})
    assert _datamodule(root, decode_timeout=2.5).dataset.clips.timeout == 2.5
    assert _datamodule(root, decode_timeout=0).dataset.clips.timeout is None
    from datamodules.video.decode import CLIP_TIMEOUT
    assert _datamodule(root).dataset.clips.timeout == CLIP_TIMEOUT
