"""Fine-tuning: YouCook2 / MSR-VTT training datamodules on written fixtures, and fine-tuning from a saved checkpoint."""
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, tiny_run_overrides
from datamodules.finetune import CaptionedClips, FinetuneDataModule
from datamodules.video.base import DecodeError
from datamodules.video.pyav import PyAVReader
from milnce.config import DataConfig, load_config
from milnce.text.word_tokenizer import WordTokenizer

SIZE = 32


def write_video(path: Path, seconds: float, fps: int = 8, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for k in range(int(seconds * fps)):
            img = np.full((32, 48, 3), (shade + 4 * k) % 256, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, "rgb24")))
        out.mux(stream.encode(None))
    return path


def data_cfg(dataset, root, **kw):
    base = dict(dataset=dataset, root=str(root), num_candidates=1, num_frames=4, fps=4.0, resize=SIZE, crop=SIZE,
                batch_size=2, num_workers=0, fractional_seek=True)
    base.update(kw)
    return OmegaConf.merge(OmegaConf.structured(DataConfig), base)


@pytest.fixture(scope="module")
def youcook_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("youcook2")
    database = {
        "vidA": {"subset": "training", "recipe_type": "101", "duration": 6.0, "annotations": [
            {"id": 0, "segment": [0, 3], "sentence": "Crack the eggs"},
            {"id": 1, "segment": [3, 4], "sentence": "whisk the eggs quickly"}]},
        "vidB": {"subset": "training", "recipe_type": "102", "duration": 5.0, "annotations": [
            {"id": 0, "segment": [1, 5], "sentence": "fry the onion"}]},
        "vidGone": {"subset": "training", "recipe_type": "102", "duration": 5.0, "annotations": [
            {"id": 0, "segment": [0, 2], "sentence": "never on disk"}]},
        "vidVal": {"subset": "validation", "recipe_type": "101", "duration": 5.0, "annotations": [
            {"id": 0, "segment": [0, 2], "sentence": "validation only words"}]},
    }
    (root / "youcookii_annotations_trainval.json").write_text(json.dumps({"database": database}))
    write_video(root / "training" / "101" / "vidA.mp4", 6.0)
    write_video(root / "training" / "102" / "vidB.mp4", 5.0, shade=100)
    write_video(root / "validation" / "101" / "vidVal.mp4", 5.0)
    return root


@pytest.fixture(scope="module")
def msrvtt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt")
    sentences = [{"caption": f"clip {v} caption {j}", "video_id": f"video{v}", "sen_id": 20 * v + j}
                 for v in range(3) for j in range(20)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo1\n")   # video2 is a test video
    write_video(root / "videos" / "video0.mp4", 4.0)
    write_video(root / "videos" / "video1.mp4", 3.0, shade=60)
    write_video(root / "videos" / "video2.mp4", 3.0)
    return root


def test_youcook2_training_segments_batches_and_vocabulary(youcook_root):
    dm = FinetuneDataModule(data_cfg("youcook2", youcook_root), progress=False)
    dm.setup()
    assert [(s.start, s.end, s.captions) for s in dm.spans] == [
        (0.0, 3.0, ("Crack the eggs",)), (3.0, 4.0, ("whisk the eggs quickly",)), (1.0, 5.0, ("fry the onion",))]
    assert [s.video for s in dm.spans] == [0, 0, 1]
    assert dm.missing == ["vidGone"]
    vocab = dm.vocabulary()
    assert vocab == sorted({"crack", "the", "eggs", "whisk", "quickly", "fry", "onion"})  # training captions only
    dm.tokenizer = WordTokenizer(vocab, max_words=6)
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 1, 3, 4, SIZE, SIZE) and batch["video"].dtype == torch.uint8
    assert batch["text"].shape == (2, 1, 1, 6) and batch["video_index"].shape == (2, 1)
    assert batch["failures"].tolist() == [0, 0]


def test_clip_start_stays_inside_the_segment(youcook_root):
    dm = FinetuneDataModule(data_cfg("youcook2", youcook_root), progress=False)
    dm.setup()
    ds = CaptionedClips(dm.spans, dm.clip_source(dm.paths), WordTokenizer(["x"]), num_frames=4, fps=4.0, crop=SIZE, flip=True,
                        seed=0)
    rng = np.random.default_rng(0)
    long_seg, short_seg = dm.spans[2], dm.spans[1]         # 1–5 s and 3–4 s; the window is 1 s
    starts = [ds.clip_start(long_seg, rng) for _ in range(200)]
    assert min(starts) >= 1.0 and max(starts) <= 4.0 and np.std(starts) > 0.5
    assert {ds.clip_start(short_seg, rng) for _ in range(5)} == {3.0}
    ds.fractional_seek = False
    assert all(float(s).is_integer() for s in (ds.clip_start(long_seg, rng) for _ in range(20)))


