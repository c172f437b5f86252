"""The action-recognition linear probe: classifier, splits → features → top-1, feature cache, `milnce probe`."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from api_fakes import grey_ramp_video, save_lightning_checkpoint, tiny_module, write_video
from datamodules.benchmarks.action_split import ActionSplit, SplitFileError
from milnce.commands.probe import main as probe_main
from milnce.config import load_config
from milnce.eval.probe import (ProbeError, chance_top1, fit_logistic, flat_metrics, pick_feature, probe_split,
                               run_probe, top1)

COLOURS = {"Archery": (220, 30, 30), "Biking": (30, 200, 40), "Diving": (40, 60, 230)}


def _cfg(**kw):
    base = dict(dataset="ucf101", video_root=None, split_dir=None, splits=[1], num_clips=2, num_frames=4, fps=4.0,
                size=32, feature="auto", l2=1e-3, max_iter=100, standardize=True, cache_dir=None, batch_size=8)
    base.update(kw)
    return SimpleNamespace(**base)


def _ucf_release(root, per_class=4):
    """A UCF-101 layout: UCF-101/<Class>/v_<Class>_gGG_c01.avi (stored as .mp4) + ucfTrainTestlist for split 1."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(COLOURS, 1)))
    train, test = [], []
    for i, (name, colour) in enumerate(COLOURS.items(), 1):
        for g in range(1, per_class + 1):
            vid = f"v_{name}_g{g:02d}_c01"
            write_video(root / "UCF-101" / name / f"{vid}.mp4", seconds=2.0, colour=colour)
            (test.append(f"{name}/{vid}.avi\n") if g == 1 else train.append(f"{name}/{vid}.avi {i}\n"))
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text("".join(test))
    return root


