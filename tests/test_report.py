import json

import pytest

from milnce.eval.report import retrieval_series, write_report


def _run_dir(tmp_path, finished=True):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    lines = ["epoch,step,train/loss,youcook2_subset/R1,youcook2_subset/R10,youcook2_subset/R5,youcook2/R1,"
             "youcook2/R5,youcook2/R10,youcook2/v2t/R10,chance/youcook2/R10,crosstask/recall"]
    for step in range(9, 100, 10):
        lines.append(f"0,{step},{5.0 - step / 50:.3f},,,,,,,,,")
        if step in (49, 99):
            lines.append(f"0,{step},,{step / 10},{step / 5},{step / 7},,,,,,")
    lines.append("0,100,,,,,12.5,30.0,45.0,50.0,6.8,33.0")
    (run / "logs" / "metrics.csv").write_text("\n".join(lines) + "\n")
    if finished:
        (run / "metrics.json").write_text(json.dumps({
            "youcook2/R1": 12.5, "youcook2/R5": 30.0, "youcook2/R10": 45.0, "youcook2/MedR": 14.0,
            "chance/youcook2/R10": 6.8, "crosstask/recall": 33.0, "chance/crosstask/recall": 20.0,
            "train/steps": 100.0}))
        (run / "protocol_cards.json").write_text(json.dumps({
            "youcook2": {"dataset": "youcook2", "n_evaluated": 30, "n_listed": 30, "windows": 5,
                         "missing": [f"m{i}" for i in range(25)]},
            "crosstask": {"dataset": "crosstask", "n_evaluated": 4, "inference": "dp",
                          "per_task": {"111": {"title": "Wake the Shapes", "recall": 40.0},
                                       "222": {"title": "Party Lights", "recall": 26.0},
                                       "333": {"title": "Not evaluated", "recall": None}}}}))
    return run


def test_retrieval_series_finds_each_logged_prefix(tmp_path):
    import pandas as pd

    frame = pd.read_csv(_run_dir(tmp_path) / "logs" / "metrics.csv")
    series = retrieval_series(frame)
    assert sorted(series) == ["youcook2", "youcook2_subset"]          # not chance/…, not v2t
    assert series["youcook2_subset"]["step"].tolist() == [49, 99]
    assert series["youcook2_subset"]["R10"].tolist() == pytest.approx([9.8, 19.8])
    assert series["youcook2"]["R1"].tolist() == [12.5]


def test_report_has_plots_final_metrics_and_cards(tmp_path):
    from PIL import Image

    run = _run_dir(tmp_path)
    report = write_report(run)
    text = report.read_text()
    for name in ("train_loss.png", "retrieval_recall.png", "crosstask_per_task.png"):
        png = run / "report" / name
        assert f"(report/{name})" in text
        assert Image.open(png).size[0] > 300
    assert "10 logged steps, first 4.8200 at step 9, last 3.0200 at step 99" in text
    assert "youcook2_subset: 2 evaluations; at step 99: R1 9.9, R5 14.1, R10 19.8" in text
    assert "| youcook2 | 30/30 | 12.5 | 30.0 | 45.0 | 14.0 |" in text
    assert "recall (Zhukov" in text and "| 33.0 | 20.0 |" in text
    assert '"windows": 5' in text and "… 15 more" in text                # cards, long lists shortened


def test_report_on_a_run_still_training(tmp_path):
    run = _run_dir(tmp_path, finished=False)
    text = write_report(run).read_text()
    assert "has not finished" in text and "No CrossTask evaluation" in text
    assert (run / "report" / "train_loss.png").is_file()


def test_report_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        write_report(tmp_path / "nope")
    run = _run_dir(tmp_path)
    (run / "metrics.json").write_text("{broken")
    with pytest.raises(ValueError, match="metrics.json"):
        write_report(run)


def test_time_to_accuracy_plots_r10_against_steps_and_seconds(tmp_path):
    from PIL import Image

    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    lines = ["epoch,step,train/loss,youcook2_subset/R10,youcook2/R10,time/train_seconds"]
    for step, r10, sec in ((25, 20.0, 30.5), (50, 41.0, 61.0), (75, 60.0, 92.25)):
        lines += [f"0,{step},1.0,,,", f"0,{step},,{r10},,{sec}"]
    lines.append("0,100,,,80.0,123.0")
    (run / "logs" / "metrics.csv").write_text("\n".join(lines) + "\n")
    text = write_report(run).read_text()
    assert "(report/time_to_accuracy.png)" in text
    assert Image.open(run / "report" / "time_to_accuracy.png").size[0] >= 900     # two panels: steps, seconds
    assert "youcook2_subset R@10 — step 25 (30 s): 20.0; step 50 (61 s): 41.0; step 75 (92 s): 60.0" in text
    assert "youcook2 R@10 — step 100 (123 s): 80.0" in text
    assert "youcook2 R@1 —" not in text                       # no R1 column logged, no R@1 line
