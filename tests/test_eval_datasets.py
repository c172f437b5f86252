"""YouCook2 / MSR-VTT readers, the evaluation-window dataset and the retrieval evaluator (PROTOCOLS Part A §7.2–7.3)."""
import json

import numpy as np
import pytest
import torch

from datamodules.benchmarks.eval_clips import RetrievalClips, collate_windows, window_starts
from datamodules.benchmarks.msrvtt import read_msrvtt
from datamodules.benchmarks.retrieval_items import RetrievalItem, RetrievalSet
from datamodules.benchmarks.youcook2 import read_youcook2, read_youcook2_csv, read_youcook2_json
from api_fakes import grey_ramp_video
from eval_fakes import FakeIO, FakeModule
from milnce.eval import common as eval_utils
from milnce.eval.retrieval_eval import RetrievalEvaluator
from conftest import REFERENCE


# ---------------------------------------------------------------- real annotation files
def test_real_youcook2_csv_has_3350_clips(tmp_path):
    ds = read_youcook2_csv(REFERENCE / "youcook2_validation_milnce.csv", tmp_path)
    assert len(ds) == 3350
    assert len({it.video_id for it in ds}) == 436
    assert len({(it.video_id, it.start, it.end) for it in ds}) == 3349      # one duplicate clip
    assert min(it.end - it.start for it in ds) == 1 and max(it.end - it.start for it in ds) == 199
    assert ds.items[0].text == "pick the ends off the verdalago" and ds.items[0].start == 47.0
    assert len(ds.missing) == 3350 and ds.available_indices == []            # no videos here: all listed as missing
    lines = ds.write_missing(tmp_path / "missing.csv").read_text().splitlines()
    assert len(lines) == 3351 and lines[1].startswith("youcook2_validation_milnce.csv:2,xHr8X2Wpmno")


def test_real_msrvtt_csv_has_1000_clips(tmp_path):
    (tmp_path / "video9770.mp4").write_bytes(b"")
    ds = read_msrvtt(REFERENCE / "msrvtt_1kA_test.csv", tmp_path)
    assert len(ds) == 1000 and len({it.video_id for it in ds}) == 1000
    assert ds.items[0].key == "ret0" and ds.items[0].text == "a person is connecting something to system"
    assert all(it.start == 0 and it.end is None for it in ds)
    assert ds.available_indices == [0] and ds.items[0].path == str(tmp_path / "video9770.mp4")
    assert len(ds.missing) == 999


# ---------------------------------------------------------------- written fixtures
def test_youcook2_csv_paths_extension_order_and_missing(tmp_path):
    csv = tmp_path / "val.csv"
    csv.write_text("end,start,task,text,video_id\n10,2,101,cut the onion,vA\n30,12,101,fry it,vA\n"
                   "5,0,202,boil water,vB\n9,1,202,serve,vC\n")
    d = tmp_path / "validation"
    (d / "101").mkdir(parents=True)
    (d / "202").mkdir()
    (d / "101" / "vA.webm").write_bytes(b"")
    (d / "101" / "vA.mkv").write_bytes(b"")
    (d / "202" / "vB.webm").write_bytes(b"")
    ds = read_youcook2(csv, tmp_path)
    assert [it.path for it in ds] == [str(d / "101" / "vA.mkv")] * 2 + [str(d / "202" / "vB.webm"), None]
    assert [it.video_id for it in ds.missing] == ["vC"]
    assert ds.items[1].start == 12.0 and ds.items[1].end == 30.0 and ds.items[1].key == "val.csv:3"


@pytest.mark.parametrize("body,match", [
    ("end,start,task,text\n1,0,1,x\n", "lacks column"),
    ("end,start,task,text,video_id\n10,2,101,cut,vA\n10,2,101,vA\n", "val.csv:3: expected 5 fields"),
    ("end,start,task,text,video_id\n10,two,101,cut,vA\n", "val.csv:2: column 'start' is not a number"),
    ("end,start,task,text,video_id\n1,2,101,cut,vA\n", "val.csv:2: end"),
])
def test_youcook2_malformed_rows_name_the_line(tmp_path, body, match):
    csv = tmp_path / "val.csv"
    csv.write_text(body)
    with pytest.raises(ValueError, match=match):
        read_youcook2_csv(csv, tmp_path)


