"""The training entry point end to end: config errors, a fast_dev_run of the demo, metrics.json, every tower."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_run_overrides
from milnce.config import ConfigError, load_config
from milnce.train.run import train

DEMO = ROOT / "conf" / "demo.yaml"


def test_unknown_key_is_an_error_naming_the_valid_ones():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), str(DEMO), "model.s3d.widht_mult=0.5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "model.s3d.widht_mult" in proc.stderr
    assert "model.s3d.width_mult" in proc.stderr  # the valid keys are listed


def test_wrong_type_and_yaml_key_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.batch_size"):
        load_config(DEMO, ["data.batch_size=many"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  video_towr: s3d\n")
    with pytest.raises(ConfigError, match="video_towr"):
        load_config(bad)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(DEMO, ["trainer.max_steps"])


def test_demo_fast_dev_run_writes_metrics(tiny_toy_corpus, tmp_path):
    cfg = load_config(DEMO, tiny_run_overrides(tiny_toy_corpus, tmp_path / "run") + ["trainer.fast_dev_run=true"])
    metrics = train(cfg)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    for key in ("youcook2/R1", "youcook2/R10", "youcook2/MedR", "chance/youcook2/R10", "crosstask/recall",
                "chance/crosstask/recall"):
        assert key in written, key
    assert written["train/steps"] == 1
    assert float(torch.tensor([1e-40]) * 1.0) != 0.0    # the demo's flush_denormal ends with the run
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert "Text→video retrieval" in (tmp_path / "run" / "results.md").read_text()


@pytest.mark.parametrize("video_tower,text_tower", [("s3d", "word2vec"), ("r2plus1d", "word2vec"), ("vit", "hf")])
def test_each_tower_trains_a_few_steps(tiny_toy_corpus, tmp_path, video_tower, text_tower):
    overrides = tiny_run_overrides(tiny_toy_corpus, tmp_path / "run") + [
        f"model.video_tower={video_tower}", f"model.text_tower={text_tower}", "trainer.max_steps=2",
        "eval.retrieval=[]", "eval.crosstask=null", "model.vit.image_size=32", "model.vit.patch_size=8",
        "model.vit.hidden_size=32", "model.vit.num_layers=1", "model.vit.num_heads=2",
        "model.vit.intermediate_size=64", "model.hf_text.max_length=12", "model.hf_text.freeze_layers=5"]
    cfg = load_config(DEMO, overrides)
    metrics = train(cfg)
    assert metrics["train/steps"] == 2
    assert torch.isfinite(torch.tensor(metrics["train/final_loss"]))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["milnce"]["model"]["video_tower"] == video_tower
    assert any(k.startswith("video_tower.") for k in ckpt["state_dict"])


def test_evaluate_tool_on_a_trained_checkpoint(tiny_toy_corpus, tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import evaluate as evaluate_tool

    train(load_config(DEMO, tiny_run_overrides(tiny_toy_corpus, tmp_path / "run") + [
        "trainer.max_steps=1", "eval.retrieval=[]", "eval.crosstask=null"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    rc = evaluate_tool.main([str(DEMO), f"checkpoint={ckpt}"] + tiny_run_overrides(tiny_toy_corpus, tmp_path / "ev"))
    assert rc == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"youcook2/R10", "youcook2/MedR", "crosstask/recall", "chance/crosstask/recall"} <= set(metrics)
    cards = json.loads((tmp_path / "ev" / "protocol_cards.json").read_text())
    assert cards["youcook2"]["checkpoint"] == str(ckpt)


@pytest.mark.parametrize("path", sorted((ROOT / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_matches_the_schema(path):
    cfg = load_config(path)
    assert cfg.model.video_tower in ("s3d", "r2plus1d", "vit", "gated")
    assert cfg.data.batch_size > 0
