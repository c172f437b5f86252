"""The learning-efficiency tools on the tiny corpus: the step benchmark and the loss comparison."""
import json
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, tiny_run_overrides
from milnce.config import load_config
from milnce.train.step_benchmark import PARTS, benchmark_step, parts_table

DEMO = ROOT / "conf" / "demo.yaml"


def test_step_benchmark_times_ours_and_bare_on_the_same_batches(tiny_toy_corpus, tmp_path):
    cfg = load_config(DEMO, tiny_run_overrides(tiny_toy_corpus, tmp_path / "run"))
    result = benchmark_step(cfg, steps=3, warmup=1, rounds=1)
    assert result["ms_per_step"] > 0 and result["bare_ms_per_step"] > 0
    ms, bare = result["ms_per_step"], result["bare_ms_per_step"]
    rounding = 0.005 * (1 + ms / bare) / bare + 5e-5      # ms values carry 2 decimals, the fraction 4
    assert result["overhead_fraction"] == pytest.approx(ms / bare - 1, abs=rounding)
    assert set(result["parts_ms"]) == set(PARTS) and all(v >= 0 for v in result["parts_ms"].values())
    # the parts of the bare step add up to (about) the bare step, which runs the same computation
    parts = result["parts_ms"]
    assert parts["video_forward"] > 0 and parts["backward"] > 0
    table = parts_table(result)
    assert "framework overhead" in table and "video tower forward" in table
    assert not (tmp_path / "run").exists()          # the benchmark leaves no run behind


def test_bench_step_tool_ends_with_the_contract_json(tiny_toy_corpus, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import bench_step

    rc = bench_step.main([str(DEMO), *tiny_run_overrides(tiny_toy_corpus, tmp_path / "run"), "--steps", "2",
                          "--warmup", "1", "--rounds", "1"])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"ms_per_step", "bare_ms_per_step", "overhead_fraction"} <= set(last)


def test_compare_losses_trains_each_loss_with_what_it_needs(tiny_toy_corpus, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import compare_losses

    overrides = tiny_run_overrides(tiny_toy_corpus, tmp_path / "unused") + ["trainer.max_steps=2",
                                                                            "eval.crosstask=null"]
    rc = compare_losses.main(["--work-dir", str(tmp_path / "cmp"), "--set", *overrides])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    last = json.loads(out[-1])
    assert set(last) == {"mil_nce", "nce", "max_margin"} and all(0 <= v <= 100 for v in last.values())
    assert any(line.startswith("| max_margin |") for line in out)
    for row, loss, k in (("mil_nce", "mil_nce", 3), ("nce", "nce", 1), ("max_margin", "max_margin", 1)):
        cfg = OmegaConf.load(tmp_path / "cmp" / row / "config.yaml")
        assert cfg.model.loss == loss and cfg.data.num_candidates == k
        assert json.loads((tmp_path / "cmp" / row / "metrics.json").read_text())["train/steps"] == 2
    table = json.loads((tmp_path / "cmp" / "table.json").read_text())
    assert set(table["rows"]) == {"mil_nce", "nce", "max_margin"}


def test_lever_table_measures_every_row_and_trains_the_learning_ones(tiny_toy_corpus, tmp_path):
    from milnce.train.lever_table import format_table, lever_table

    overrides = tiny_run_overrides(tiny_toy_corpus, tmp_path / "unused") + ["trainer.max_steps=4"]
    rows = lever_table(str(DEMO), str(tmp_path / "levers"), ["raw_dot_product", "no_flush_denormal"], overrides,
                       bench_steps=2)
    assert [r["name"] for r in rows] == ["demo", "raw_dot_product", "no_flush_denormal"]   # demo row first
    assert all(r["ms_per_step"] > 0 for r in rows)
    demo, half, speed = rows
    assert demo["steps"] == 4 and "metrics" in demo and "metrics" in half
    assert half["steps"] == round(4 * demo["ms_per_step"] / half["ms_per_step"])     # the same time budget
    assert speed["speed_only"] and "metrics" not in speed
    cfg = OmegaConf.load(tmp_path / "levers" / "raw_dot_product" / "config.yaml")
    assert not cfg.model.loss_args.normalize and cfg.model.loss_args.temperature is None
    assert cfg.trainer.max_steps == half["steps"]
    table = format_table(rows)
    assert "speed only" in table and "| demo:" in table