def test_msrvtt_9k_videos_one_random_caption_per_epoch(msrvtt_root):
    dm = FinetuneDataModule(data_cfg("msrvtt", msrvtt_root, cache_in_memory=True), progress=False)
    dm.setup()
    assert len(dm.spans) == 2 and all(len(s.captions) == 20 for s in dm.spans)
    tok = WordTokenizer(dm.vocabulary(), max_words=4)
    dm.tokenizer = tok
    ds = dm.train_dataloader().dataset
    ids = {tuple(ds[epoch * len(ds) + 1]["text"].flatten().tolist()) for epoch in range(8)}
    allowed = {tuple(tok([f"clip 1 caption {j}"])["input_ids"][0].tolist()) for j in range(20)}
    assert ids <= allowed and len(ids) > 1                  # another caption of video1 in different epochs
    assert ds[0]["text"].tolist() == ds[0]["text"].tolist()  # reproducible from (seed, epoch, item)
    assert ds[0]["video"].shape == (1, 3, 4, SIZE, SIZE)


def test_decode_failure_is_replaced_and_counted(msrvtt_root, tmp_path):
    root = tmp_path / "m"
    (root / "videos").mkdir(parents=True)
    for name in ("MSRVTT_data.json", "MSRVTT_train.9k.csv"):
        (root / name).write_bytes((msrvtt_root / name).read_bytes())
    (root / "videos" / "video0.mp4").write_bytes(b"not a video at all" * 10)
    (root / "videos" / "video1.mp4").write_bytes((msrvtt_root / "videos" / "video1.mp4").read_bytes())
    dm = FinetuneDataModule(data_cfg("msrvtt", root), progress=False)
    dm.tokenizer = WordTokenizer(dm.vocabulary())
    ds = dm.train_dataloader().dataset
    item = ds[0]                                            # video0 cannot be decoded
    assert item["failures"] >= 1 and "video0.mp4" in item["failed"]
    assert item["video_index"].tolist() == [1]


def test_bad_annotations_name_the_file_and_line(msrvtt_root, tmp_path):
    (tmp_path / "MSRVTT_data.json").write_bytes((msrvtt_root / "MSRVTT_data.json").read_bytes())
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\nvideo77\n")
    with pytest.raises(ValueError, match=r"MSRVTT_train\.9k\.csv:3: video 'video77' has no captions"):
        FinetuneDataModule(data_cfg("msrvtt", tmp_path)).setup()
    with pytest.raises(ValueError, match="num_candidates"):
        FinetuneDataModule(data_cfg("msrvtt", tmp_path, num_candidates=4))


def test_finetune_from_a_saved_checkpoint(tiny_toy_corpus, tmp_path):
    from milnce.checkpoint import read_state_dict
    from milnce.train.run import train

    pre = tmp_path / "pre"
    train(load_config(ROOT / "conf" / "demo.yaml", tiny_run_overrides(tiny_toy_corpus, pre) + [
        "trainer.max_steps=2", "eval.retrieval=[]", "eval.crosstask=null"]))
    init = pre / "checkpoints" / "last.ckpt"
    before, meta = read_state_dict(init)

    ft = tmp_path / "ft"
    overrides = [o for o in tiny_run_overrides(tiny_toy_corpus, ft) if not o.startswith(("data.root", "eval."))]
    metrics = train(load_config(ROOT / "conf" / "finetune_youcook2.yaml", overrides + [
        f"data.root={tiny_toy_corpus / 'youcook2'}", f"model.init_from={init}", "trainer.max_steps=2",
        "data.batch_size=2", "optim.warmup_steps=0", "optim.lr=0.01",
        "eval.retrieval.0.num_windows=2", "eval.retrieval.0.num_frames=4", "eval.retrieval.0.size=32"]))
    assert metrics["train/steps"] == 2 and "youcook2/R1" in metrics
    assert (ft / "checkpoints" / "best.ckpt").is_file()      # kept by youcook2/R1, logged by the evaluation
    after, meta_ft = read_state_dict(ft / "checkpoints" / "last.ckpt")
    assert meta_ft["milnce"]["vocab"] == meta["milnce"]["vocab"]  # the checkpoint's words, not the captions'

    def changed(key):
        return not torch.equal(before[key], after[key])

    conv = [k for k in before if k.startswith("video_tower.") and before[k].dim() == 5]   # Conv3d weights
    assert conv and any(changed(k) for k in conv)              # trained
    bn = [k for k in before if k.startswith("video_tower.") and k.endswith("running_mean")]
    assert bn and not any(changed(k) for k in bn)             # freeze_video_bn
    words = [k for k in before if k.startswith("text_tower.") and "word_embd" in k]
    assert words and not any(changed(k) for k in words)       # freeze_embedding


@pytest.mark.parametrize("timeout", [0.2, 0])
def test_finetuning_honours_decode_timeout(youcook_root, monkeypatch, timeout):
    """data.decode_timeout reaches the fine-tuning clip reads (0 = no deadline), as it does for pretraining."""
    dm = FinetuneDataModule(data_cfg("youcook2", youcook_root, decode_timeout=timeout, backend="pyav"), progress=False)
    dm.setup()
    clips = dm.clip_source(dm.paths)
    real = PyAVReader._frames

    def slow(self, *args, **kwargs):
        time.sleep(1.0)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PyAVReader, "_frames", slow)
    t0 = time.monotonic()
    if timeout:
        with pytest.raises(DecodeError, match="timed out after 0.2s"):
            clips.clip(0, 0.0, 4, 4.0)
        assert time.monotonic() - t0 < 0.9
    else:
        assert clips.clip(0, 0.0, 4, 4.0).shape[0] == 4
        assert time.monotonic() - t0 >= 1.0
