"""The feature-based path (HowTo100M ICCV'19): caption merging, clip pooling, feature files, gated tower,
FeatureDataModule batches and replacement, feature retrieval evaluation, and a few max-margin training steps."""
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from datamodules.feature_store import (FeatureError, FeatureSource, load_features, merge_captions, pool_clip,
                                       row_range)


# ------------------------------------------------------------------------------------------- merge_captions
def test_merge_keeps_a_caption_already_long_enough():
    assert merge_captions([0, 10], [6, 12], 0, 5.0) == (0, 0, [0])


def test_merge_goes_toward_the_shorter_span():
    starts, ends = [0.0, 4.0, 5.0, 6.0], [1.0, 5.0, 6.0, 7.5]
    # from 2: left span end[2]-start[1] = 2, right span end[3]-start[2] = 2.5 → left; then [1,2]: left 6, right 3.5
    assert merge_captions(starts, ends, 2, 3.0) == (1, 3, [2, 1, 3])


def test_merge_tie_goes_left_when_min_time_positive():
    starts, ends = [0.0, 2.0, 4.0], [2.0, 4.0, 6.0]
    assert merge_captions(starts, ends, 1, 4.0) == (0, 1, [1, 0])


def test_merge_with_min_time_zero_flips_the_comparison():
    # the loop only runs for a negative-length caption when min_time = 0; the original then goes left when the
    # left span is >= the right one (the longer side), else right
    assert merge_captions([0.0, 3.0, 2.0], [1.0, 2.5, 3.5], 1, 0.0) == (0, 1, [1, 0])    # 2.5 >= 0.5: left
    assert merge_captions([2.8, 3.0, 2.0], [2.9, 2.5, 4.0], 1, 0.0) == (1, 2, [1, 2])    # -0.3 < 1.0: right
    assert merge_captions([2.8, 3.0, 2.0], [2.9, 2.5, 4.0], 1, 0.1) == (0, 2, [1, 0, 2])  # min_time > 0: left first


def test_merge_at_the_edges_and_when_everything_is_too_short():
    starts, ends = [0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]
    assert merge_captions(starts, ends, 0, 2.5) == (0, 2, [0, 1, 2])
    assert merge_captions(starts, ends, 3, 2.5) == (1, 3, [3, 2, 1])
    assert merge_captions(starts, ends, 1, 10.0) == (0, 3, [1, 0, 2, 3])   # runs out of captions: stops
    with pytest.raises(IndexError):
        merge_captions(starts, ends, 4, 1.0)


# ------------------------------------------------------------------------------------------- pooling
def test_row_range_is_int_start_to_int_end_plus_one():
    assert row_range(2.5, 4.2, 1.0) == (2, 5)
    assert row_range(2.5, 4.2, 1.5) == (3, 7)
    assert row_range(0.0, 0.0, 1.5) == (0, 1)


def test_pool_clip_max_pools_normalises_and_concatenates():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(15, 2))
    got = pool_clip([a, b], [1.0, 1.5], 2.5, 4.2)
    ea, eb = a[2:5].max(0), b[3:7].max(0)
    want = np.concatenate([ea / np.linalg.norm(ea), eb / np.linalg.norm(eb)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got[:3]), 1.0, rtol=1e-6)
    whole = pool_clip([a, b], [1.0, 1.5], 0.0, None)
    np.testing.assert_allclose(whole[:3], a.max(0) / np.linalg.norm(a.max(0)), rtol=1e-6)
    # a clip that ends past the rows keeps what exists; one that starts past them is an error naming the source
    np.testing.assert_allclose(pool_clip([a], [1.0], 8.0, 30.0), a[8:].max(0) / np.linalg.norm(a[8:].max(0)),
                               rtol=1e-6)
    with pytest.raises(FeatureError, match="x2d.npy"):
        pool_clip([a, b], [1.0, 1.5], 12.0, 14.0, names=["x2d.npy", "x3d.npy"])


# ------------------------------------------------------------------------------------------- files
def _write(dir_, vid, x, rate=None):
    dir_.mkdir(parents=True, exist_ok=True)
    np.save(dir_ / f"{vid}.npy", np.asarray(x, dtype=np.float32))
    if rate is not None:
        (dir_ / f"{vid}.json").write_text(json.dumps({"rate": rate}))


