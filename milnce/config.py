"""The config schema: OmegaConf structured configs merged with YAML and the command line.

Every key a run can take is declared here, so a mistyped key on the command line or in a YAML file is an
error that names the key and the valid ones instead of being silently ignored.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError


@dataclass
class S3DConfig:
    space_to_depth: bool = True          # True = released checkpoint layout; False = MIL-NCE training code
    width_mult: float = 1.0              # < 1 for CPU-sized models (same module tree, fewer channels)
    init: str = "uniform"                # uniform (PyTorch default, as the original) | kaiming_normal


@dataclass
class R2Plus1DConfig:
    widths: List[int] = field(default_factory=lambda: [32, 64, 128, 256])
    spatial_strides: List[int] = field(default_factory=lambda: [1, 2, 2, 1])
    temporal_strides: List[int] = field(default_factory=lambda: [1, 2, 2, 1])
    stem_patch: int = 4                  # per-frame patchify stem: kernel = stride = stem_patch
    channels_last: bool = False          # channels-last-3d memory layout (faster convolutions on CPU)


@dataclass
class ViTConfig:
    pretrained: Optional[str] = None     # local Hugging Face checkpoint directory (ViT or CLIP vision)
    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    temporal_pooling: str = "mean"       # mean | transformer
    temporal_layers: int = 2
    divided_space_time: bool = False     # TimeSformer-style attention via transformers' own classes
    num_frames: int = 16


@dataclass
class Word2VecConfig:
    vocab_path: Optional[str] = None     # s3d_dict.npy / dict.npy, or a .txt with one word per line
    embedding_path: Optional[str] = None # frozen word2vec matrix (.pth or .npy), rows = vocab ids
    num_embeddings: Optional[int] = None # None = len(vocab) + 1 (released model: 66250)
    word_dim: int = 300
    hidden_dim: int = 2048
    max_words: int = 16                  # released model 16; MIL-NCE training loader 20; eval loaders 30
    freeze_embedding: bool = False       # MIL-NCE freezes its GoogleNews matrix; a corpus-built vocab must learn
    lowercase: bool = True


@dataclass
class HFTextConfig:
    name_or_path: str = "all-MiniLM-L6-v2"  # a local directory, or a name resolved to an offline package
    pooling: str = "mean"                  # mean | cls
    max_length: int = 32
    freeze_layers: int = 0                 # freeze embeddings + the lowest N transformer layers


@dataclass
class GatedConfig:
    input_dim: int = 4096                # pooled feature size (HowTo100M: 2048-d 2D ‖ 2048-d 3D)


@dataclass
class FeatureSourceConfig:
    dir: str = ""                        # one <video_id>.npy (T×D rows) per video
    rate: Optional[float] = None         # rows per second; None = the <video_id>.json sidecar's "rate"


@dataclass
class LossConfig:
    formulation: str = "original"        # mil_nce: original (positives in the denominator) | paper
    temperature: Optional[float] = None  # None = raw dot products, as the original
    learnable_temperature: bool = False
    normalize: bool = False              # L2-normalise embeddings before the loss (off = original)
    symmetric: bool = False              # nce: CLIP-style symmetric InfoNCE
    margin: float = 0.1                  # max_margin
    negative_weighting: bool = True      # max_margin: half the negative weight on same-video clips


@dataclass
class ModelConfig:
    video_tower: str = "s3d"             # s3d | r2plus1d (small, for CPUs) | vit | gated (pre-extracted features)
    text_tower: str = "word2vec"         # word2vec | hf
    embed_dim: int = 512
    s3d: S3DConfig = field(default_factory=S3DConfig)
    r2plus1d: R2Plus1DConfig = field(default_factory=R2Plus1DConfig)
    vit: ViTConfig = field(default_factory=ViTConfig)
    word2vec: Word2VecConfig = field(default_factory=Word2VecConfig)
    hf_text: HFTextConfig = field(default_factory=HFTextConfig)
    gated: GatedConfig = field(default_factory=GatedConfig)
    loss: str = "mil_nce"                # mil_nce | nce | max_margin
    loss_args: LossConfig = field(default_factory=LossConfig)
    init_from: Optional[str] = None      # released s3d_howto100m.pth, a MIL-NCE epoch*.pth.tar, or our checkpoint
    grad_cache_chunk: int = 0            # > 0: gradient-cache mode, embed the batch in chunks of this size
    gather_negatives: bool = True        # gather embeddings across ranks so every rank sees the global batch
    gather_gradient: str = "local"       # local (original AllGather: DDP grads = full-batch grad / world) | sum (exact)
    freeze_text_tower: bool = False      # fine-tuning: keep the text tower fixed
    freeze_video_bn: bool = False        # fine-tuning: BatchNorm of the video tower in eval mode (statistics fixed)


@dataclass
class OptimConfig:
    name: str = "adam"                   # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9                # sgd only
    warmup_steps: int = 5000
    schedule: str = "cosine"             # cosine (linear warm-up then cosine to 0, per step) | constant
    video_lr_mult: float = 1.0
    text_lr_mult: float = 1.0


@dataclass
class DataConfig:
    dataset: str = "howto100m"           # howto100m | toy | youcook2 | msrvtt | features | shards
    root: str = "data/toy"               # dataset root
    video_root: Optional[str] = None     # default: <root>/videos
    video_list: Optional[str] = None     # HowTo100M video list CSV (column video_path); default <root>/howto100m/videos.csv
    captions: Optional[str] = None       # caption.json or a folder of <video_id>.csv; default <root>/howto100m/caption.json
    min_alignability: Optional[float] = None  # keep only narrations this alignable (needs the alignment.parquet
                                         # `milnce align` writes beside its re-timed caption.json)
    num_candidates: int = 1              # K narrations per clip (MIL-NCE README command: 4)
    min_time: float = 5.0
    num_frames: int = 16
    fps: float = 5.0
    resize: int = 256                    # short side after decoding
    crop: int = 224
    random_flip: bool = True
    batch_size: int = 256
    num_workers: int = 4
    decoder_threads: int = 1
    backend: str = "auto"                # auto | decord | pyav
    cache_in_memory: bool = False        # decode the whole corpus once into RAM (small corpora: far faster)
    clips_per_video: int = 1             # > 1: several clips per video per visit (max-margin's intra-video negatives)
    window: str = "narration"            # narration (original: the sampled line's own times) | bag (span of the bag)
    fractional_seek: bool = False        # original: integer-second seeks
    decode_timeout: Optional[float] = None  # seconds; a decode that takes longer is a counted failure
    max_failure_fraction: float = 0.05
    seed: int = 1
    shards: Optional[str] = None         # dataset=shards: folder or s3://bucket/prefix (`milnce shard`); <root>/shards
    shard_cache: Optional[str] = None    # dataset=shards, remote: litdata's local cache of the index (default ~/.lightning)
    # dataset=features: pre-extracted features, pooled per clip and concatenated in this order;
    # empty = <root>/features/2d at 1 fps and <root>/features/3d at 1.5 fps (HowTo100M)
    feature_sources: List[FeatureSourceConfig] = field(default_factory=list)


@dataclass
class ToyConfig:
    """The toy corpus data.dataset=toy generates at data.root (fields of datamodules.toy.corpus.ToyCorpusConfig)."""
    generate: bool = True                # generate the toy corpus at data.root when it is absent
    seed: int = 0
    num_train_videos: int = 160
    num_youcook_videos: int = 30
    num_youcook_train_videos: int = 24
    num_msrvtt_clips: int = 100
    num_msrvtt_train_clips: int = 120
    num_crosstask_videos: int = 24
    num_action_videos_per_class: int = 0 # UCF-101-style action split (tools/probe_table.py turns it on)
    num_colours: int = 4                 # palette size (the default 4 × 4 is the original corpus)
    num_shapes: int = 4
    num_tasks: int = 8
    width: int = 160                     # rendered frame size
    height: int = 120
    unique_test_captions: bool = False   # one YouCook2-style validation clip per sentence
    num_align_videos: int = 0            # HTM-Align-style held-out narrated videos (htm_align/; alignment eval)
    narration_offset: float = 3.0        # scale (s) of a step line's shift from where it belongs
    offset_distribution: str = "uniform" # uniform U(-o, o) | normal | laplace | lag U(0, 2o)


@dataclass
class RetrievalEvalConfig:
    name: str = "youcook2"               # youcook2 | msrvtt
    csv: Optional[str] = None
    video_root: Optional[str] = None
    num_windows: int = 10                # MIL-NCE README command: 10
    num_frames: int = 16
    fps: float = 5.0
    size: int = 224
    pooling: str = "mean"                # mean (original) | max
    normalize: bool = False              # L2-normalise before the dot product (off = original)
    max_words: int = 30
    split: Optional[str] = None          # MSR-VTT: 1k-A (the CSV; default) | full (the "test" videos of captions_json)
    captions: str = "one"                # one (original) | all (MSR-VTT: every JSON caption, R@K per caption)
    captions_json: Optional[str] = None  # MSR-VTT MSRVTT_data.json; default: next to the CSV
    dual_softmax: bool = False           # dual-softmax inference (transductive; off = original)
    dual_softmax_temperature: Optional[float] = None  # None: 0.01 on normalised scores, 1.0 on the raw dot product


@dataclass
class CrossTaskEvalConfig:
    root: Optional[str] = None
    window_seconds: float = 3.2
    num_frames: int = 16
    size: int = 224
    cost: str = "log_softmax"            # log_softmax (Zhukov, VideoCLIP) | similarity (HowTo100M lineage)
    inference: str = "dp"                # dp | argmax (per-step argmax ablation)
    logits: str = "dot"                  # dot (raw dot product, original) | model (normalised / temperature as the
                                         # model's loss: what −log_softmax should see for such a model)
    split_seed: int = 0
    train_videos_per_task: int = 30
    use_split: bool = True


@dataclass
class AlignmentEvalConfig:
    """HTM-Align-style narration alignment (milnce/eval/alignment_eval.py)."""
    annotation: Optional[str] = None     # htm_align.json; default <data.root>/htm_align/htm_align.json
    video_root: Optional[str] = None     # default <annotation folder>/videos
    asr_captions: Optional[str] = None   # the sentences' ASR times (caption.json); default: GT-free interpolation
    radius: float = 32.0                 # windowed protocol: ± seconds around the ASR time (64 s window)
    stride: float = 1.0                  # seconds between windows (TAN: 1 fps features)


@dataclass
class EvalConfig:
    retrieval: List[RetrievalEvalConfig] = field(default_factory=list)
    crosstask: Optional[CrossTaskEvalConfig] = None
    alignment: Optional[AlignmentEvalConfig] = None
    every_n_steps: int = 0               # 0 = only at the end of fit
    every_n_epochs: int = 0
    at_fractions: List[float] = field(default_factory=list)  # also at these fractions of max_steps (0.25, 0.5 …)
    subset: int = 0                      # > 0: evaluate a cached subset of this size during training


@dataclass
class ProbeConfig:
    """`milnce probe`: action-recognition linear probe on the frozen video tower (milnce/eval/probe.py)."""
    dataset: str = "ucf101"              # ucf101 (classInd / trainlist0N / testlist0N) | hmdb51 (<class>_test_splitN)
    video_root: Optional[str] = None     # default <data.root>/ucf101/UCF-101 | <data.root>/hmdb51/videos
    split_dir: Optional[str] = None      # default <data.root>/ucf101/ucfTrainTestlist | …/testTrainMulti_7030_splits
    splits: List[int] = field(default_factory=lambda: [1, 2, 3])   # top-1 per split and their mean
    num_clips: int = 10                  # clips per video, features averaged (MIL-NCE README command: 10 windows)
    num_frames: int = 16
    fps: float = 5.0
    size: int = 224
    feature: str = "auto"                # auto (S3D mixed_5c, else the tower's pooled feature) | an output key
    l2: float = 1e-3                     # logistic regression: mean CE + l2/2·‖W‖² on standardised features
    max_iter: int = 200                  # L-BFGS iterations (full batch)
    standardize: bool = True
    cache_dir: Optional[str] = None      # feature cache; default <run_dir>/probe_features
    batch_size: int = 16                 # clips per forward pass
    protocol: str = "ours"               # ours (above) | original: eval_hmdb.py (native fps, frame-index windows,
                                         # LinearSVC(C=svc_c) on every window, decision scores summed)
    svc_c: float = 100.0                 # protocol=original: LinearSVC's C


@dataclass
class TrainerConfig:
    max_steps: int = -1
    max_epochs: int = 150
    max_time: Optional[str] = None       # e.g. "00:00:05:00" (DD:HH:MM:SS)
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 1000
    fast_dev_run: bool = False
    limit_train_batches: Optional[float] = None
    num_threads: int = 0                 # torch intra-op threads per process; 0 = cores / processes
    flush_denormal: bool = False         # flush subnormal floats to zero (x86 CPUs: avoids slow denormal arithmetic)
    monitor: Optional[str] = None        # keep the best checkpoint by this metric too (e.g. youcook2/R1)
    monitor_mode: str = "max"
    nonfinite_grads: str = "stop"        # NaN/inf gradients with a finite loss: stop naming step + parameters, or skip
    max_skipped_steps: int = 10          # nonfinite_grads=skip: stop once more steps than this were skipped
    resources_every_n_steps: int = 100   # RSS / open fds of the process and its loader workers → resources.csv; 0 off


@dataclass
class RunConfig:
    name: str = "run"
    run_dir: str = "runs/${name}"
    seed: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: Optional[str] = None     # evaluate.py / resume: a checkpoint to load


class ConfigError(ValueError):
    """A config key or value that the schema does not accept; the message names the key and the valid ones."""


def _valid_keys(node: Any, dotted: str) -> List[str]:
    parent = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    try:
        sub = OmegaConf.select(node, parent) if parent else node
    except Exception:
        sub = None
    if isinstance(sub, DictConfig):
        return [f"{parent + '.' if parent else ''}{k}" for k in sub.keys()]
    return [str(k) for k in node.keys()]


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ValidationError) as err:
        key = getattr(err, "full_key", None) or ""
        valid = ", ".join(_valid_keys(base, key)) if key else ""
        msg = str(getattr(err, "msg", None) or err).splitlines()[0]
        raise ConfigError(f"{source}: {msg}"
                          + (f" (key '{key}'; valid keys here: {valid})" if key else "")) from None


def load_config(path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Schema defaults <- YAML file (and the files it lists under `defaults`) <- command-line dot-list."""
    cfg = OmegaConf.structured(RunConfig)
    if path is not None:
        cfg = _merge(cfg, _read_yaml(Path(path)), str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override '{item}' is not of the form key=value")
        cfg = _apply_override(cfg, item)
    return cfg


def _apply_override(cfg: DictConfig, item: str) -> DictConfig:
    """key=value with YAML-typed value; list elements by index (eval.retrieval.0.num_windows=5)."""
    key, _, raw = item.partition("=")
    key = key.strip()
    value = OmegaConf.from_dotlist([f"value={raw}"])["value"]
    source = f"command line '{item}'"
    if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
        valid = ", ".join(_valid_keys(cfg, key))
        raise ConfigError(f"{source}: unknown key '{key}' (valid keys here: {valid})")
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except (ConfigKeyError, ValidationError, TypeError, ValueError) as err:
        msg = str(getattr(err, "msg", None) or err).splitlines()[0]
        raise ConfigError(f"{source}: {msg} (key '{key}')") from None
    return cfg


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        node = OmegaConf.load(path)
    except Exception as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    defaults = node.pop("defaults", None) if isinstance(node, DictConfig) else None
    merged = OmegaConf.create()
    for ref in defaults or []:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / f"{ref}.yaml"))
    return OmegaConf.merge(merged, node)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def config_from_argv(argv: Sequence[str], usage: str) -> "tuple[Optional[DictConfig], int]":
    """`CONFIG [key=value …]` of a command line: (config, 0), or (None, exit code) once usage or the error is printed."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return None, 0 if argv else 2
    try:
        return load_config(argv[0], list(argv[1:])), 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return None, 2