def test_youcook2_official_json(tmp_path):
    db = {"database": {
        "v1": {"subset": "validation", "recipe_type": "113", "duration": 100.0, "annotations": [
            {"segment": [5, 20], "id": 0, "sentence": "add the rice"},
            {"segment": [25, 40], "id": 1, "sentence": "stir"}]},
        "v2": {"subset": "training", "recipe_type": "113", "annotations": [{"segment": [0, 3], "id": 0,
                                                                           "sentence": "x"}]}}}
    p = tmp_path / "youcookii_annotations_trainval.json"
    p.write_text(json.dumps(db))
    (tmp_path / "validation" / "113").mkdir(parents=True)
    (tmp_path / "validation" / "113" / "v1.mp4").write_bytes(b"")
    ds = read_youcook2(p, tmp_path)
    assert [(it.key, it.text, it.start, it.end) for it in ds] == [("v1_0", "add the rice", 5.0, 20.0),
                                                                 ("v1_1", "stir", 25.0, 40.0)]
    assert ds.items[0].path == str(tmp_path / "validation" / "113" / "v1.mp4")
    assert len(read_youcook2_json(p, tmp_path, split="training")) == 1
    db["database"]["v1"]["annotations"][1] = {"segment": [3], "sentence": "bad"}
    p.write_text(json.dumps(db))
    with pytest.raises(ValueError, match=r"database\['v1'\]\['annotations'\]\[1\]"):
        read_youcook2(p, tmp_path)


# ---------------------------------------------------------------- windows
def test_window_starts_are_the_original_linspace():
    np.testing.assert_allclose(window_starts(47, 60, 10, 3.2), np.linspace(47, 60 - 3.2 - 0.4, 10))
    np.testing.assert_allclose(window_starts(5, 7, 4, 3.2), [5, 5, 5, 5])      # shorter than a window
    np.testing.assert_allclose(window_starts(0, 10.0, 1, 1.6), [0.0])


def make_set(names, texts=None, ends=None):
    items = [RetrievalItem(key=f"k{i}", video_id=n, text=(texts or {}).get(i, f"clip {FakeIO.code(n)}"),
                           start=2.0, end=(ends or {}).get(i, 20.0), path=None if "missing" in n else f"/fake/{n}.mp4")
             for i, n in enumerate(names)]
    return RetrievalSet(name="fake", source="fake.csv", video_root="/fake", items=items)


def test_clip_dataset_decodes_windows_at_linspace_starts():
    io = FakeIO(durations={"/fake/m_4.mp4": 12.5})
    ds = make_set(["a_3", "short_5", "broken_6", "m_4"], ends={3: None})
    clips = RetrievalClips(ds.items, None, num_windows=5, num_frames=8, fps=4.0, size=16, **io.clip_kwargs())
    a = clips[0]
    assert a["video"].shape == (5, 3, 8, 16, 16) and a["video"].dtype == torch.uint8
    assert (a["video"] == 3).all() and a["padded"] == 0
    assert [c[1] for c in io.calls[:5]] == pytest.approx(np.linspace(2.0, 20.0 - 2.0 - 0.4, 5).tolist())
    b = clips[1]                                          # decoder returned 4 of 8 frames: zero-padded at the end
    assert b["padded"] == 5 and (b["video"][:, :, :4] == 5).all() and (b["video"][:, :, 4:] == 0).all()
    c = clips[2]
    assert c["video"] is None and "decode failed" in c["error"]
    io.calls.clear()
    d = clips[3]                                          # whole video: 0 → probed duration (start 2 here)
    assert [x[1] for x in io.calls] == pytest.approx(np.linspace(2.0, 12.5 - 2.4, 5).tolist())
    assert io.samplings and set(io.samplings) == {"ffmpeg"}     # the original's frame choice by default
    batch = collate_windows([a, c, d])
    assert batch["video"].shape == (2, 5, 3, 8, 16, 16) and batch["index"].tolist() == [0, 3]
    assert batch["failed"] == [(2, c["error"])]