def test_load_features_rates_and_bad_files(tmp_path):
    _write(tmp_path, "a", np.ones((4, 3)), rate=1.5)
    x, r = load_features(FeatureSource(str(tmp_path)), "a")
    assert x.shape == (4, 3) and r == 1.5
    assert load_features(FeatureSource(str(tmp_path), 1.5), "a")[1] == 1.5
    with pytest.raises(FeatureError, match="disagrees"):
        load_features(FeatureSource(str(tmp_path), 1.0), "a")
    _write(tmp_path, "b", np.ones((4, 3)))
    with pytest.raises(FeatureError, match="no rate"):
        load_features(FeatureSource(str(tmp_path)), "b")
    (tmp_path / "c.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(FeatureError, match="c.npy: unreadable"):
        load_features(FeatureSource(str(tmp_path), 1.0), "c")
    _write(tmp_path, "d", np.ones(5))
    with pytest.raises(FeatureError, match="T×D"):
        load_features(FeatureSource(str(tmp_path), 1.0), "d")
    _write(tmp_path, "e", np.full((3, 2), np.nan))
    with pytest.raises(FeatureError, match="NaN"):
        load_features(FeatureSource(str(tmp_path), 1.0), "e")
    with pytest.raises(FeatureError, match="not found"):
        load_features(FeatureSource(str(tmp_path), 1.0), "zzz")


# ------------------------------------------------------------------------------------------- towers
def _model_cfg(**kw):
    base = {"video_tower": "gated", "text_tower": "word2vec", "embed_dim": 8, "gated": {"input_dim": 11},
            "word2vec": {"word_dim": 6, "hidden_dim": 10, "max_words": 12}, "loss": "max_margin",
            "loss_args": {"margin": 0.1, "negative_weighting": True, "normalize": True}}
    base.update(kw)
    return OmegaConf.create(base)


def test_gated_tower_shapes_normalisation_and_errors():
    from milnce.towers.registry import build_text_tower, build_video_tower

    tower = build_video_tower(_model_cfg())
    out = tower(torch.randn(5, 11))["video_embedding"]
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    x = torch.randn(2, 11)
    gated = tower.fc(x)
    torch.testing.assert_close(tower(x)["video_embedding"],
                               torch.nn.functional.normalize(gated * torch.sigmoid(tower.cg.fc(gated)), dim=-1))
    with pytest.raises(ValueError, match="input_dim"):
        tower(torch.randn(2, 3, 4, 8, 8))
    text = build_text_tower(_model_cfg(text_tower="word2vec_gated"), vocab=["a", "b", "c"])
    emb = text(torch.tensor([[1, 2, 0], [3, 0, 0]]))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


# ------------------------------------------------------------------------------------------- datamodule
VIDEOS = {f"vid{i}": 20 + 2 * i for i in range(4)}     # id → seconds


@pytest.fixture
def feature_corpus(tmp_path):
    rng = np.random.default_rng(1)
    captions = {}
    for vid, dur in VIDEOS.items():
        starts = np.arange(0.0, dur - 3, 2.5)
        captions[vid] = {"start": starts.tolist(), "end": (starts + 1.5).tolist(),
                         "text": [f"{vid} step {j} word{j % 3}" for j in range(len(starts))]}
        _write(tmp_path / "f2d", vid, rng.normal(size=(dur, 6)), rate=1.0)
        _write(tmp_path / "f3d", vid, rng.normal(size=(int(dur * 1.5), 5)))
    (tmp_path / "howto100m").mkdir()
    (tmp_path / "howto100m" / "caption.json").write_text(json.dumps(captions))
    return tmp_path, captions


def _data_cfg(root, **kw):
    cfg = {"dataset": "features", "root": str(root), "captions": None, "clips_per_video": 3, "min_time": 5.0,
           "batch_size": 2, "num_workers": 0, "cache_in_memory": False, "seed": 3,
           "feature_sources": [{"dir": str(root / "f2d"), "rate": None}, {"dir": str(root / "f3d"), "rate": 1.5}]}
    cfg.update(kw)
    return OmegaConf.create(cfg)


def _datamodule(root, **kw):
    from datamodules.features import FeatureDataModule
    from milnce.text.word_tokenizer import WordTokenizer

    dm = FeatureDataModule(_data_cfg(root, **kw), progress=False)
    dm.setup("fit")
    dm.tokenizer = WordTokenizer(dm.vocabulary(), max_words=12)
    return dm


def _possible_clips(root, captions, vid, tokenizer):
    """Every (pooled features, token ids) a clip of `vid` may be, computed from the files directly."""
    a = np.load(root / "f2d" / f"{vid}.npy")
    b = np.load(root / "f3d" / f"{vid}.npy")
    c = captions[vid]
    out = []
    for row in range(len(c["start"])):
        first, last, order = merge_captions(c["start"], c["end"], row, 5.0)
        s, e = c["start"][first], c["end"][last]
        pa, pb = a[int(s):int(e) + 1].max(0), b[int(s * 1.5):int(e * 1.5) + 1].max(0)
        vec = np.concatenate([pa / np.linalg.norm(pa), pb / np.linalg.norm(pb)])
        ids = tokenizer([" ".join(c["text"][r] for r in order)])["input_ids"][0]
        out.append((vec, ids))
    return out


def test_batches_hold_pooled_clips_and_merged_texts(feature_corpus):
    root, captions = feature_corpus
    dm = _datamodule(root)
    assert dm.feature_dim() == 11
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 11) and batch["video"].dtype == torch.float32
    assert batch["text"].shape == (2, 3, 1, 12)
    assert batch["video_index"].shape == (2, 3)
    assert batch["failures"].tolist() == [0, 0]
    for b in range(2):
        vindex = int(batch["video_index"][b, 0])
        assert (batch["video_index"][b] == vindex).all()
        vid = dm.index.video_ids[vindex]
        options = _possible_clips(root, captions, vid, dm.tokenizer)
        for c in range(3):
            v, ids = batch["video"][b, c].numpy(), batch["text"][b, c, 0]
            assert any(np.allclose(v, ov, atol=1e-6) and torch.equal(ids, oi) for ov, oi in options), (b, c)
    # the same sample index gives the same item (epochs reproducible from the seed)
    ds = dm.dataset
    one, two = ds[5], ds[5]
    assert torch.equal(one["video"], two["video"]) and torch.equal(one["text"], two["text"])


