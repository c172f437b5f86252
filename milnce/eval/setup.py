"""Evaluators and their Lightning callbacks, built from the `eval` section of a config."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig

from milnce.api import load_model
from milnce.eval.alignment_eval import AlignmentEvaluator
from milnce.eval.callbacks import AlignmentEvaluation, RetrievalEvaluation, StepLocalization, flatten_metrics
from milnce.eval.feature_eval import FeatureRetrievalEvaluator
from milnce.eval.localization_eval import StepLocalizationEvaluator
from milnce.eval.retrieval_eval import RetrievalEvaluator
from datamodules.benchmarks.crosstask import CrossTaskRelease
from datamodules.benchmarks.htm_align import read_htm_align
from datamodules.benchmarks.msrvtt import read_msrvtt, read_msrvtt_full
from datamodules.benchmarks.youcook2 import read_youcook2
from datamodules.features import feature_sources


MSRVTT_SPLITS = ("1k-A", "full")


def msrvtt_captions_json(r: DictConfig, data_root: Path) -> Path:
    if r.captions_json:
        return Path(r.captions_json)
    csv = Path(r.csv) if r.csv else data_root / "msrvtt" / "msrvtt_test.csv"
    return csv.parent / "MSRVTT_data.json"


def retrieval_set(r: DictConfig, data_root: Path, split: Optional[str] = None, with_captions: bool = False):
    """The RetrievalSet of `eval.retrieval` entry `r`; `split` / `with_captions` override r.split / r.captions."""
    split = split or r.split
    with_captions = with_captions or r.captions == "all"
    if r.name == "youcook2":
        if split not in (None, "validation") or r.captions != "one":
            raise ValueError(f"eval.retrieval youcook2: split={split} / captions={r.captions} do not apply (one "
                             f"caption per clip, the validation split); leave eval.retrieval.split / captions unset")
        csv = Path(r.csv) if r.csv else data_root / "youcook2" / "validation_youcook.csv"
        root = Path(r.video_root) if r.video_root else csv.parent
        return read_youcook2(csv, root)
    if r.name == "msrvtt":
        split = split or "1k-A"
        if split not in MSRVTT_SPLITS:
            raise ValueError(f"eval.retrieval msrvtt: unknown split '{split}' (valid: {', '.join(MSRVTT_SPLITS)})")
        csv = Path(r.csv) if r.csv else data_root / "msrvtt" / "msrvtt_test.csv"
        root = Path(r.video_root) if r.video_root else csv.parent / "videos"
        if split == "full":
            return read_msrvtt_full(msrvtt_captions_json(r, data_root), root)
        return read_msrvtt(csv, root, msrvtt_captions_json(r, data_root) if with_captions else None)
    raise ValueError(f"eval.retrieval.name: unknown dataset '{r.name}' (valid: youcook2, msrvtt)")


def retrieval_evaluator(cfg: DictConfig, r: DictConfig, dataset, **overrides):
    """The evaluator of `eval.retrieval` entry `r` on `dataset` (video or pre-extracted features)."""
    out_dir = Path(cfg.run_dir) / "eval" / r.name
    variant = dict(captions=r.captions, dual_softmax=r.dual_softmax,
                   dual_softmax_temperature=r.dual_softmax_temperature)
    variant.update(overrides)
    if cfg.data.dataset == "features":  # the same protocol on pre-extracted features (HowTo100M)
        variant.pop("keep_windows", None)
        return FeatureRetrievalEvaluator(dataset, feature_sources(cfg.data), normalize=r.normalize,
                                         max_words=r.max_words, out_dir=str(out_dir), **variant)
    return RetrievalEvaluator(
        dataset, num_windows=r.num_windows, num_frames=r.num_frames, fps=r.fps, size=r.size, pooling=r.pooling,
        normalize=r.normalize, max_words=r.max_words, num_workers=min(2, cfg.data.num_workers),
        out_dir=str(out_dir), cache_max_bytes=2 << 30 if _evaluates_during_training(cfg) else 0, **variant)


def _evaluates_during_training(cfg: DictConfig) -> bool:
    """Evaluated more than once: keep the decoded windows in RAM (the same set is decoded only once)."""
    e = cfg.eval
    return bool(e.subset or e.every_n_steps or e.every_n_epochs or e.at_fractions)


def build_evaluators(cfg: DictConfig, retrieval: bool = True) -> List[Tuple[str, Any]]:
    """[(kind, evaluator)] for every retrieval set (unless retrieval=False), CrossTask and HTM-Align under `eval`."""

    data_root = Path(cfg.data.root)
    out_dir = Path(cfg.run_dir) / "eval"
    evaluators: List[Tuple[str, Any]] = []
    for r in (cfg.eval.retrieval if retrieval else []):
        evaluators.append(("retrieval", retrieval_evaluator(cfg, r, retrieval_set(r, data_root))))
    c = cfg.eval.crosstask
    if c is not None:
        release = CrossTaskRelease(Path(c.root) if c.root else data_root / "crosstask")
        evaluators.append(("crosstask", StepLocalizationEvaluator(
            release, window_seconds=c.window_seconds, num_frames=c.num_frames, size=c.size, cost=c.cost,
            inference=c.inference, use_split=c.use_split, split_seed=c.split_seed,
            train_videos_per_task=c.train_videos_per_task, logits=c.logits, out_dir=str(out_dir / "crosstask"))))
    a = cfg.eval.get("alignment")
    if a is not None:
        annotation = Path(a.annotation) if a.annotation else data_root / "htm_align" / "htm_align.json"
        evaluators.append(("alignment", AlignmentEvaluator(
            read_htm_align(annotation), a.video_root or str(annotation.parent / "videos"), radius=a.radius,
            stride=a.stride, asr_captions=a.asr_captions, num_workers=min(2, cfg.data.num_workers),
            out_dir=str(out_dir / "htm_align"))))
    return evaluators


CALLBACKS = {"retrieval": RetrievalEvaluation, "crosstask": StepLocalization, "alignment": AlignmentEvaluation}


def build_eval_callbacks(cfg: DictConfig) -> List[Any]:
    callbacks = []
    for kind, evaluator in build_evaluators(cfg):
        cls = CALLBACKS[kind]
        callbacks.append(cls(evaluator, every_n_steps=cfg.eval.every_n_steps, subset=cfg.eval.subset,
                             every_n_epochs=cfg.eval.every_n_epochs, at_fractions=list(cfg.eval.at_fractions)))
    return callbacks


def collect_metrics(callbacks: List[Any]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Final metrics (flat, e.g. youcook2/R10, chance/youcook2/R10) and protocol cards of every evaluation callback."""
    metrics: Dict[str, float] = {}
    cards: Dict[str, Any] = {}
    for cb in callbacks:
        if isinstance(cb, tuple(CALLBACKS.values())) and cb.last_metrics:
            metrics.update(cb.last_metrics)
            cards[cb.prefix] = cb.last_card
    return metrics, cards


def evaluate_checkpoint(cfg: DictConfig, module=None, retrieval: bool = True
                        ) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Run every configured evaluator on `cfg.checkpoint` (ours, converted, or the released S3D + s3d_dict.npy), or on
    `module` when given; retrieval=False leaves the retrieval sets out (`--protocols all` scores them itself)."""

    if module is None:
        module = load_checkpoint_model(cfg)
    metrics: Dict[str, float] = {}
    cards: Dict[str, Any] = {}
    for kind, evaluator in build_evaluators(cfg, retrieval):
        prefix = {"retrieval": getattr(getattr(evaluator, "dataset", None), "name", None), "crosstask": "crosstask",
                  "alignment": getattr(evaluator, "name", "htm_align")}[kind]
        result = evaluator.evaluate(module)
        metrics.update(flatten_metrics(prefix, result.metrics))
        cards[prefix] = {**result.card, "checkpoint": str(cfg.checkpoint)}
    return metrics, cards


def load_checkpoint_model(cfg: DictConfig):
    if not cfg.checkpoint:
        raise ValueError("checkpoint=PATH is required (a .ckpt of ours, a converted file, or s3d_howto100m.pth)")
    return load_model(cfg.checkpoint, vocab=cfg.model.word2vec.vocab_path)
