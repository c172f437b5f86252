import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from api_fakes import save_lightning_checkpoint, tiny_module, write_video
from milnce.search.faiss_build import build_faiss
from milnce.search.index import IndexWriter, MomentIndex, load_shards, read_failed


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    ckpt = save_lightning_checkpoint(tiny_module(), root / "model.ckpt")
    videos = root / "videos"
    write_video(videos / "red.mp4", seconds=3.0, colour=(220, 20, 20))
    write_video(videos / "sub" / "blue.mp4", seconds=2.0, colour=(20, 20, 220))
    (videos / "broken.mp4").write_bytes(b"\x00" * 100)
    return root, ckpt, videos


def _extract(argv, capsys):
    import tools.extract as tool  # noqa: F401  (tools/ is importable from the repo root)

    tool.main(argv)
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_extract_resume_failed_list_features_and_search(collection, tmp_path, capsys):
    root, ckpt, videos = collection
    out = tmp_path / "index"
    feats = tmp_path / "features"
    argv = ["--checkpoint", str(ckpt), "--out", str(out), str(videos), "--window", "1", "--stride", "0.5",
            "--features-dir", str(feats), "--shard-rows", "4"]
    first = _extract(argv, capsys)
    assert (first["videos"], first["encoded"], first["failed"], first["skipped_done"]) == (3, 2, 1, 0)
    assert first["windows"] == 5 + 3 and first["rows"] == 8 and first["faiss"] == "FlatIP"
    assert [Path_name(v) for v, _ in read_failed(out)] == ["broken.mp4"]
    emb, rows = load_shards(out)
    assert emb.shape == (8, 16) and len(json.loads((out / "index.json").read_text())["shards"]) == 2
    assert sorted({Path_name(r[0]) for r in rows}) == ["blue.mp4", "red.mp4"]
    red = [r for r in rows if r[0].endswith("red.mp4")]
    assert [(r[1], r[2]) for r in red] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5), (2.0, 3.0)]
    # per-video features: one row per stride step + a rate sidecar
    f = np.load(feats / "red.npy")
    meta = json.loads((feats / "red.json").read_text())
    assert f.shape == (5, 16) and meta["rate"] == 2.0 and meta["rows"] == 5
    np.testing.assert_allclose(f, emb[[i for i, r in enumerate(rows) if r[0].endswith("red.mp4")]])
    from datamodules.feature_store import FeatureSource, load_features   # the feature-based training path reads it

    rows_read, rate = load_features(FeatureSource(str(feats)), "red")
    assert rate == 2.0 and rows_read.shape == (5, 16)

    again = _extract(argv, capsys)          # resumable: finished videos are skipped, the broken one retried
    assert (again["skipped_done"], again["encoded"], again["failed"], again["rows"]) == (2, 0, 1, 8)
    assert len(read_failed(out)) == 1       # listed once

    index = MomentIndex(out)
    hits = index.search(emb[3], k=3)        # exact inner-product ranking, as brute force computes it
    brute = emb @ emb[3]
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(brute)[::-1][:3], rtol=1e-5)
    np.testing.assert_allclose([brute[h["row"]] for h in hits], [h["score"] for h in hits], rtol=1e-5)
    assert hits[0]["video"] == rows[hits[0]["row"]][0] and hits[0]["start"] == rows[hits[0]["row"]][1]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert len(index.search(np.stack([emb[0], emb[1]]), k=100)) == 2


def test_settings_mismatch_on_resume_is_an_error(tmp_path):
    IndexWriter(tmp_path, {"window": 1.0, "stride": 0.5}).close()
    with pytest.raises(ValueError, match="window"):
        IndexWriter(tmp_path, {"window": 2.0, "stride": 0.5})


