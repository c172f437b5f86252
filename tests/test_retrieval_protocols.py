"""Retrieval protocol variants: multi-caption ground truth, dual-softmax inference, the evaluator options and the
`--protocols all` table (end to end on a tiny MSR-VTT-format fixture with real videos and a tiny checkpoint)."""
import csv
import json

import numpy as np
import pytest

from api_fakes import save_lightning_checkpoint, tiny_module, write_video
from eval_fakes import FakeIO, FakeModule
from datamodules.benchmarks.msrvtt import read_msrvtt, read_msrvtt_full
from datamodules.benchmarks.retrieval_items import RetrievalItem, RetrievalSet
from milnce.eval.retrieval import (dual_softmax, retrieval_metrics, retrieval_metrics_multi, retrieval_ranks,
                                   retrieval_ranks_multi)
from milnce.eval.retrieval_eval import RetrievalEvaluator


# ---------------------------------------------------------------- metrics
def test_multi_with_diagonal_ground_truth_is_the_original():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(12, 12)).astype(np.float32)          # many ties
    assert retrieval_ranks_multi(x, np.arange(12)).tolist() == retrieval_ranks(x).tolist()
    multi = retrieval_metrics_multi(x, np.arange(12))
    assert {k: multi[k] for k in retrieval_metrics(x)} == retrieval_metrics(x) and multi["videos"] == 12


def test_all_captions_change_recall_at_k():
    # 2 videos; video 0 has captions 0 (its best) and 1 (which prefers video 1); video 1 has caption 2
    x = np.array([[.9, .1],      # caption 0 → video 0: rank 0
                  [.2, .8],      # caption 1 → video 0: rank 1
                  [.3, .7]])     # caption 2 → video 1: rank 0
    owner = np.array([0, 0, 1])
    assert retrieval_ranks_multi(x, owner).tolist() == [0, 1, 0]
    m = retrieval_metrics_multi(x, owner)
    assert m["R1"] == pytest.approx(200 / 3) and m["N"] == 3 and m["videos"] == 2
    one = retrieval_metrics(x[[0, 2]])                      # one caption per video (the first): perfect
    assert one["R1"] == 100.0 and m["MeanR"] == pytest.approx(4 / 3)


def test_multi_ties_follow_compute_metrics():
    x = np.array([[1., 1., 0.], [0., 1., 1.], [1., 0., 0.], [0., 0., 1.]])
    owner = np.array([0, 2, 0, 2])
    assert retrieval_ranks_multi(x, owner).tolist() == [0, 1, 0, 1, 0, 0]   # each tie: one entry per tied column
    assert retrieval_metrics_multi(x, owner)["ties"] == 2


def test_bad_ground_truth_is_reported():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="one integer video index per text"):
        retrieval_metrics_multi(x, [0, 1])
    with pytest.raises(ValueError, match=r"text_to_video\[2\] = 5"):
        retrieval_metrics_multi(x, [0, 1, 5])
    with pytest.raises(ValueError, match="temperature"):
        dual_softmax(x, 0.0)


def test_dual_softmax_formula_and_it_changes_the_ranking():
    # video 1 is a hub: text 0 scores it above its own video 0, but text 1 claims video 1 far more strongly
    x = np.array([[.5, .6],
                  [.2, .9]])
    assert retrieval_metrics(x)["R1"] == 50.0
    tau = 0.1
    col = np.exp(x / tau) / np.exp(x / tau).sum(axis=0, keepdims=True)     # softmax over the texts, per video
    ds = dual_softmax(x, tau)
    np.testing.assert_allclose(ds, x * col)
    assert ds[0, 0] > ds[0, 1]                                               # text 0 now ranks its video first
    assert retrieval_metrics(ds)["R1"] == 100.0
    # transductive: adding one more query to the gallery changes the scores of the others
    bigger = dual_softmax(np.vstack([x, [[.9, .1]]]), tau)
    assert not np.allclose(bigger[:2], ds)


# ---------------------------------------------------------------- readers
def write_msrvtt_fixture(root, videos=True):
    """4 test videos (video7, video8, video9, video10) + 1 training video; 1k-A lists three of them."""
    vids = [f"video{i}" for i in (7, 8, 9, 10)]
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    if videos:
        for v, c in zip(vids, colours):
            write_video(root / "videos" / f"{v}.mp4", seconds=2.0, fps=8, colour=c)
    sentences, n = [], 0
    for v in ["video1"] + vids:
        for j in range(3):
            sentences.append({"caption": f"the {['red', 'blue', 'square'][j]} {v} circle", "video_id": v,
                              "sen_id": n})
            n += 1
    data = {"videos": [{"video_id": "video1", "split": "train"}] + [{"video_id": v, "split": "test"} for v in vids],
            "sentences": sentences}
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    rows = [f"ret{k},msr{v[5:]},{v},the circle spins {k}" for k, v in enumerate(vids[:3])]
    (root / "msrvtt_test.csv").write_text("key,vid_key,video_id,sentence\n" + "\n".join(rows) + "\n")
    return vids


