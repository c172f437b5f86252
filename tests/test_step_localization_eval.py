"""StepLocalizationEvaluator end to end on a written CrossTask layout with a deterministic decoder and module."""
import json

import numpy as np
import pytest
import torch

from datamodules.benchmarks.crosstask import CrossTaskRelease
from eval_fakes import FakeIO, FakeModule
from milnce.eval.localization_eval import StepLocalizationEvaluator

FPS = 4.0   # num_frames 4 / window_seconds 1.0
TASKS = "100\nMake Tea\nhttp://w/tea\n3\nboil 1,steep 2,pour 3\n\n200\nJack Up\nhttp://w/jack\n2\nlift 1,lower 2\n\n"
ANNOTATIONS = {"100": ["1,2,5", "2,8,11", "3,14,17"], "200": ["1,1,4", "2,6,9"], "tiny": ["1,0,1"]}


def timeline(key, seconds):
    codes = torch.zeros(int(seconds * FPS), dtype=torch.uint8)
    for row in ANNOTATIONS[key]:
        k, a, b = row.split(",")
        codes[int(float(a) * FPS):int(float(b) * FPS)] = int(k)
    return codes


def make_release(tmp_path):
    root = tmp_path / "crosstask"
    (root / "annotations").mkdir(parents=True)
    (root / "videos").mkdir()
    (root / "tasks_primary.txt").write_text(TASKS)
    rows, durations, timelines = [], {}, {}
    for task, vids in (("100", ["t0", "t1", "t2", "tiny", "broken_x", "gone"]), ("200", ["j0", "j1"])):
        for v in vids:
            rows.append(f"{task},{v},http://y/{v}")
            key = "tiny" if v == "tiny" else task
            (root / "annotations" / f"{task}_{v}.csv").write_text("\n".join(ANNOTATIONS[key]) + "\n")
            if v == "gone":
                continue
            path = root / "videos" / f"{v}.mp4"
            path.write_bytes(b"")
            seconds = 2.0 if v == "tiny" else 20.5
            durations[str(path)] = seconds
            timelines[str(path)] = timeline(key, seconds)
    (root / "videos.csv").write_text("\n".join(rows) + "\n")
    (root / "videos_val.csv").write_text("")
    return CrossTaskRelease(root), FakeIO(durations=durations, timelines=timelines)


def make_evaluator(release, io, **kw):
    kw = {"window_seconds": 1.0, "num_frames": 4, "size": 8, "use_split": False, "progress": False, **kw}
    return StepLocalizationEvaluator(release, io=io.io(), **kw)


def test_window_frames_are_centred_on_each_second():
    ev = StepLocalizationEvaluator.__new__(StepLocalizationEvaluator)
    ev.fps, ev.num_frames = 5.0, 16                         # the default 3.2 s window
    a = ev.window_frame_starts(30, 150)
    mean_time = (a + 7.5) / 5.0
    np.testing.assert_allclose(mean_time[2:28], np.arange(2, 28) + 0.5)
    assert a[0] == 0 and a[-1] == 150 - 16                  # shifted inside the video at both ends
    ev.fps, ev.num_frames = 4.0, 4
    off = (ev.window_frame_starts(10, 40)[1:-1] + 1.5) / 4.0 - (np.arange(1, 9) + 0.5)
    assert np.all(np.abs(off) <= 0.5 / 4.0)                # rounded to the frame grid: within half a frame


def test_perfect_scores_give_full_recall_and_a_card(tmp_path):
    release, io = make_release(tmp_path)
    module = FakeModule()
    module.train()
    res = make_evaluator(release, io, out_dir=tmp_path / "out", num_plots=2).evaluate(module)
    m, card = res.metrics, res.card
    # task 100: t0,t1,t2 perfect (9 hits / 9) + tiny (T=2 < K=3: empty prediction, its 1 annotated step counts)
    assert m["recall"] == pytest.approx((100 * 9 / 10 + 100.0) / 2)
    assert m["recall_per_video"] == pytest.approx((100 * 3 / 4 + 100.0) / 2)
    assert m["recall_argmax"] == pytest.approx((100 * 10 / 10 + 100.0) / 2)   # argmax still picks frame 0 or 1
    assert m["n_videos"] == 6 and m["n_tasks"] == 2
    assert 0 < m["chance/recall"] < 50
    assert card["n_failed"] == 1 and "broken_x" in card["failed"][0]
    assert card["n_missing_videos"] == 1
    assert card["videos_t_less_than_k_empty_prediction"] == 1
    assert card["per_task"]["100"]["evaluated"] == 4 and card["per_task"]["200"]["evaluated"] == 2
    assert card["fps"] == FPS and card["cost"] == "-log_softmax over steps"
    assert module.training and not any(module.training_flags)
    assert len(card["plots"]) == 2 and all((tmp_path / "out" / "crosstask").glob("*.png"))
    assert json.loads((tmp_path / "out" / "crosstask_card.json").read_text())["n_failed"] == 1
    assert (tmp_path / "out" / "crosstask_missing.csv").read_text() == "100,gone\n"
    y = res.videos["100"]["t0"]
    assert y["scores"].shape == (21, 3) and y["y_pred"].sum() == 3


def test_chunked_decoding_gives_the_same_scores(tmp_path):
    release, io = make_release(tmp_path)
    whole = make_evaluator(release, io, chunk_seconds=60).evaluate(FakeModule())
    assert io.video_calls and not [c for c in io.calls if "t0" in c[0]]
    io.calls.clear()
    chunked = make_evaluator(release, io, chunk_seconds=6, window_batch=5).evaluate(FakeModule())
    assert len([c for c in io.calls if c[0].endswith("t0.mp4")]) == 4          # 21 s in chunks of 6 s
    for task, vids in whole.videos.items():
        for v, rec in vids.items():
            np.testing.assert_allclose(chunked.videos[task][v]["scores"], rec["scores"])
    assert chunked.metrics == whole.metrics


def test_split_subset_and_options(tmp_path):
    release, io = make_release(tmp_path)
    ev = make_evaluator(release, io, use_split=True, train_videos_per_task=2, cost="similarity")
    # task 100 has 5 available videos (gone is missing) → 3 test videos; task 200 has 2 → none
    assert ev.split_info["per_task"]["100"]["test"] == 3 and ev.split_info["per_task"]["200"]["test"] == 0
    assert len(ev.videos) == 3
    res = ev.evaluate(FakeModule(), ev.subset_indices(2))
    assert res.card["subset"] is True and res.card["n_requested"] == 2 and res.card["cost"] == "-similarity"
    with pytest.raises(ValueError, match="unknown cost"):
        make_evaluator(release, io, cost="softmax")


def test_model_errors_and_bad_annotations_are_not_counted_as_failed_videos(tmp_path):
    release, io = make_release(tmp_path)

    class Exploding(FakeModule):
        def embed_video(self, video):
            raise RuntimeError("shape mismatch in the tower")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        make_evaluator(release, io).evaluate(Exploding())
    bad = release.annotation_path("200", "j0")
    bad.write_text("1,1,4\n7,2,3\n")
    with pytest.raises(ValueError, match="200_j0.csv:2: step 7 outside 1..2"):
        make_evaluator(release, io).evaluate(FakeModule())