def test_ivf_index_and_normalized_scores(tmp_path):
    rng = np.random.default_rng(0)
    writer = IndexWriter(tmp_path, {"window": 1.0, "stride": 1.0, "normalize": True}, shard_rows=50)
    data = rng.normal(size=(120, 8)).astype(np.float32) * 3
    for v in range(12):
        writer.add(f"v{v}.mp4", np.arange(10.0), np.arange(10.0) + 1, data[v * 10:(v + 1) * 10])
    writer.close()
    with pytest.raises(ValueError, match="nlist"):
        build_faiss(tmp_path, nlist=8)
    assert build_faiss(tmp_path, nlist=2, nprobe=2)["faiss"] == "IVF2,Flat"
    index = MomentIndex(tmp_path)
    hit = index.search(data[17] * 5, k=1)[0]           # cosine: the query's scale does not matter
    assert (hit["video"], hit["start"], hit["score"]) == ("v1.mp4", 7.0, pytest.approx(1.0, abs=1e-5))


def test_distinct_skips_overlapping_moments_of_the_same_video(tmp_path):
    writer = IndexWriter(tmp_path, {"window": 2.0, "stride": 1.0})
    # v0: windows [0,2) [1,3) [2,4) [3,5) with scores 4, 3, 2, 1 along axis 0; v1: one window scoring 2.5
    writer.add("v0.mp4", [0, 1, 2, 3], [2, 3, 4, 5], np.array([[4, 0], [3, 0], [2, 0], [1, 0]], np.float32))
    writer.add("v1.mp4", [0], [2], np.array([[2.5, 0]], np.float32))
    writer.close()
    build_faiss(tmp_path)
    index = MomentIndex(tmp_path)
    raw = index.search(np.array([1, 0], np.float32), k=3)
    assert [(h["video"], h["start"]) for h in raw] == [("v0.mp4", 0.0), ("v0.mp4", 1.0), ("v1.mp4", 0.0)]
    distinct = index.search(np.array([1, 0], np.float32), k=3, distinct=True)
    assert [(h["video"], h["start"], h["score"]) for h in distinct] == [("v0.mp4", 0.0, 4.0), ("v1.mp4", 0.0, 2.5),
                                                                        ("v0.mp4", 2.0, 2.0)]


def test_search_cli_json_and_page(collection, tmp_path, capsys):
    root, ckpt, videos = collection
    out = tmp_path / "index"
    _extract(["--checkpoint", str(ckpt), "--out", str(out), str(videos / "red.mp4"), "--window", "1",
              "--stride", "1"], capsys)
    import tools.search as search_tool

    search_tool.main(["--index", str(out), "the red circle", "--top", "2", "--json"])
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2 and all(set(r) == {"video", "start", "end", "score"} for r in results)
    assert results[0]["score"] >= results[1]["score"]

    from milnce.search.server import Searcher, make_server, page_url, serve_in_thread

    server = make_server(Searcher(out), port=0)
    serve_in_thread(server)
    try:
        evil = "<script>alert(1)</script>\"'"
        page = urllib.request.urlopen(page_url(server, evil), timeout=30).read().decode()
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;" in page
        assert page.count("class='card result'") == 3 and "/video/0#t=" in page
        base = page_url(server)
        api = json.loads(urllib.request.urlopen(base + "api/search?q=red&k=1", timeout=30).read())
        assert len(api) == 1 and api[0]["video"].endswith("red.mp4")
        thumb = urllib.request.urlopen(base + "thumb/0.jpg", timeout=30).read()
        assert thumb[:2] == b"\xff\xd8"
        req = urllib.request.Request(base + "video/0", headers={"Range": "bytes=0-9"})
        resp = urllib.request.urlopen(req, timeout=30)
        size = (videos / "red.mp4").stat().st_size
        assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes 0-9/{size}"
        assert resp.read() == (videos / "red.mp4").read_bytes()[:10]
        for bad in ("video/99", "video/..%2Fetc", "thumb/-1.jpg", "etc/passwd"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + bad, timeout=30)
            assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def Path_name(p):
    from pathlib import Path

    return Path(p).name


