"""Narration alignment: the HTM-Align and sidecar formats, re-timing a known shift, R@1 / ROC-AUC by hand, the
evaluator's exactly-once sharding, the toy corpus' alignment split and offset distributions."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from milnce.align.retime import align_corpus
from milnce.align.scoring import SearchSettings, retime
from milnce.config import DataConfig
from milnce.eval import common as eval_utils
from milnce.eval.alignment import alignability_auc, alignment_metrics, median_offset, recall_at_1
from milnce.eval.alignment_eval import AlignmentEvaluator
from milnce.eval.results_table import results_markdown
from datamodules.howto100m import HowTo100MDataModule
from datamodules.benchmarks.htm_align import (AlignedVideo, AlignmentAnnotationError, asr_anchor_times,
                                              read_htm_align, write_htm_align)
from datamodules.narrations.readers import read_caption_json
from datamodules.narrations.retimed import (SidecarError, captions_from_sidecar, filtered_captions, read_sidecar,
                                            video_table, write_captions, write_table)
from datamodules.toy.corpus import ToyCorpusConfig, manifest_config, plan_corpus
from datamodules.toy.formats import write_htm_align as toy_write_htm_align
from datamodules.video.clip_spec import ClipSpec

FPS_FILE = 10


# ------------------------------------------------------------------------------------------------ fixtures
def write_video(path, codes_per_second, fps=FPS_FILE, size=(32, 48)):
    """A gray video: second s shows gray level 32·codes_per_second[s] (0.1 s resolution: a list per 0.1 s)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        for code in codes_per_second:
            img = np.full((size[0], size[1], 3), 32 * code, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


class CodeModel(nn.Module):
    """embed_video: one-hot of each frame's gray code (round(pixel / 32)), averaged over the window; encode_text:
    one-hot of the text's trailing integer. A window entirely inside a code-k stretch scores 1 with 'thing k'."""

    def __init__(self, dim=8):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(1))
        self.preprocess = {"fps": 5.0, "num_frames": 4, "resize": 32, "crop": 32}
        self.checkpoint_path = "code-model"

    @property
    def clip_spec(self):
        return ClipSpec.from_dict(self.preprocess)

    def embed_video(self, video):
        codes = (video[:, 0, :, 16, 16].float() / 32).round().long().clamp(0, self.dim - 1)  # B×T
        return nn.functional.one_hot(codes, self.dim).float().mean(dim=1) * self.weight

    def encode_text(self, texts):
        return nn.functional.one_hot(torch.tensor([int(t.split()[-1]) for t in texts]), self.dim).float()


@pytest.fixture
def shifted_corpus(tmp_path):
    """30 s video, background code 1; code 4 flashes during [17.0, 18.0) s. Its narration 'thing 4' has ASR times
    shifted +6 s from the flash (centre 23.5 instead of 17.5); a filler line 'thing 0' names nothing on screen."""
    codes = [1] * 300
    codes[170:180] = [4] * 10
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "vidA.mp4", codes)
    captions = {"vidA": {"start": [2.0, 22.5], "end": [4.0, 24.5], "text": ["thing 0", "thing 4"]}}
    (tmp_path / "caption.json").write_text(json.dumps(captions))
    return tmp_path


# ------------------------------------------------------------------------------------------------ formats
def test_htm_align_round_trips_and_names_bad_rows(tmp_path):
    videos = {"v1": AlignedVideo("v1", np.array([True, False]), np.array([1.5, 4.0]), np.array([3.25, 6.0]),
                                 ["add the oil", "subscribe"])}
    write_htm_align(tmp_path / "a.json", videos)
    back = read_htm_align(tmp_path / "a.json")
    v = back.videos["v1"]
    assert v.texts == ["add the oil", "subscribe"] and v.alignable.tolist() == [True, False]
    np.testing.assert_array_equal(v.start, [1.5, 4.0]) and np.testing.assert_array_equal(v.end, [3.25, 6.0])
    assert back.num_sentences == 2 and back.num_alignable == 1
    # the release's own layout, as TAN's readme shows it
    (tmp_path / "r.json").write_text(json.dumps({"-3CEg4y7mQM": [[1, 10.739, 17.535, "add extra virgin olive oil"]]}))
    assert read_htm_align(tmp_path / "r.json").videos["-3CEg4y7mQM"].start[0] == 10.739
    (tmp_path / "bad.json").write_text(json.dumps({"v": [[1, 2.0, 3.0, "ok"], [2, 1.0, 0.5, "bad flag"]]}))
    with pytest.raises(AlignmentAnnotationError, match=r"bad.json: video 'v', sentence 1: alignable"):
        read_htm_align(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"v": [[1, 5.0, 3.0, "backwards"]]}))
    with pytest.raises(AlignmentAnnotationError, match="sentence 0: need finite start <= end"):
        read_htm_align(tmp_path / "bad2.json")


