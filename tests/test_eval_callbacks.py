"""The evaluation callbacks inside a real (tiny, CPU) Lightning fit."""
import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from eval_fakes import FakeIO, FakeModule
from milnce.eval.callbacks import RetrievalEvaluation, StepLocalization
from milnce.eval.retrieval_eval import RetrievalEvaluator
from test_eval_datasets import make_set
from test_step_localization_eval import make_evaluator, make_release


class TinyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.fake = FakeModule()
        self.tokenizer = self.fake.tokenizer
        self.layer = torch.nn.Linear(2, 1)

    def embed_video(self, video):
        assert not self.training
        return self.fake.embed_video(video)

    def encode_text(self, texts):
        return self.fake.encode_text(texts)

    def training_step(self, batch, batch_idx):
        assert self.training
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_callbacks_run_on_schedule_log_and_restore_train_mode(tmp_path):
    io = FakeIO()
    retrieval = RetrievalEvaluator(make_set([f"v_{i}" for i in range(1, 9)]), num_windows=2, num_frames=4, fps=2.0,
                                   size=8, num_workers=0, progress=False, clip_kwargs=io.clip_kwargs(),
                                   cache_max_bytes=10 ** 8)
    release, ct_io = make_release(tmp_path)
    retrieval_cb = RetrievalEvaluation(retrieval, every_n_steps=2, subset=3, prefix="youcook2")
    crosstask_cb = StepLocalization(make_evaluator(release, ct_io), every_n_epochs=1)
    module = TinyModule()
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="logs"),
                         callbacks=[retrieval_cb, crosstask_cb], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)

    assert [s for s, _ in retrieval_cb.history] == [2, 4, 4]           # subset at steps 2 and 4, full at the end
    assert retrieval_cb.history[0][1]["youcook2_subset/N"] == 3
    assert len(io.calls) == 3 * 2 + 8 * 2                               # the subset was decoded once, then cached
    m = retrieval_cb.last_metrics
    assert m["youcook2/R1"] == 100.0 and m["youcook2/MedR"] == 1.0 and m["chance/youcook2/R1"] == 12.5
    assert retrieval_cb.last_card["n_evaluated"] == 8 and retrieval_cb.last_card["subset"] is False
    assert "crosstask/recall" in crosstask_cb.last_metrics and "chance/crosstask/recall" in crosstask_cb.last_metrics
    assert len(crosstask_cb.history) == 1              # end of epoch 1 (full set) doubles as the end-of-fit run
    assert crosstask_cb.last_card["dataset"] == "crosstask"
    assert module.training
    assert float(trainer.callback_metrics["youcook2/R10"]) == 100.0

    rows = list(csv.DictReader(open(trainer.logger.log_dir + "/metrics.csv")))
    assert any(r.get("youcook2_subset/R1") for r in rows) and any(r.get("youcook2/R10") for r in rows)
    assert any(r.get("crosstask/recall") for r in rows)


def test_bad_schedule_is_rejected():
    with pytest.raises(ValueError, match="≥ 0"):
        RetrievalEvaluation(RetrievalEvaluator(make_set(["v_1"]), progress=False), every_n_steps=-1)


class SlowEvaluator:
    """Stands in for an evaluator: takes `seconds` per call and reports how often it ran."""

    class dataset:
        name = "slow"

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, 0

    def subset_indices(self, n):
        return list(range(n))

    def evaluate(self, module, indices=None, use_cache=False):
        import time
        from types import SimpleNamespace

        time.sleep(self.seconds)
        self.calls += 1
        return SimpleNamespace(metrics={"R10": float(self.calls)}, card={"n_evaluated": 1, "n_listed": 1})


def test_time_to_accuracy_fractions_and_training_clock(tmp_path):
    """at_fractions evaluates at 25/50/75 % of max_steps (plus the end); every evaluation logs the training seconds
    it took to get there, with evaluation time left out."""
    from milnce.training_clock import TrainingClock

    evaluator = SlowEvaluator(0.3)
    cb = RetrievalEvaluation(evaluator, subset=1, at_fractions=[0.25, 0.5, 0.75])
    trainer = pl.Trainer(max_steps=8, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="logs"),
                         callbacks=[cb, TrainingClock()], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(TinyModule(), DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=2))
    assert [s for s, _ in cb.history] == [2, 4, 6, 8]
    rows = [r for r in csv.DictReader(open(trainer.logger.log_dir + "/metrics.csv")) if r.get("time/train_seconds")]
    seconds = [float(r["time/train_seconds"]) for r in rows]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert seconds == sorted(seconds) and seconds[-1] < 0.3    # 4 × 0.3 s of evaluation are not training time


def test_fractions_outside_zero_one_are_rejected():
    with pytest.raises(ValueError, match="between 0 and 1"):
        RetrievalEvaluation(SlowEvaluator(0), at_fractions=[0.5, 1.0])


def test_training_logits_follow_the_models_loss():
    """CrossTask logits="model": what the loss sees (normalised, over τ); plain dot product otherwise."""
    import numpy as np
    from types import SimpleNamespace

    from milnce.inference import training_logits
    from milnce.losses import build_loss

    v, t = np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[0.0, 2.0]])
    raw = SimpleNamespace(loss_fn=build_loss("mil_nce", None, 1))
    assert np.allclose(training_logits(raw, v, t), v @ t.T)
    args = SimpleNamespace(normalize=True, temperature=0.5, learnable_temperature=True)
    norm = SimpleNamespace(loss_fn=build_loss("mil_nce", args, 1))
    assert np.allclose(training_logits(norm, v, t), [[0.8 / 0.5], [0.0]], atol=1e-6)