def test_unusable_feature_files_are_replaced_and_counted(feature_corpus):
    root, _ = feature_corpus
    (root / "f2d" / "vid1.npy").write_bytes(b"\x93NUMPY garbage")
    (root / "f3d" / "vid2.npy").unlink()
    dm = _datamodule(root)
    dm.train_dataloader()
    ds = dm.dataset
    broken = {dm.index.video_index("vid1"), dm.index.video_index("vid2")}
    for item in broken:
        out = ds[item]
        assert out["failures"] >= 1
        assert int(out["video_index"][0]) not in broken
        assert "vid1.npy" in out["failed"] or "vid2.npy" in out["failed"]
        assert (out["video"].norm(dim=1) > 0.5).all()          # never a zero vector
    ok = ds[dm.index.video_index("vid0")]
    assert ok["failures"] == 0 and int(ok["video_index"][0]) == dm.index.video_index("vid0")


def test_narrations_past_the_feature_rows_are_redrawn(feature_corpus):
    root, _ = feature_corpus
    _write(root / "f2d", "vid3", np.random.default_rng(0).normal(size=(3, 6)), rate=1.0)  # only 3 s of rows
    dm = _datamodule(root, clips_per_video=4)
    dm.train_dataloader()
    out = dm.dataset[dm.index.video_index("vid3")]
    assert out["failures"] >= 1 and "vid3.npy: clip [" in out["failed"] and "maps to rows" in out["failed"]
    assert (out["video"].norm(dim=1) > 0.5).all()


def test_flatten_batch_accepts_features():
    from milnce.module import VideoTextModule

    batch = {"video": torch.randn(2, 3, 11), "text": torch.zeros(2, 3, 1, 12, dtype=torch.long),
             "video_index": torch.tensor([[0, 0, 0], [4, 4, 4]])}
    video, ids, mask, video_ids, valid = VideoTextModule.flatten_batch(batch)
    assert video.shape == (6, 11) and ids.shape == (6, 12) and video_ids.tolist() == [0, 0, 0, 4, 4, 4]
    torch.testing.assert_close(video[3], batch["video"][1, 0])


# ------------------------------------------------------------------------------------------- evaluation
class _PooledEchoModule(torch.nn.Module):
    """embed_video = the pooled features themselves; encode_text('item k') = the expected pooled vector of item k."""

    def __init__(self, expected):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.expected = expected

    def embed_video(self, x):
        return x

    def encode_text(self, texts):
        return torch.from_numpy(np.stack([self.expected[int(t.split()[1])] for t in texts]))