def test_asr_anchor_interpolates_between_non_alignable_sentences():
    v = AlignedVideo("v", np.array([False, True, True, False]), np.array([0.0, 50, 60, 30.0]),
                     np.array([2.0, 55, 65, 32.0]), list("abcd"))
    np.testing.assert_allclose(asr_anchor_times(v), [1.0, 11.0, 21.0, 31.0])   # GT times of b, c never used


def test_sidecar_round_trips_into_caption_files_and_filters(tmp_path):
    cols = {"asr_start": [0.0, 5.0, 9.0], "asr_end": [2.0, 7.0, 11.0], "pred_start": [6.0, 1.0, 9.5],
            "pred_end": [8.0, 3.0, 11.5], "score": [0.9, 0.8, 0.1], "alignability": [3.0, 2.5, 0.2],
            "margin": [0.5, np.nan, 0.01]}
    write_table(tmp_path / "alignment.parquet", video_table("v1", ["a", "b", "c"], cols))
    table = read_sidecar(tmp_path / "alignment.parquet")
    assert table.column("index").to_pylist() == [0, 1, 2]
    np.testing.assert_array_equal(table.column("margin").to_numpy()[[0, 2]], [0.5, 0.01])
    write_captions(tmp_path, captions_from_sidecar(table))
    (vid, starts, ends, texts), = list(read_caption_json(tmp_path / "caption.json"))
    assert vid == "v1" and texts == ["b", "a", "c"]                # predicted times, in time order
    np.testing.assert_array_equal(starts, [1.0, 6.0, 9.5])
    assert (tmp_path / "captions" / "v1.csv").read_text().splitlines()[1] == "1.0,3.0,b"
    kept = filtered_captions(tmp_path / "caption.json", 1.0)
    assert json.loads(kept.read_text())["v1"]["text"] == ["b", "a"]
    (tmp_path / "x").mkdir()
    with pytest.raises(SidecarError, match="alignment sidecar"):
        filtered_captions(tmp_path / "x" / "caption.json", 1.0)


# ------------------------------------------------------------------------------------------------ re-timing
def test_retime_picks_the_peak_within_the_radius_and_reports_margin():
    centres = np.arange(0, 20, 1.0)
    scores = np.zeros((2, 20))
    scores[0, 3], scores[0, 15] = 5.0, 9.0     # the better peak lies outside ±5 s of the ASR centre 4
    scores[1] = np.linspace(0.5, 1.0, 20)        # matches nothing well: its best (alignability) is low
    got = retime(scores, centres, np.array([3.0, 0.0]), np.array([5.0, 1.0]), SearchSettings(radius=5.0, stride=1.0),
                 clip_seconds=1.0, duration=20.0)
    assert got["pred_time"].tolist() == [3.0, 5.0]        # row 1: the best within ±5 s of 0.5
    assert got["pred_start"][0] == 2.0 and got["pred_end"][0] == 4.0        # ASR duration kept, centred there
    assert got["margin"][0] == pytest.approx(5.0)
    glob = retime(scores, centres, np.array([3.0, 0.0]), np.array([5.0, 1.0]), SearchSettings(radius=None),
                  clip_seconds=1.0, duration=20.0)
    assert glob["pred_time"].tolist() == [15.0, 19.0]
    assert glob["alignability"].tolist() == [9.0, 1.0] and got["alignability"].tolist() == [9.0, 1.0]


def test_a_shifted_narration_is_retimed_to_within_one_stride(shifted_corpus, tmp_path):
    out = tmp_path / "aligned"
    settings = SearchSettings(radius=10.0, stride=0.2)
    summary = align_corpus(CodeModel(), shifted_corpus / "caption.json", shifted_corpus / "videos", out, settings,
                           progress=False)
    assert summary["failed"] == 0 and summary["narrations"] == 2
    table = read_sidecar(out / "alignment.parquet").to_pandas().set_index("index")
    step = table.loc[1]
    true_centre = 17.5
    assert abs(0.5 * (step.pred_start + step.pred_end) - true_centre) <= settings.stride + 1e-6
    assert step.pred_end - step.pred_start == pytest.approx(2.0)
    assert step.asr_start == 22.5 and step.alignability > table.loc[0].alignability
    (vid, starts, ends, texts), = list(read_caption_json(out / "caption.json"))
    assert texts[-1] == "thing 4" and abs(starts[-1] - 16.5) <= settings.stride + 1e-6
    again = align_corpus(CodeModel(), shifted_corpus / "caption.json", shifted_corpus / "videos", out, settings,
                         progress=False)                                       # resume: nothing left to do
    assert again["aligned_now"] == 0 and again["narrations"] == 2
    with pytest.raises(ValueError, match="other settings"):
        align_corpus(CodeModel(), shifted_corpus / "caption.json", shifted_corpus / "videos", out,
                     SearchSettings(radius=3.0, stride=0.2), progress=False)