class CountingTower(torch.nn.Module):
    """Mean colour per channel as the 'pooled' feature; counts its calls (the cache must avoid them)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, video):
        self.calls += 1
        pooled = video.mean(dim=(2, 3, 4)) * self.scale
        return {"video_embedding": pooled[:, :2], "pooled": pooled}


def test_logistic_probe_on_separable_features_is_perfect():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 4
    y = np.repeat(np.arange(5), 20)
    x = centres[y] + rng.normal(size=(100, 16))
    scores = fit_logistic(x[::2], y[::2], 5, l2=1e-3)
    assert top1(scores(x[1::2]), y[1::2]) == 100.0
    split = ActionSplit("ucf101", 1, [f"c{i}" for i in range(5)],
                        train=[(f"v{i}", int(y[i])) for i in range(0, 100, 2)],
                        test=[(f"v{i}", int(y[i])) for i in range(1, 100, 2)])
    r = probe_split(split, {f"v{i}": x[i] for i in range(100)}, 1e-3, 100, True)
    assert r["top1"] == 100.0 and r["train_top1"] == 100.0
    assert chance_top1(split) == 20.0


def test_logistic_probe_is_deterministic_and_checks_shapes():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    assert np.array_equal(fit_logistic(x, y, 3)(x), fit_logistic(x, y, 3)(x))
    with pytest.raises(ProbeError, match="N×D"):
        fit_logistic(x, y[:10], 3)


def test_feature_key_choice():
    assert pick_feature({"video_embedding": 0, "mixed_5c": 1}, "auto") == "mixed_5c"
    assert pick_feature({"video_embedding": 0, "pooled": 1}, "auto") == "pooled"
    assert pick_feature({"video_embedding": 0}, "auto") == "video_embedding"
    with pytest.raises(ProbeError, match="returns no 'mixed_5c'"):
        pick_feature({"video_embedding": 0}, "mixed_5c")


def test_probe_on_videos_reads_splits_extracts_and_caches(tmp_path):
    root = _ucf_release(tmp_path / "ucf101")
    tower = CountingTower()
    cfg = _cfg(video_root=str(root / "UCF-101"), split_dir=str(root / "ucfTrainTestlist"))
    first = run_probe(tower, cfg, cache_dir=str(tmp_path / "cache"), model_key="colour", progress=False)
    assert first.metrics["top1"] == 100.0 and first.metrics["top1_split1"] == 100.0     # colour separates classes
    assert abs(first.metrics["chance_top1"] - 100 / 3) < 1e-9
    card = first.card
    assert card["feature"] == "pooled" and card["feature_dim"] == 3 and not card["features_from_cache"]
    assert card["clips"]["num_clips"] == 2 and card["splits"][0]["num_train"] == 9 and card["num_videos"] == 12
    calls = tower.calls
    again = run_probe(tower, _cfg(**{**vars(cfg), "l2": 1e-1}), cache_dir=str(tmp_path / "cache"),
                      model_key="colour", progress=False)
    assert tower.calls == calls and again.card["features_from_cache"]           # the l2 sweep decodes nothing
    run_probe(tower, cfg, cache_dir=str(tmp_path / "cache"), model_key="other weights", progress=False)
    assert tower.calls > calls                                                     # another model: no stale cache
    assert flat_metrics("ucf101", first.metrics)["chance/ucf101/top1"] == first.metrics["chance_top1"]


def test_probe_errors_name_what_is_wrong(tmp_path):
    root = _ucf_release(tmp_path / "ucf101", per_class=2)
    lists = root / "ucfTrainTestlist"
    cfg = _cfg(video_root=str(root / "UCF-101"), split_dir=str(lists))
    with pytest.raises(SplitFileError, match="trainlist02.txt"):
        run_probe(CountingTower(), _cfg(**{**vars(cfg), "splits": [2]}), progress=False)
    with pytest.raises(ProbeError, match="unknown dataset 'kinetics'"):
        run_probe(CountingTower(), _cfg(**{**vars(cfg), "dataset": "kinetics"}), progress=False)
    (root / "UCF-101" / "Biking" / "v_Biking_g01_c01.mp4").unlink()
    with pytest.raises(ProbeError, match="1 of 6 videos .* not under .*Biking/v_Biking_g01_c01.avi"):
        run_probe(CountingTower(), cfg, progress=False)
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi 1\n")
    with pytest.raises(SplitFileError, match="testlist01.txt:1"):
        run_probe(CountingTower(), cfg, progress=False)


def test_probe_command_on_a_checkpoint_writes_metrics_and_card(tmp_path, capsys):
    _ucf_release(tmp_path / "data" / "ucf101")
    ckpt = save_lightning_checkpoint(tiny_module(), tmp_path / "tiny.ckpt")
    run_dir = tmp_path / "run"
    args = ["conf/probe_toy.yaml", f"checkpoint={ckpt}", f"run_dir={run_dir}", f"data.root={tmp_path / 'data'}",
            "probe.splits=[1]", "probe.num_clips=2", "probe.num_frames=4", "probe.fps=4.0", "probe.size=32"]
    assert probe_main(args) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["ucf101/top1"] <= 100 and metrics["ucf101/top1"] == metrics["ucf101/top1_split1"]
    card = json.loads((run_dir / "protocol_cards.json").read_text())["ucf101_probe"]
    assert card["feature"] == "mixed_5c" and card["checkpoint"] == str(ckpt)
    assert "Linear probe" in (run_dir / "results.md").read_text()
    assert list((run_dir / "probe_features").glob("*.npz"))
    assert probe_main(args[:3] + ["probe.splits=[3]"] + args[3:4]) == 2
    assert "trainlist03.txt: cannot read the split file" in capsys.readouterr().err


def test_probe_config_section_rejects_unknown_keys():
    cfg = load_config("conf/probe_toy.yaml", ["probe.l2=0.01"])
    assert cfg.probe.l2 == 0.01 and cfg.probe.dataset == "ucf101"
    with pytest.raises(Exception, match="probe.nonsense"):
        load_config("conf/probe_toy.yaml", ["probe.nonsense=1"])


def _ramp_video(path, num_frames=30, fps=10):
    return grey_ramp_video(path, num_frames, fps, width=40, height=30, lossless=True)


def test_original_protocol_windows_start_at_frame_indices(tmp_path):
    from milnce.eval.probe_original import native_windows

    windows = native_windows(_ramp_video(tmp_path / "ramp.mp4"), num_clips=3, num_frames=4, size=16)
    assert windows.shape == (3, 3, 4, 16, 16) and windows.dtype == torch.uint8
    levels = windows.float().mean(dim=(1, 3, 4)) / 8                      # 3 windows × 4 frames → frame index
    expected = np.array([[s + i for i in range(4)] for s in np.linspace(0, 30 - 4, 3, dtype=int)])   # 0, 13, 26
    assert np.allclose(levels.numpy(), expected, atol=0.05)
    short = native_windows(_ramp_video(tmp_path / "short.mp4", num_frames=3), num_clips=2, num_frames=4, size=16)
    assert short.shape == (2, 3, 4, 16, 16) and int(short[:, :, 3].max()) == 0          # zero-padded tail


def test_original_protocol_is_an_option_with_its_own_card_and_cache(tmp_path):
    root = _ucf_release(tmp_path / "ucf101")
    tower = CountingTower()
    cfg = _cfg(video_root=str(root / "UCF-101"), split_dir=str(root / "ucfTrainTestlist"), protocol="original",
               svc_c=100.0, num_clips=3)
    result = run_probe(tower, cfg, cache_dir=str(tmp_path / "cache"), model_key="colour", progress=False)
    assert result.metrics["top1"] == 100.0
    card = result.card
    assert card["protocol"] == "original" and card["classifier"]["C"] == 100.0 and "differs_from_original" not in card
    assert card["clips"]["fps"].startswith("native") and card["feature_dim"] == 3
    assert tower.calls == 12                                                 # one forward per video: 3 windows
    calls = tower.calls
    ours = run_probe(tower, _cfg(**{**vars(cfg), "protocol": "ours"}), cache_dir=str(tmp_path / "cache"),
                     model_key="colour", progress=False)
    assert tower.calls > calls and ours.card["protocol"] == "ours"          # the other protocol is not served stale
    with pytest.raises(ProbeError, match="probe.protocol"):
        run_probe(tower, _cfg(**{**vars(cfg), "protocol": "paper"}), progress=False)


def test_window_svc_sums_decision_scores_over_windows():
    from milnce.eval.probe_original import svc_split

    # Class 0 videos: windows near +e0; class 1: near +e1. The test video has one window that looks like class 1
    # and two strongly class 0: the summed scores pick 0, a vote over its first window alone would pick 1.
    rng = np.random.default_rng(0)
    e = np.eye(2) * 3
    windows = {f"a{i}": e[0] + 0.1 * rng.normal(size=(3, 2)) for i in range(4)}
    windows.update({f"b{i}": e[1] + 0.1 * rng.normal(size=(3, 2)) for i in range(4)})
    windows["t"] = np.array([e[1] * 0.4, e[0] * 2, e[0] * 2])
    split = ActionSplit("ucf101", 1, ["A", "B"], train=[(f"a{i}", 0) for i in range(4)] + [(f"b{i}", 1)
                                                                                           for i in range(4)],
                        test=[("t", 0)])
    r = svc_split(split, windows, c=100.0)
    assert r["top1"] == 100.0 and r["train_top1"] == 100.0
