"""Two-process gloo DDP on CPU through Lightning gives the single-process full-batch loss and gradients.

The test runs this file as a script in a subprocess (`python tests/test_ddp_losses.py OUT_DIR`): Lightning's
"ddp" strategy re-launches the script for rank 1, each rank takes its half of one fixed global batch, gathers
embeddings with milnce.distributed, and saves its loss and (DDP-averaged) gradients. The test then computes the
same loss on the concatenated batch in one process and compares, up to milnce.distributed.tower_gradient_scale.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from milnce.config import LossConfig  # noqa: E402
from milnce.distributed import gather_batch, tower_gradient_scale  # noqa: E402
from milnce.grad_cache import grad_cache_step  # noqa: E402
from milnce.losses import build_loss  # noqa: E402

WORLD = 2
VIDEOS = 8  # global batch; 4 per rank
# name: (model.loss, loss_args, K, gather gradient mode, grad-cache chunk or 0, use validity mask)
VARIANTS = {
    "mil_nce": ("mil_nce", LossConfig(), 2, "local", 0, False),
    "mil_nce_paper_valid_sum": ("mil_nce", LossConfig(formulation="paper"), 2, "sum", 0, True),
    "nce_symmetric_temperature_local": ("nce", LossConfig(symmetric=True, learnable_temperature=True,
                                                          normalize=True), 1, "local", 0, False),
    "nce_symmetric_temperature_sum": ("nce", LossConfig(symmetric=True, learnable_temperature=True,
                                                        normalize=True), 1, "sum", 0, False),
    "max_margin_ids": ("max_margin", LossConfig(normalize=True), 1, "local", 0, True),
    "grad_cache_local": ("mil_nce", LossConfig(learnable_temperature=True), 2, "local", 2, False),
    "grad_cache_sum": ("mil_nce", LossConfig(learnable_temperature=True), 2, "sum", 3, True),
}


def global_batch(k):
    g = torch.Generator().manual_seed(7)
    video = torch.randn(VIDEOS, 6, generator=g)
    text = torch.randn(VIDEOS * k, 5, generator=g)
    video_ids = torch.arange(VIDEOS) % 4  # each video has one clip on each rank
    valid = torch.ones(VIDEOS, dtype=torch.bool)
    valid[[1, 6]] = False
    return video, text, video_ids, valid


class Towers(nn.Module):
    def __init__(self, variant):
        super().__init__()
        name, args, k, self.gradient, self.chunk, self.use_valid = VARIANTS[variant]
        self.k = k
        self.video = nn.Linear(6, 4)
        self.text = nn.Linear(5, 4)
        self.loss = build_loss(name, args, k)

    def embed_video(self, x):
        return self.video(x)

    def embed_text(self, x):
        return self.text(x)


def single_process(variant):
    torch.manual_seed(0)
    model = Towers(variant)
    video, text, ids, valid = global_batch(model.k)
    loss = model.loss(model.video(video), model.text(text), video_ids=ids, valid=valid if model.use_valid else None)
    loss.backward()
    return model, loss.item()


def run_ddp(out_dir):
    import pytorch_lightning as pl

    torch.set_num_threads(1)

    class Module(pl.LightningModule):
        def __init__(self, variant):
            super().__init__()
            self.variant = variant
            self.towers = Towers(variant)
            self.automatic_optimization = False

        def train_dataloader(self):
            return torch.utils.data.DataLoader(list(range(WORLD)), batch_size=1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def training_step(self, batch, batch_idx):
            t = self.towers
            rank, rows = self.global_rank, VIDEOS // WORLD
            video, text, ids, valid = global_batch(t.k)
            video, ids, valid = (x[rank * rows:(rank + 1) * rows] for x in (video, ids, valid))
            text = text[rank * rows * t.k:(rank + 1) * rows * t.k]

            def loss_fn(video_emb, text_emb):
                v, x, i, ok = gather_batch(video_emb, text_emb, ids, valid, gradient=t.gradient)
                return t.loss(v, x, video_ids=i, valid=ok if t.use_valid else None)

            if t.chunk:
                loss = grad_cache_step(t.embed_video, t.embed_text, video, text, loss_fn, t.chunk, t.k,
                                       backward=self.manual_backward,
                                       no_sync=self.trainer.strategy.block_backward_sync)
            else:
                loss = loss_fn(t.embed_video(video), t.embed_text(text))
                self.manual_backward(loss)
            grads = {n: p.grad.detach().clone() for n, p in t.named_parameters() if p.grad is not None}
            torch.save({"loss": loss.item(), "grads": grads}, Path(out_dir) / f"{self.variant}_rank{rank}.pt")

    for variant in VARIANTS:
        torch.manual_seed(0)
        module = Module(variant)
        trainer = pl.Trainer(accelerator="cpu", devices=WORLD, strategy="ddp", max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
        trainer.fit(module)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_losses")
    # its own session, so a hang can be ended together with the rank Lightning launched
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(out)], cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        log, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"DDP script timed out:\n{log[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"DDP script failed (rc {proc.returncode}):\n{log[-3000:]}")
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ddp_matches_single_process(ddp_results, variant):
    model, single_loss = single_process(variant)
    ranks = [torch.load(ddp_results / f"{variant}_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    scale = tower_gradient_scale(model.gradient, WORLD)
    for result in ranks:
        assert result["loss"] == pytest.approx(single_loss, abs=1e-5)
    expected_names = {n for n, p in model.named_parameters() if p.grad is not None}
    for result in ranks:
        assert set(result["grads"]) == expected_names
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            # tower gradients carry the documented scale; the loss's own temperature is computed whole per rank
            factor = 1.0 if name.startswith("loss.") else scale
            torch.testing.assert_close(result["grads"][name], factor * p.grad, atol=1e-5, rtol=1e-5,
                                       msg=f"{variant}: {name}")


def test_single_process_gather_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    v, t, ids, ok = gather_batch(x, x, None, None)
    assert v is x and t is x and ids is None and ok is None
    assert tower_gradient_scale("local", 4) == 0.25 and tower_gradient_scale("sum", 4) == 1.0
    with pytest.raises(ValueError, match="gradient mode"):
        gather_batch(x, x, gradient="mean")


if __name__ == "__main__":
    run_ddp(sys.argv[1])