def test_two_shares_align_disjoint_videos_and_the_last_assembles(shifted_corpus, tmp_path):
    (shifted_corpus / "videos" / "vidB.mp4").symlink_to(shifted_corpus / "videos" / "vidA.mp4")
    captions = json.loads((shifted_corpus / "caption.json").read_text())
    captions["vidB"] = captions["vidA"]
    (shifted_corpus / "caption.json").write_text(json.dumps(captions))
    out, settings = tmp_path / "aligned", SearchSettings(radius=10.0, stride=0.2)
    first = align_corpus(CodeModel(), shifted_corpus / "caption.json", shifted_corpus / "videos", out, settings,
                         rank=0, world=2, progress=False)
    assert first["this_rank"] == 1 and "sidecar" not in first and not (out / "caption.json").exists()
    second = align_corpus(CodeModel(), shifted_corpus / "caption.json", shifted_corpus / "videos", out, settings,
                          rank=1, world=2, progress=False)
    assert second["this_rank"] == 1 and second["narrations"] == 4
    assert sorted(json.loads((out / "caption.json").read_text())) == ["vidA", "vidB"]


def test_unreadable_videos_are_listed_and_keep_their_asr_times(shifted_corpus, tmp_path):
    (shifted_corpus / "videos" / "vidB.mp4").write_bytes(b"not a video")
    captions = json.loads((shifted_corpus / "caption.json").read_text())
    captions["vidB"] = {"start": [1.0], "end": [2.0], "text": ["thing 3"]}
    (shifted_corpus / "caption.json").write_text(json.dumps(captions))
    out = tmp_path / "aligned"
    summary = align_corpus(CodeModel(), shifted_corpus / "caption.json", shifted_corpus / "videos", out,
                           SearchSettings(radius=10.0, stride=0.2), progress=False)
    assert summary["failed"] == 1 and (out / "failed.txt").read_text().startswith("vidB\t")
    rows = read_sidecar(out / "alignment.parquet").to_pandas()
    b = rows[rows.video == "vidB"].iloc[0]
    assert b.pred_start == 1.0 and math.isnan(b.score)


# ------------------------------------------------------------------------------------------------ metrics
def test_recall_at_1_by_hand():
    # segments [2.4, 5.6] → [2, 6]; [10, 12]; the non-alignable third never counts
    start, end = np.array([2.4, 10.0, 0.0]), np.array([5.6, 12.0, 1.0])
    alignable = np.array([True, True, False])
    assert recall_at_1(np.array([6.0, 9.9, 50.0]), start, end, alignable) == 50.0    # 6 ≤ ceil(5.6); 9.9 < 10
    assert recall_at_1(np.array([1.9, 12.0, 0.5]), start, end, alignable) == 50.0
    assert math.isnan(recall_at_1(np.zeros(1), np.zeros(1), np.ones(1), np.array([False])))


def test_alignability_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: of the 4 pairs 3 are ordered right → 0.75; a tie counts one half
    assert alignability_auc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.75)
    assert alignability_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert math.isnan(alignability_auc(np.array([0.1, 0.2]), np.array([1, 1])))
    m = alignment_metrics({"time": np.array([3.0, 11.0]), "alignability": np.array([2.0, 1.0]),
                           "score": np.array([0.1, 0.2])}, np.array([2.0, 0.0]), np.array([4.0, 1.0]),
                          np.array([True, False]))
    assert m["R1"] == 100.0 and m["AUC"] == 1.0 and m["AUC_max_score"] == 0.0 and m["N_alignable"] == 1
    assert median_offset(np.array([1.0, 5.0, 9.0]), np.array([2.0, 5.0, np.nan])) == 0.5