def test_frames_past_the_end_of_the_video_are_zeros_as_the_original():
    io = FakeIO(durations={"/fake/v_7.mp4": 3.0})
    ds = make_set(["v_7"], ends={0: 3.0})                  # clip 2 s → 3 s, shorter than a 2 s window + 0.4
    zeros = RetrievalClips(ds.items, None, num_windows=2, num_frames=8, fps=4.0, size=16, **io.clip_kwargs())[0]
    assert io.probes == ["/fake/v_7.mp4"]                  # probed because the window can reach past the end
    assert zeros["starts"].tolist() == [2.0, 2.0]
    assert (zeros["video"][:, :, :4] == 7).all() and (zeros["video"][:, :, 4:] == 0).all()   # t = 3.0 … 3.75
    assert zeros["padded"] == 2
    repeat = RetrievalClips(ds.items, None, num_windows=2, num_frames=8, fps=4.0, size=16, tail="repeat",
                            sampling="exact", **io.clip_kwargs())[0]
    assert (repeat["video"] == 7).all() and repeat["padded"] == 0 and io.samplings[-1] == "exact"
    with pytest.raises(ValueError, match="tail"):
        RetrievalClips(ds.items, None, tail="black", **io.clip_kwargs())


# ---------------------------------------------------------------- evaluator
def evaluator(ds, io, tmp_path=None, **kw):
    kw = {"num_windows": 3, "num_frames": 4, "fps": 2.0, "size": 8, "num_workers": 0, "progress": False, **kw}
    return RetrievalEvaluator(ds, out_dir=tmp_path, clip_kwargs=io.clip_kwargs(), **kw)


def test_perfect_embeddings_give_r1_100_and_a_full_card(tmp_path):
    names = [f"v_{i}" for i in range(1, 9)] + ["missing_20", "broken_21"]
    ds = make_set(names)
    module = FakeModule()
    module.train()
    res = evaluator(ds, FakeIO(), tmp_path, batch_size=3).evaluate(module)
    m, card = res.metrics, res.card
    assert m["R1"] == 100.0 and m["MedR"] == 1.0 and m["v2t/R1"] == 100.0 and m["ties"] == 0 and m["N"] == 8
    assert m["chance/R1"] == pytest.approx(100 / 8) and m["chance/MedR"] == pytest.approx(4.5)
    assert card["n_evaluated"] == 8 and card["n_listed"] == 10 and card["n_missing"] == 1 and card["n_failed"] == 1
    assert card["windows"] == 3 and card["frames"] == 4 and card["fps"] == 2.0 and card["size"] == 8
    assert card["pooling"] == "mean" and card["normalize"] is False and card["score"] == "dot"
    assert card["text_max_words"] == 30 and module.max_words_seen == [30] and module.tokenizer.max_words == 16
    assert module.training and module.training_flags and not any(module.training_flags)
    assert (tmp_path / "fake_missing.csv").read_text().splitlines()[1].startswith("k8,missing_20")
    assert "broken_21" in (tmp_path / "fake_failed.txt").read_text()
    assert (tmp_path / "fake_ranks.png").stat().st_size > 0
    assert json.loads((tmp_path / "fake_card.json").read_text())["n_evaluated"] == 8
    assert res.ranks.tolist() == [0] * 8


def test_duplicate_clips_tie_and_are_counted():
    ds = make_set(["v_1", "v_2", "v_2", "v_3"], texts={1: "clip 2", 2: "clip 2"})
    res = evaluator(ds, FakeIO()).evaluate(FakeModule())
    assert res.metrics["ties"] == 2 and res.metrics["R1"] == pytest.approx(100 * 4 / 6)
    assert res.card["ties"] == 2


def test_pooling_and_normalisation_options():
    ds = make_set(["v_1", "short_2", "v_3"])
    mean = evaluator(ds, FakeIO()).evaluate(FakeModule())
    mx = evaluator(ds, FakeIO(), pooling="max", normalize=True).evaluate(FakeModule())
    assert mx.card["pooling"] == "max" and mx.card["normalize"] is True
    assert mean.metrics["R1"] == 100.0 and mx.metrics["R1"] == 100.0
    assert mean.card["zero_padded_windows"] == 3
    with pytest.raises(ValueError, match="unknown pooling"):
        evaluator(ds, FakeIO(), pooling="median")
    ev = evaluator(ds, FakeIO())
    emb = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    assert ev._pool(emb).tolist() == [[2.0, 2.0]]
    ev.pooling = "max"
    assert ev._pool(emb).tolist() == [[3.0, 4.0]]


