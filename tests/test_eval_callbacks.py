"""The evaluation callbacks inside a real (tiny, CPU) Lightning fit."""
import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from eval_fakes import FakeIO, FakeModule
from milnce.callbacks import RetrievalEvaluation, StepLocalization
from milnce.retrieval_eval import RetrievalEvaluator
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