def test_msrvtt_readers_full_split_and_all_captions(tmp_path):
    vids = write_msrvtt_fixture(tmp_path, videos=False)
    one_k = read_msrvtt(tmp_path / "msrvtt_test.csv", tmp_path / "videos")
    assert one_k.captions is None and one_k.split == "1k-A" and len(one_k) == 3
    with_caps = read_msrvtt(tmp_path / "msrvtt_test.csv", tmp_path / "videos", tmp_path / "MSRVTT_data.json")
    assert with_caps.items[0].text == "the circle spins 0"                    # 1k-A keeps its CSV sentence
    assert with_caps.captions[1] == [f"the {w} video8 circle" for w in ("red", "blue", "square")]
    full = read_msrvtt_full(tmp_path / "MSRVTT_data.json", tmp_path / "videos")
    assert [it.video_id for it in full.items] == vids and full.split == "full"    # the training video is not in it
    assert full.items[3].text == "the red video10 circle" and len(full.captions[3]) == 3
    data = json.loads((tmp_path / "MSRVTT_data.json").read_text())
    data["sentences"] = [s for s in data["sentences"] if s["video_id"] != "video9"]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="video9"):
        read_msrvtt_full(tmp_path / "MSRVTT_data.json", tmp_path / "videos")


# ---------------------------------------------------------------- evaluator options
def fake_set(captions):
    items = [RetrievalItem(key=f"k{i}", video_id=f"v_{i}", text=caps[0], start=0.0, end=10.0,
                           path=f"/fake/v_{i}.mp4") for i, caps in enumerate(captions, start=1)]
    return RetrievalSet(name="fake", source="fake.csv", video_root="/fake", items=items, captions=captions)


def test_evaluator_all_captions_and_dual_softmax_are_options_in_the_card():
    # video i's captions: "clip i" (right) and one pointing at another video; FakeModule codes the trailing integer
    ds = fake_set([["clip 1", "clip 2"], ["clip 2"], ["clip 3", "clip 1"]])
    kw = dict(num_windows=2, num_frames=4, fps=2.0, size=8, num_workers=0, progress=False,
              clip_kwargs=FakeIO().clip_kwargs())
    one = RetrievalEvaluator(ds, **kw).evaluate(FakeModule())
    assert one.metrics["R1"] == 100.0 and one.card["captions"] == "one" and one.card["inference"] == "plain"
    assert one.card["split"] == "test" and one.card["n_queries"] == 3
    allc = RetrievalEvaluator(ds, captions="all", **kw).evaluate(FakeModule())
    # 3 of 5 captions right; each wrong one ties its own video with a third (one-hot codes): 2 entries each
    assert allc.metrics["N"] == 5 and allc.metrics["ties"] == 2 and allc.metrics["R1"] == pytest.approx(300 / 7)
    assert "v2t/R1" not in allc.metrics and allc.card["directions"].startswith("t2v only")
    dsl = RetrievalEvaluator(ds, dual_softmax=True, normalize=True, **kw).evaluate(FakeModule())
    assert dsl.card["inference"] == "dual_softmax" and dsl.card["dual_softmax_temperature"] == 0.01
    assert "transductive" in dsl.card and "softmax over the queries" in dsl.card["inference_rule"]
    assert RetrievalEvaluator(ds, dual_softmax=True, **kw).temperature == 1.0          # raw dot: τ = 1
    with pytest.raises(ValueError, match="one caption per item"):
        RetrievalEvaluator(RetrievalSet("y", "y.csv", "/", ds.items), captions="all", **kw)
    with pytest.raises(ValueError, match="unknown captions"):
        RetrievalEvaluator(ds, captions="some", **kw)


