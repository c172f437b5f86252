"""tools/probe_table.py's table and JSON line (the run itself is measured in the README, too slow for the suite)."""
import json
from pathlib import Path

import pytest

from milnce.config import ConfigError
from milnce.eval.probe import ProbeResult
from milnce.train.probe_table import format_table, summary_line, table_config


def _result(top1s, chance=16.7):
    metrics = {f"top1_split{i}": v for i, v in enumerate(top1s, 1)}
    metrics.update({f"chance_top1_split{i}": chance for i in range(1, len(top1s) + 1)})
    metrics["top1"] = sum(top1s) / len(top1s)
    metrics["chance_top1"] = chance
    card = {"splits": [{"num_classes": 6}], "num_videos": 72, "feature": "pooled", "feature_dim": 256,
            "clips": {"num_clips": 4}}
    return ProbeResult(metrics, card)


def test_table_and_last_line():
    rows = {"checkpoint": "x.ckpt", "seed": 0, "trained": _result([90.0, 80.0, 70.0]),
            "random": _result([40.0, 50.0, 60.0])}
    table = format_table(rows)
    assert "| pretrained | 90.0 | 80.0 | 70.0 | 80.0 |" in table
    assert "| random init (seed 0) | 40.0 | 50.0 | 60.0 | 50.0 |" in table
    assert "chance" in table
    assert json.loads(summary_line(rows)) == {"probe_top1": 80.0, "random_top1": 50.0, "chance_top1": 16.7}


def test_table_config_turns_the_action_split_on_and_checks_overrides(tmp_path):
    cfg = table_config(tmp_path, 50, ["probe.num_clips=2"])
    assert cfg.toy.num_action_videos_per_class > 0 and cfg.trainer.max_steps == 50
    assert cfg.data.root == str(tmp_path / "toy") and cfg.probe.num_clips == 2
    assert cfg.eval.retrieval == [] and cfg.eval.crosstask is None
    with pytest.raises(ConfigError, match="probe.clips"):
        table_config(tmp_path, 50, ["probe.clips=2"])