def test_feature_retrieval_pools_items_and_lists_missing_and_failed(feature_corpus, tmp_path):
    from datamodules.benchmarks.youcook2 import read_youcook2_csv
    from milnce.eval.feature_eval import FeatureRetrievalEvaluator

    root, _ = feature_corpus
    rows = [(3, 0, "vid0"), (9, 5, "vid0"), (14, 8, "vid1"), (7, 1, "vid2"), (20, 12, "vid3"),
            (5, 1, "nofeatures"), (90, 80, "vid1")]
    csv = tmp_path / "yc.csv"
    csv.write_text("end,start,task,text,video_id\n" + "".join(f"{e},{s},101,item {k},{v}\n"
                                                              for k, (e, s, v) in enumerate(rows)))
    sources = [FeatureSource(str(root / "f2d")), FeatureSource(str(root / "f3d"), 1.5)]
    expected = {}
    for k, (e, s, v) in enumerate(rows[:5]):
        a, b = np.load(root / "f2d" / f"{v}.npy"), np.load(root / "f3d" / f"{v}.npy")
        pa, pb = a[int(s):int(e) + 1].max(0), b[int(s * 1.5):int(e * 1.5) + 1].max(0)
        expected[k] = np.concatenate([pa / np.linalg.norm(pa), pb / np.linalg.norm(pb)]).astype(np.float32)
    ev = FeatureRetrievalEvaluator(read_youcook2_csv(csv, tmp_path), sources, out_dir=str(tmp_path / "out"),
                                   progress=False)
    metrics, card, ranks = ev.evaluate(_PooledEchoModule(expected))
    assert metrics["N"] == 5 and metrics["R1"] == 100.0 and metrics["MedR"] == 1.0
    assert card["n_missing"] == 1 and card["n_failed"] == 1 and card["n_evaluated"] == 5
    assert card["input"] == "features" and "vid1.npy" in card["failed"][0]
    assert ev.subset_indices(2) == [0, 6] and ev.dataset.name == "youcook2"
    assert (tmp_path / "out" / "youcook2_card.json").is_file()
    sub = ev.evaluate(_PooledEchoModule(expected), indices=[0, 1, 2], use_cache=True)
    assert sub.metrics["N"] == 3 and sub.card["subset"]


def test_build_evaluators_uses_features_for_the_features_dataset(feature_corpus, tmp_path):
    from milnce.config import load_config
    from milnce.eval.setup import build_evaluators
    from milnce.eval.feature_eval import FeatureRetrievalEvaluator

    root, _ = feature_corpus
    (root / "youcook2").mkdir()
    (root / "youcook2" / "validation_youcook.csv").write_text("end,start,task,text,video_id\n9,2,1,a b,vid0\n")
    cfg = load_config("conf/features_toy.yaml", [f"data.root={root}", f"run_dir={tmp_path / 'run'}",
                                                 "eval.retrieval=[{name: youcook2}]"])
    (kind, ev), = build_evaluators(cfg)
    assert kind == "retrieval" and isinstance(ev, FeatureRetrievalEvaluator)


# ------------------------------------------------------------------------------------------- training
def test_a_few_max_margin_steps_on_features(feature_corpus, tmp_path):
    import pytorch_lightning as pl

    from milnce.module import VideoTextModule

    root, _ = feature_corpus
    dm = _datamodule(root, batch_size=4, clips_per_video=3)
    module = VideoTextModule(_model_cfg(), {"lr": 0.01, "warmup_steps": 0, "schedule": "constant"},
                             vocab=dm.tokenizer.vocab if hasattr(dm.tokenizer, "vocab") else dm.vocabulary())
    dm.tokenizer = module.tokenizer
    before = module.video_tower.fc.weight.detach().clone()
    first = next(iter(dm.train_dataloader()))
    video, ids, _, video_ids, valid = module.flatten_batch(first)
    with torch.no_grad():
        loss0 = float(module.loss_fn(module.embed_video(video), module.embed_text(ids), video_ids=video_ids,
                                     valid=valid))
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 12
    assert not torch.equal(before, module.video_tower.fc.weight)
    with torch.no_grad():
        loss1 = float(module.loss_fn(module.embed_video(video), module.embed_text(ids), video_ids=video_ids,
                                     valid=valid))
    assert np.isfinite(loss1) and loss1 < loss0


def test_reads_features_written_by_the_extract_tool(tmp_path):
    from types import SimpleNamespace

    from milnce.search.extract import write_features

    starts = np.arange(0.0, 10.0, 0.5)
    emb = SimpleNamespace(video=str(tmp_path / "clips" / "abc.mp4"), starts=starts, duration=10.2,
                          embeddings=np.random.default_rng(0).normal(size=(len(starts), 4)).astype(np.float32))
    write_features(tmp_path / "s3d", emb, stride=0.5, window=3.2, extra={})
    x, rate = load_features(FeatureSource(str(tmp_path / "s3d")), "abc")
    assert rate == 2.0 and x.shape == (20, 4)
    pooled = pool_clip([x], [rate], 1.2, 2.9)                       # rows [2, 6)
    want = emb.embeddings[2:6].max(0)
    np.testing.assert_allclose(pooled, want / np.linalg.norm(want), rtol=1e-6)