# ---------------------------------------------------------------- --protocols all, end to end
@pytest.fixture(scope="module")
def msrvtt_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt_protocols")
    data = root / "data" / "msrvtt"
    data.mkdir(parents=True)
    write_msrvtt_fixture(data)
    ckpt = save_lightning_checkpoint(tiny_module(), root / "last.ckpt")
    conf = root / "eval.yaml"
    conf.write_text("name: t\ndata:\n  root: %s\n  num_workers: 0\neval:\n  retrieval:\n    - name: msrvtt\n"
                    "      num_windows: 2\n      num_frames: 4\n      fps: 4.0\n      size: 32\n" % (root / "data"))
    return root, conf, ckpt


def test_protocols_all_writes_every_variant_from_one_encoding(msrvtt_run, monkeypatch):
    from datamodules.benchmarks import eval_clips
    from milnce.commands.evaluate import main

    root, conf, ckpt = msrvtt_run
    decoded = []
    original = eval_clips.RetrievalClips.__getitem__
    monkeypatch.setattr(eval_clips.RetrievalClips, "__getitem__",
                        lambda self, i: decoded.append(self.items[self.indices[i]].video_id) or original(self, i))
    assert main([str(conf), f"checkpoint={ckpt}", f"run_dir={root / 'all'}", "--protocols", "all"]) == 0
    assert sorted(decoded) == ["video10", "video7", "video8", "video9"]          # each video decoded once
    rows = list(csv.DictReader(open(root / "all" / "protocols.csv")))
    assert len(rows) == 2 * 2 * 2 * 2 * 2
    assert {(r["split"], r["captions"]) for r in rows} == {("1k-A", "one"), ("1k-A", "all"), ("full", "one"),
                                                           ("full", "all")}
    by = {(r["split"], r["captions"]): (int(r["queries"]), int(r["videos"])) for r in rows}
    assert by == {("1k-A", "one"): (3, 3), ("1k-A", "all"): (9, 3), ("full", "one"): (4, 4), ("full", "all"): (12, 4)}
    default = [r for r in rows if r["default"] == "True"]
    assert len(default) == 1 and (default[0]["split"], default[0]["captions"], default[0]["pooling"],
                                  default[0]["score"], default[0]["inference"]) == ("1k-A", "one", "mean", "dot",
                                                                                    "plain")
    assert all(r["temperature"] == ("1.0" if r["score"] == "dot" else "0.01") for r in rows
               if r["inference"] == "dual_softmax")
    md = (root / "all" / "protocols.md").read_text()
    assert "| 1k-A | one | mean | dot | plain |" in md and "**default**" in md
    card = json.loads((root / "all" / "protocol_cards.json").read_text())["msrvtt"]
    assert card["splits"]["full"]["evaluated"] == 4 and card["fixed"]["windows"] == 2

    # the default row is exactly what the evaluator reports without the flag
    assert main([str(conf), f"checkpoint={ckpt}", f"run_dir={root / 'plain'}"]) == 0
    plain = json.loads((root / "plain" / "metrics.json").read_text())
    table = json.loads((root / "all" / "metrics.json").read_text())
    for k in ("R1", "R5", "R10", "MedR", "MeanR"):
        assert table[f"msrvtt/{k}"] == pytest.approx(plain[f"msrvtt/{k}"], abs=1e-9)
        assert float(default[0][k]) == pytest.approx(plain[f"msrvtt/{k}"])


def test_protocols_flag_is_checked(msrvtt_run, capsys):
    from milnce.commands.evaluate import main

    root, conf, ckpt = msrvtt_run
    assert main([str(conf), f"checkpoint={ckpt}", "--protocols", "some"]) == 2
    assert "--protocols must be one of" in capsys.readouterr().err


def test_variants_without_their_data_are_listed_not_printed(msrvtt_run, tmp_path):
    import shutil

    from milnce.commands.evaluate import main
    from milnce.config import load_config
    from milnce.eval.setup import retrieval_set

    root, conf, ckpt = msrvtt_run
    data = tmp_path / "data" / "msrvtt"
    shutil.copytree(root / "data" / "msrvtt", data, ignore=shutil.ignore_patterns("MSRVTT_data.json"))
    assert main([str(conf), f"checkpoint={ckpt}", f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}",
                 "--protocols=all"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "protocols.csv")))
    assert len(rows) == 8 and {(r["split"], r["captions"]) for r in rows} == {("1k-A", "one")}
    assert "no MSR-VTT caption file" in (tmp_path / "run" / "protocols.md").read_text()
    cfg = load_config(str(conf), ["eval.retrieval.0.name=youcook2", "eval.retrieval.0.split=full"])
    with pytest.raises(ValueError, match="do not apply"):
        retrieval_set(cfg.eval.retrieval[0], tmp_path)