# ------------------------------------------------------------------------------------------------ evaluator
def _evaluator(corpus, tmp_path):
    # the windowed protocol's anchor for 'thing 4' is interpolated between its neighbours: (3 + 29) / 2 = 16
    texts = ["thing 0", "thing 4", "thing 0"]
    videos = {"vidA": AlignedVideo("vidA", np.array([False, True, False]), np.array([2.0, 17.0, 28.0]),
                                   np.array([4.0, 18.0, 30.0]), texts)}
    for name in ("vidC", "vidD"):
        (corpus / "videos" / f"{name}.mp4").symlink_to(corpus / "videos" / "vidA.mp4")
        videos[name] = AlignedVideo(name, *(x.copy() for x in (videos["vidA"].alignable, videos["vidA"].start,
                                                                 videos["vidA"].end)), texts)
    write_htm_align(tmp_path / "htm_align.json", videos)
    return AlignmentEvaluator(read_htm_align(tmp_path / "htm_align.json"), str(corpus / "videos"), radius=10.0,
                              stride=0.2, asr_captions=None, progress=False)


def test_evaluator_scores_and_shards_every_video_exactly_once(shifted_corpus, tmp_path, monkeypatch):
    ev = _evaluator(shifted_corpus, tmp_path)
    res = ev.evaluate(CodeModel())
    assert res.metrics["R1_global"] == 100.0 and res.metrics["R1_window"] == 100.0
    assert res.metrics["AUC"] == 1.0 and res.card["n_evaluated"] == 3
    assert "MIL-NCE S3D, global (TAN readme)" in res.card["published_r1_htm_align"]
    payloads = {}
    for r in range(2):                                   # two ranks: each alone sees only its share
        monkeypatch.setattr(eval_utils, "rank_and_world", lambda r=r: (r, 2))
        monkeypatch.setattr(eval_utils, "gather_objects", lambda obj, r=r: [payloads.setdefault(r, obj)])
        with pytest.raises(RuntimeError, match="exactly once"):
            ev.evaluate(CodeModel())
    assert sorted(v for p in payloads.values() for v in p["rows"]) == ["vidA", "vidC", "vidD"]
    monkeypatch.setattr(eval_utils, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(eval_utils, "gather_objects", lambda obj: [payloads[0], payloads[1]])
    assert ev.evaluate(CodeModel()).metrics == res.metrics
    monkeypatch.setattr(eval_utils, "gather_objects", lambda obj: [payloads[0], payloads[0], payloads[1]])
    with pytest.raises(RuntimeError, match="duplicates"):
        ev.evaluate(CodeModel())
    table = results_markdown({f"htm_align/{k}": v for k, v in res.metrics.items() if "/" not in k},
                             {"htm_align": res.card})
    assert "## Narration alignment (htm_align)" in table and "| 100.0 | 100.0 | 1.000 | – |" in table


# ------------------------------------------------------------------------------------------------ toy corpus
def test_toy_alignment_split_flags_step_lines_and_keeps_the_default_corpus(tmp_path):
    cfg = ToyCorpusConfig.small(num_align_videos=3, offset_distribution="normal", narration_offset=5.0)
    tasks, plans = plan_corpus(cfg)
    held = [p for p in plans if p.split == "htm_align"]
    assert len(held) == 3 and not {p.video_id for p in held} & {p.video_id for p in plans if p.split == "howto100m"}
    toy_write_htm_align(tmp_path, held)
    ann = read_htm_align(tmp_path / "htm_align" / "htm_align.json")
    for p in held:
        v = ann.videos[p.video_id]
        for line, flag, s, e in zip(p.timeline.lines, v.alignable, v.start, v.end):
            assert flag == (line.segment >= 0)
            if flag:
                seg = p.timeline.segments[line.segment]
                assert (s, e) == (seg.start, seg.end) and seg.start <= line.anchor <= seg.end
            else:
                assert (s, e) == (line.start, line.end)
    assert [len(t) for *_, t in read_caption_json(tmp_path / "htm_align" / "caption.json")] == \
        [len(p.timeline.lines) for p in held]
    default = manifest_config(ToyCorpusConfig())
    assert "num_align_videos" not in default and "offset_distribution" not in default
    _, base = plan_corpus(ToyCorpusConfig.small())
    _, same = plan_corpus(ToyCorpusConfig.small(num_align_videos=2))
    assert [ln.start for p in base for ln in p.timeline.lines] == \
        [ln.start for p in same if p.split != "htm_align" for ln in p.timeline.lines]


def test_toy_offset_distributions_have_their_scale():
    def offsets(**kw):
        _, plans = plan_corpus(ToyCorpusConfig.small(num_train_videos=60, **kw))
        return np.array([ln.offset for p in plans for ln in p.timeline.lines if ln.anchor is not None])

    uniform, lag = offsets(narration_offset=2.0), offsets(offset_distribution="lag", narration_offset=2.0)
    assert np.abs(uniform).max() <= 2.0 + 1e-6 and np.median(np.abs(uniform)) == pytest.approx(1.0, abs=0.25)
    assert np.median(lag) == pytest.approx(2.0, abs=0.4) and (lag > -0.05).mean() > 0.95
    normal = offsets(offset_distribution="normal", narration_offset=4.0)
    assert np.median(np.abs(normal)) == pytest.approx(0.674 * 4.0, abs=0.6)   # |N(0, σ)| median = 0.674σ
    with pytest.raises(ValueError, match="offset_distribution"):
        ToyCorpusConfig(offset_distribution="cauchy")


def test_pretraining_reads_retimed_captions_with_their_own_index_and_filter(tmp_path):
    (tmp_path / "howto100m").mkdir()
    (tmp_path / "howto100m" / "caption.json").write_text(json.dumps({"v1": {"start": [0.0], "end": [2.0],
                                                                            "text": ["asr"]}}))
    aligned = tmp_path / "aligned"
    cols = {"asr_start": [0.0, 5.0], "asr_end": [2.0, 7.0], "pred_start": [3.0, 8.0], "pred_end": [5.0, 10.0],
            "score": [0.9, 0.1], "alignability": [0.9, 0.1], "margin": [0.1, 0.1]}
    write_table(aligned / "alignment.parquet", video_table("v1", ["kept", "dropped"], cols))
    write_captions(aligned, captions_from_sidecar(read_sidecar(aligned / "alignment.parquet")))

    def module(**kw):
        return HowTo100MDataModule(OmegaConf.merge(OmegaConf.structured(DataConfig), {"root": str(tmp_path), **kw}))

    default = module()
    assert default.index_dir == tmp_path / "howto100m" / "narration_index"
    retimed = module(captions=str(aligned / "caption.json"))
    assert retimed.index_dir.parent == aligned and retimed.index_dir != default.index_dir
    filtered = module(captions=str(aligned / "caption.json"), min_alignability=0.5)
    assert json.loads(filtered.captions.read_text())["v1"]["text"] == ["kept"]
    assert filtered.index_dir not in (default.index_dir, retimed.index_dir)


def _ddp_worker(rank, world, port, corpus, annotation, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ev = AlignmentEvaluator(read_htm_align(annotation), str(corpus / "videos"), radius=10.0, stride=0.2,
                                progress=False)
        res = ev.evaluate(CodeModel())
        torch.save({"metrics": res.metrics, "card": res.card}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow   # spawns 2 gloo processes (~20 s on 2 shared cores); the sharding is also tested above
def test_evaluator_under_gloo_ddp_sees_every_video_exactly_once(shifted_corpus, tmp_path):
    import socket

    import torch.multiprocessing as mp
    single = _evaluator(shifted_corpus, tmp_path).evaluate(CodeModel())   # 3 videos: uneven over 2 ranks
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, shifted_corpus, tmp_path / "htm_align.json", str(tmp_path)), nprocs=2,
             join=True)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        assert got["metrics"] == single.metrics and got["card"]["n_evaluated"] == 3


def test_a_rewritten_caption_file_rebuilds_its_narration_index(tmp_path):
    """Re-aligning into the same folder rewrites caption.json: the next run indexes the new times, not the old."""
    import os

    from datamodules.howto100m import HowTo100MDataModule
    from milnce.config import DataConfig
    from omegaconf import OmegaConf

    out = tmp_path / "aligned"
    out.mkdir()
    captions = out / "caption.json"
    captions.write_text(json.dumps({"v1": {"start": [0.0, 5.0], "end": [2.0, 7.0], "text": ["stir it", "pour"]}}))
    cfg = OmegaConf.structured(DataConfig(dataset="howto100m", root=str(tmp_path / "corpus"), captions=str(captions)))
    first = HowTo100MDataModule(cfg, progress=False)
    first.prepare_data()
    index_json = first.index_dir / "index.json"
    captions.write_text(json.dumps({"v1": {"start": [1.0, 6.0], "end": [3.0, 8.0], "text": ["stir it", "pour"]}}))
    built = index_json.stat().st_mtime
    os.utime(captions, (built + 10, built + 10))
    second = HowTo100MDataModule(cfg, progress=False)
    second.prepare_data()
    from datamodules.narrations.index import NarrationIndex
    starts, _ = NarrationIndex.open(second.index_dir).times(0)
    assert list(starts) == [1.0, 6.0]
