"""The numbers fail, by injection: a finite loss with NaN gradients stops the run before the optimizer writes, naming
the step, batch and parameter (or, with trainer.nonfinite_grads=skip, the step is skipped, counted and bounded); a
video whose embeddings are not finite is refused from the moment index, so faiss never holds a NaN row."""
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from milnce.search.faiss_build import build_faiss
from milnce.search.index import IndexWriter, NonFiniteEmbedding, load_shards, read_failed
from milnce.train.numerics import FiniteGradients, NonFiniteGradients, NonFiniteWeights


class Linear(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.weights = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.layer(x) - y) ** 2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.weights[self.trainer.global_step] = self.layer.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)


class PoisonGradients(pl.Callback):
    """A NaN in the bias gradient at the given global steps: what a masked NaN input or a backward overflow gives."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_after_backward(self, trainer, pl_module):
        if trainer.global_step in self.steps:
            pl_module.layer.bias.grad.fill_(float("nan"))


class OverflowWeights(pl.Callback):
    """The update of the given step leaves an inf in the weight (what a huge learning rate does)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step + 1:
            with torch.no_grad():
                pl_module.layer.weight[0, 0] = float("inf")


def _fit(tmp_path, guard, poison, steps=6, extra=(), checkpoints=False):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    module = Linear()
    callbacks = [PoisonGradients(poison), *extra, guard]
    if checkpoints:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1))
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=checkpoints, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path),
                         callbacks=callbacks)
    error = None
    try:
        trainer.fit(module, DataLoader(data, batch_size=4))
    except (NonFiniteGradients, NonFiniteWeights) as err:
        error = err
    return module, trainer, error


def test_nonfinite_gradients_stop_before_the_step_naming_step_batch_and_parameter(tmp_path):
    module, trainer, error = _fit(tmp_path, FiniteGradients("stop"), poison=[3])
    assert error is not None
    assert "global step 3, batch 3" in str(error) and "layer.bias" in str(error) and "layer.weight" not in str(error)
    assert trainer.global_step == 3
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert torch.equal(module.layer.weight.detach(), module.weights[3])  # the poisoned step never wrote


def test_skip_mode_skips_counts_and_leaves_the_weights_of_the_skipped_step(tmp_path, caplog):
    guard = FiniteGradients("skip", max_skipped=2)
    with caplog.at_level(logging.WARNING, logger="milnce"):
        module, trainer, error = _fit(tmp_path, guard, poison=[2, 4])
    assert error is None and trainer.global_step == 6 and guard.skipped == 2
    assert torch.equal(module.weights[2], module.weights[3])  # the step that saw NaN gradients changed nothing
    assert torch.equal(module.weights[4], module.weights[5])
    assert not torch.equal(module.weights[3], module.weights[4])  # the others trained
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert "skipped the optimizer step at global step 2" in caplog.text
    assert guard.state_dict() == {"skipped": 2}


def test_skip_mode_stops_past_its_budget(tmp_path):
    _, trainer, error = _fit(tmp_path, FiniteGradients("skip", max_skipped=1), poison=[1, 3])
    assert error is not None and "global step 3" in str(error) and "trainer.max_skipped_steps=1" in str(error)


def test_an_update_that_overflows_the_weights_stops_before_they_are_saved(tmp_path):
    _, trainer, error = _fit(tmp_path, FiniteGradients("stop"), poison=[], extra=[OverflowWeights(3)],
                             checkpoints=True)
    assert isinstance(error, NonFiniteWeights)
    assert "global step 3, batch 3" in str(error) and "layer.weight" in str(error)
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3  # saved after step 3 (index 2); the overflowed step 4 (index 3) never was
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="nonfinite_grads"):
        FiniteGradients("ignore")


# -- the moment index ----------------------------------------------------------------------------------------------
def _fake_encoder(bad_video):
    def encode_video(model, video, window, stride, batch_size):
        emb = np.random.default_rng(len(video)).standard_normal((4, 8)).astype(np.float32)
        if video == bad_video:
            emb[2, 5] = np.nan
        starts = np.arange(4) * stride
        return SimpleNamespace(video=video, starts=starts, ends=starts + window, embeddings=emb,
                               duration=4 * stride + window)
    return encode_video


def test_extraction_refuses_a_video_with_nonfinite_embeddings(tmp_path, monkeypatch):
    from milnce.search import extract as extract_mod

    monkeypatch.setattr(extract_mod, "encode_video", _fake_encoder("b.mp4"))
    model = SimpleNamespace(preprocess={"fps": 10}, checkpoint_path="fake.ckpt")
    out = tmp_path / "index"
    result = extract_mod.extract(model, ["a.mp4", "b.mp4", "c.mp4"], out, window=2.0, stride=1.0, progress=False,
                                 features_dir=tmp_path / "features", mode="per_window")  # the fake encode_video
    assert result["failed"] == 1 and result["rows"] == 8
    [(video, reason)] = read_failed(out)
    assert video == "b.mp4" and "non-finite embedding in 1 of 4 windows: row 2 (2.00-4.00 s)" in reason
    emb, rows = load_shards(out)
    assert np.isfinite(emb).all() and {r[0] for r in rows} == {"a.mp4", "c.mp4"}
    assert not (tmp_path / "features" / "b.npy").exists()


def test_index_writer_and_faiss_never_take_a_nan_row(tmp_path):
    writer = IndexWriter(tmp_path, {"normalize": True})
    with pytest.raises(NonFiniteEmbedding, match=r"v.mp4: non-finite embedding in 1 of 2 windows: row 1"):
        writer.add("v.mp4", [0, 1], [2, 3], np.array([[1, 0], [np.inf, 0]], np.float32))
    writer.add("w.mp4", [0], [2], np.array([[1, 0]], np.float32))
    writer.close()
    assert build_faiss(tmp_path)["rows"] == 1
    # a shard written before the check (by hand here): build_faiss refuses it and keeps the old faiss.index
    before = (tmp_path / "faiss.index").read_bytes()
    np.save(tmp_path / "shards" / "shard_00000.npy", np.array([[np.nan, 0]], np.float32))
    with pytest.raises(NonFiniteEmbedding, match=r"row 0 \(w.mp4, 0.0-2.0 s\)"):
        build_faiss(tmp_path)
    assert (tmp_path / "faiss.index").read_bytes() == before
    assert json.loads((tmp_path / "index.json").read_text())["rows"] == 1


@pytest.mark.slow
def test_a_training_run_stops_on_nan_gradients_and_keeps_its_last_good_checkpoint(tmp_path_factory, tmp_path):
    from milnce.config import load_config
    from milnce.train import run
    from milnce.train.run_lock import LOCK_NAME
    from reliability_runs import DEMO, shared_tiny_corpus, tiny_overrides

    class Poison(pl.Callback):
        def on_after_backward(self, trainer, module):
            if trainer.global_step == 3:
                next(module.video_tower.parameters()).grad.view(-1)[0] = float("nan")

    run_dir = tmp_path / "run"
    cfg = load_config(DEMO, tiny_overrides(shared_tiny_corpus(tmp_path_factory), run_dir, max_steps=6, every=2))
    original = run.build_trainer
    run.build_trainer = lambda cfg, d, callbacks: original(cfg, d, [*callbacks, Poison()])
    try:
        with pytest.raises(NonFiniteGradients, match=r"global step 3, batch 3 .* video_tower\."):
            run.train(cfg)
    finally:
        run.build_trainer = original
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
    assert not (run_dir / LOCK_NAME).exists()  # released on the way out