def test_toy_precision_counts_overlapping_moments_of_the_named_object_and_action():
    from milnce.search.evaluation import chance_precision, is_hit, precision_at_k, toy_queries

    manifest = {"vocabulary": {"actions": {"spin": [["spin", "spins", "spinning"]],
                                           "slide": [["slide", "slides", "sliding"]]}},
                "videos": {"v1": {"steps": [{"object": "red circle", "action": "spin", "start": 2.0, "end": 6.0},
                                            {"object": "blue square", "action": "slide", "start": 8.0,
                                             "end": 10.0}]}}}
    segs = {"v1": [("red circle", "spin", 2.0, 6.0), ("blue square", "slide", 8.0, 10.0)]}
    assert toy_queries(manifest) == [("the blue square slides", "blue square", "slide"),
                                     ("the red circle spins", "red circle", "spin")]
    assert is_hit({"start": 5.0, "end": 7.0}, segs["v1"], "red circle", "spin")          # half inside
    assert not is_hit({"start": 5.5, "end": 7.5}, segs["v1"], "red circle", "spin")      # a quarter inside
    assert not is_hit({"start": 8.0, "end": 10.0}, segs["v1"], "red circle", "slide")    # other object's action

    def search(text, k):
        return [{"video": "x/v1.mp4", "start": 2.0, "end": 4.0}, {"video": "x/v1.mp4", "start": 8.0, "end": 10.0}]
    result = precision_at_k(search, toy_queries(manifest), segs, k=2)
    assert result["precision_at_k"] == 0.5 and [q["hits"] for q in result["per_query"]] == [1, 1]
    rows = [["v1.mp4", 2.0, 4.0], ["v1.mp4", 8.0, 10.0], ["v1.mp4", 12.0, 14.0], ["v1.mp4", 0.0, 2.0]]
    assert chance_precision(rows, toy_queries(manifest), segs) == 0.25


@pytest.mark.slow
def test_toy_object_action_queries_find_their_moments_in_top5(tmp_path):
    """End to end with a trained demo model: index the CrossTask-style toy videos (held out from pretraining),
    query every object×action pair they contain, and count top-5 moments where that object performs that action.

    Checkpoint: $MILNCE_DEMO_CHECKPOINT, else runs/demo/checkpoints/last.ckpt (tools/train.py conf/demo.yaml)."""
    import os
    from pathlib import Path

    from milnce.api import load_model
    from milnce.search.extract import extract, list_videos
    from milnce.search.evaluation import evaluate_toy_search
    from milnce.search.server import Searcher

    repo = Path(__file__).resolve().parents[1]
    ckpt = Path(os.environ.get("MILNCE_DEMO_CHECKPOINT", repo / "runs" / "demo" / "checkpoints" / "last.ckpt"))
    toy = repo / "data" / "toy"
    if not ckpt.is_file() or not (toy / "toy" / "manifest.json").is_file():
        pytest.skip(f"needs a demo checkpoint ({ckpt}) and the toy corpus ({toy}): tools/train.py conf/demo.yaml")
    model = load_model(ckpt)
    extract(model, list_videos([toy / "crosstask" / "videos"]), tmp_path / "index", window=4.0, stride=1.0,
            progress=False)
    result = evaluate_toy_search(Searcher(tmp_path / "index", model=model), toy, k=5, distinct=True)
    print({k: v for k, v in result.items() if k != "per_query"})
    assert result["queries"] >= 20
    assert result["precision_at_k"] >= 3 * result["chance_precision"]
    # measured with the 300-step demo model: precision@5 11.1 % (chance 1.7 %), 39 % of queries with a hit
    assert result["queries_with_hit"] >= 0.25


def test_list_videos_from_folders_and_lists(tmp_path):
    from milnce.search.extract import list_videos

    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/b.mp4", "d/e/a.webm", "d/notes.txt.bak"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# my videos\nd/b.mp4\n\n/abs/x.mkv\n")
    got = list_videos([tmp_path / "d", tmp_path / "list.txt"])
    assert got == [str(tmp_path / "d/b.mp4"), str(tmp_path / "d/e/a.webm"), "/abs/x.mkv"]
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        list_videos([tmp_path / "nothing_here"])
