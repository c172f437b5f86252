"""A training run from a resolved config: data, model, Lightning Trainer, evaluation, metrics.json.

`milnce train` and `milnce evaluate` (milnce/commands/) call `train` and `evaluate`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from milnce.checkpoint import load_towers, read_state_dict
from milnce.config import to_yaml
from milnce.eval.report import write_report
from milnce.eval.results_table import results_markdown
from milnce.eval.setup import build_eval_callbacks, collect_metrics
from milnce.module import VideoTextModule
from milnce.train.checkpoint_io import AtomicCheckpointIO
from milnce.train.failures import FailureBudget
from milnce.train.numerics import FiniteGradients
from milnce.train.run_lock import RunLock
from milnce.train.resources import ResourceMonitor
from milnce.train.threads import denormals_flushed, pin_torch_threads
from milnce.train.throughput import ThroughputMonitor
from milnce.training_clock import TrainingClock
from datamodules.atomic import atomic_write
from datamodules.features import FeatureDataModule
from datamodules.finetune import FinetuneDataModule
from datamodules.howto100m import HowTo100MDataModule
from datamodules.shards.datamodule import ShardsDataModule
from datamodules.toy.corpus import ToyCorpusConfig, make_toy_corpus, toy_corpus_exists
from datamodules.video.clip_spec import ClipSpec

log = logging.getLogger("milnce")


def decoding_workers(cfg: DictConfig) -> int:
    """Cores the DataLoader workers keep busy: decoding from files takes one; slicing a corpus cached in RAM
    (cache_in_memory) is light work that overlaps the step without taking a core from torch."""
    return 0 if cfg.data.cache_in_memory else min(cfg.data.num_workers, 1)


def ensure_corpus(cfg: DictConfig) -> None:
    """The toy corpus is the embedded default: generate it where it is absent (or half-written)."""
    if cfg.data.dataset != "toy":
        return

    root = Path(cfg.data.root)
    if not cfg.toy.generate:
        if not toy_corpus_exists(root):
            raise FileNotFoundError(f"no toy corpus at {root} and toy.generate=false")
        return
    fields = OmegaConf.to_container(cfg.toy, resolve=True)
    fields.pop("generate")
    toy = ToyCorpusConfig(**fields)
    if toy_corpus_exists(root, toy):
        return
    t0 = time.time()
    make_toy_corpus(root, toy, progress=True)
    print(f"[milnce] toy corpus written to {root} in {time.time() - t0:.0f}s")


def build_datamodule(cfg: DictConfig):
    if cfg.data.dataset in ("toy", "howto100m"):
        return HowTo100MDataModule(cfg.data)
    if cfg.data.dataset in ("youcook2", "msrvtt"):
        return FinetuneDataModule(cfg.data)
    if cfg.data.dataset == "features":
        return FeatureDataModule(cfg.data)
    if cfg.data.dataset == "shards":
        return ShardsDataModule(cfg.data)
    raise ValueError(f"data.dataset: unknown dataset '{cfg.data.dataset}' (valid: toy, howto100m, youcook2, "
                     "msrvtt, features, shards)")


def build_module(cfg: DictConfig, vocab: Optional[List[str]]):
    module = VideoTextModule(cfg.model, cfg.optim, vocab=vocab, num_candidates=cfg.data.num_candidates,
                             preprocess=ClipSpec.from_data_config(cfg.data).as_dict())
    if cfg.model.init_from:
        state, _ = read_state_dict(cfg.model.init_from)
        load_towers(module.video_tower, module.text_tower, state, strict=True)
        print(f"[milnce] towers initialised from {cfg.model.init_from}")
    return module


def training_vocabulary(cfg: DictConfig, datamodule) -> Optional[List[str]]:
    if cfg.model.text_tower not in ("word2vec", "word2vec_gated") or cfg.model.word2vec.vocab_path:
        return None
    if cfg.model.init_from:
        # fine-tuning: the word table's rows belong to the checkpoint's vocabulary, not the new corpus's words

        _, meta = read_state_dict(cfg.model.init_from)
        vocab = (meta.get("milnce") or {}).get("vocab")
        if vocab is not None:
            print(f"[milnce] vocabulary of {cfg.model.init_from} ({len(vocab)} words)")
            return list(vocab)
    return datamodule.vocabulary()


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: List[pl.Callback]) -> pl.Trainer:
    from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger


    t = cfg.trainer
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=1,
                           every_n_train_steps=max(1, t.checkpoint_every_n_steps), save_on_train_epoch_end=True)
    checkpoints = [ckpt]
    if t.monitor:
        checkpoints.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=t.monitor,
                                           mode=t.monitor_mode, save_top_k=1, save_on_train_epoch_end=True))
    # A resumed run logs into a new CSV version instead of overwriting the interrupted run's metrics.csv.
    resumed = (run_dir / "checkpoints" / "last.ckpt").is_file() and not t.fast_dev_run
    csv_version = f"resumed_{sum(1 for _ in (run_dir / 'logs').glob('resumed_*'))}" if resumed else ""
    loggers = [CSVLogger(str(run_dir), name="logs", version=csv_version),
               TensorBoardLogger(str(run_dir), name="tensorboard", version="")]
    kwargs: Dict[str, Any] = dict(
        max_steps=t.max_steps, max_epochs=t.max_epochs, max_time=t.max_time, accelerator=t.accelerator,
        devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps, fast_dev_run=t.fast_dev_run, logger=loggers,
        callbacks=[*callbacks, FailureBudget(cfg.data.max_failure_fraction), ThroughputMonitor(), TrainingClock(),
                   FiniteGradients(t.nonfinite_grads, t.max_skipped_steps),
                   ResourceMonitor(run_dir / "resources.csv", t.resources_every_n_steps),
                   *checkpoints,
                   TQDMProgressBar(refresh_rate=1)], default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if cfg.model.grad_cache_chunk > 0:
        kwargs.pop("gradient_clip_val")  # manual optimisation clips in the module
    return pl.Trainer(**kwargs)


def write_results(run_dir: Path, metrics: Dict[str, float], cards: Dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    atomic_write(run_dir / "protocol_cards.json", json.dumps(cards, indent=2, sort_keys=True, default=str) + "\n")

    table = results_markdown(metrics, cards)
    atomic_write(run_dir / "results.md", table)
    print(table)


def train(cfg: DictConfig) -> Dict[str, float]:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):  # a second run on this run_dir refuses; a killed run's stale lock is taken over
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> Dict[str, float]:
    atomic_write(run_dir / "config.yaml", to_yaml(cfg))
    print("[milnce] resolved config:\n" + to_yaml(cfg))
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    pin_torch_threads(cfg.trainer.num_threads, processes=devices, loader_workers=decoding_workers(cfg))
    pl.seed_everything(cfg.seed, workers=True)
    t0 = time.time()

    ensure_corpus(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, training_vocabulary(cfg, datamodule))
    module.manual_clip_val = cfg.trainer.gradient_clip_val
    datamodule.tokenizer = module.tokenizer


    eval_callbacks = build_eval_callbacks(cfg)
    trainer = build_trainer(cfg, run_dir, eval_callbacks)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() and not cfg.trainer.fast_dev_run else None
    if resume:
        print(f"[milnce] resuming from {resume}")
    with denormals_flushed(cfg.trainer.flush_denormal):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)

    metrics, cards = collect_metrics(eval_callbacks)
    metrics["train/steps"] = float(trainer.global_step)
    metrics["train/seconds"] = round(time.time() - t0, 1)
    loss = trainer.callback_metrics.get("train/loss")
    if loss is not None:
        metrics["train/final_loss"] = float(loss)
    if trainer.is_global_zero:
        write_results(run_dir, metrics, cards)

        print(f"[milnce] report: {write_report(run_dir)}")
    return metrics