def test_subset_cache_skips_decoding_second_time():
    io = FakeIO()
    ds = make_set([f"v_{i}" for i in range(1, 11)])
    ev = evaluator(ds, io, cache_max_bytes=10 ** 8)
    sub = ev.subset_indices(4)
    assert sub == [0, 3, 6, 9]
    first = ev.evaluate(FakeModule(), sub, use_cache=True)
    n_calls = len(io.calls)
    assert n_calls == 4 * 3
    second = ev.evaluate(FakeModule(), sub, use_cache=True)
    assert len(io.calls) == n_calls and second.metrics == first.metrics
    assert second.card["subset"] is True and second.card["n_evaluated"] == 4
    ev.evaluate(FakeModule())                             # full set, no cache: decodes everything
    assert len(io.calls) == n_calls + 10 * 3


def test_sharding_covers_every_item_once_without_padding():
    for n in (0, 1, 5, 7, 3350):
        for world in (1, 2, 3, 8):
            shards = [eval_utils.shard(range(n), r, world) for r in range(world)]
            flat = [i for s in shards for i in s]
            eval_utils.assert_exactly_once(flat, range(n), "test")
            assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    with pytest.raises(RuntimeError, match="1 duplicates, 1 lost"):
        eval_utils.assert_exactly_once([0, 1, 1], [0, 1, 2], "test")


def test_ranks_evaluate_disjoint_shards_and_gather(monkeypatch):
    """Simulate 3 ranks: each evaluates its own shard; gathering the three payloads reproduces the 1-process result."""
    ds = make_set([f"v_{i}" for i in range(1, 8)])
    payloads = {}
    for r in range(3):
        monkeypatch.setattr(eval_utils, "rank_and_world", lambda r=r: (r, 3))
        monkeypatch.setattr(eval_utils, "gather_objects", lambda obj, r=r: payloads.setdefault(r, obj) and [obj])
        with pytest.raises(RuntimeError, match="exactly once"):   # alone, a rank sees only its shard
            evaluator(ds, FakeIO()).evaluate(FakeModule())
    assert sorted(i for p in payloads.values() for i in p["indices"]) == list(range(7))
    monkeypatch.setattr(eval_utils, "rank_and_world", lambda: (0, 3))
    monkeypatch.setattr(eval_utils, "gather_objects", lambda obj: [payloads[0], payloads[1], payloads[2]])
    res = evaluator(ds, FakeIO()).evaluate(FakeModule())
    assert res.metrics["N"] == 7 and res.metrics["R1"] == 100.0


def real_video(path, seconds=3, fps=10, size=(48, 64)):
    pytest.importorskip("av")
    return grey_ramp_video(path, seconds * fps, fps, width=size[1], height=size[0])


def test_real_videos_decode_through_the_video_module(tmp_path):
    vdir = tmp_path / "validation" / "7"
    vdir.mkdir(parents=True)
    real_video(vdir / "vid1.mp4")
    csv = tmp_path / "val.csv"
    csv.write_text("end,start,task,text,video_id\n3,0,7,pour milk,vid1\n")
    ds = read_youcook2(csv, tmp_path)
    clips = RetrievalClips(ds.items, None, num_windows=2, num_frames=4, fps=5.0, size=32)
    out = clips[0]
    assert out["error"] is None
    assert out["video"].shape == (2, 3, 4, 32, 32) and out["video"].dtype == torch.uint8
    np.testing.assert_allclose(out["starts"], np.linspace(0, max(0, 3 - 0.8 - 0.4), 2))


def _ddp_worker(rank, world, port, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ds = make_set([f"v_{i}" for i in range(1, 6)] + ["broken_9"])    # 6 items: uneven over 4 ranks (2,2,1,1)
        res = evaluator(ds, FakeIO()).evaluate(FakeModule())
        torch.save({"metrics": res.metrics, "card": res.card}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow   # spawns 4 processes (~25 s on 2 shared cores); the sharding logic is also tested above
def test_ddp_every_item_exactly_once_over_gloo(tmp_path):
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(4, port, str(tmp_path)), nprocs=4, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(4)]
    for r in results:
        assert r["metrics"]["N"] == 5 and r["metrics"]["R1"] == 100.0
        assert r["card"]["n_evaluated"] == 5 and r["card"]["n_failed"] == 1
    assert all(r["metrics"] == results[0]["metrics"] for r in results)
