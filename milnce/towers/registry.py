"""Build the video tower, text tower and tokenizer a model config names.

Towers are registered by name (`@register_video_tower("name")`, `@register_text_tower("name")`,
`@register_tokenizer("name")`, the tokenizer keyed by the text tower it feeds). Builders take the whole
`ModelConfig`, so a new tower reads its own sub-config without the registry knowing about it. Tower modules are
imported only inside their builders, so building a word2vec model never imports transformers.

A tower living in a module of its own can register itself there; list the module in `_TOWER_MODULES` and the
registry imports it the first time that name is asked for.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from milnce.config import ConfigError, ModelConfig

_VIDEO_TOWERS: Dict[str, Callable[..., nn.Module]] = {}
_TEXT_TOWERS: Dict[str, Callable[..., nn.Module]] = {}
_TOKENIZERS: Dict[str, Callable[..., Callable]] = {}
# name → module that registers it on import. "gated" (pre-extracted features) is reserved for its own module.
_TOWER_MODULES: Dict[str, Dict[str, str]] = {"video": {"gated": "milnce.towers.gated"},
                                              "text": {"word2vec_gated": "milnce.towers.gated"}}


def _register(table: Dict[str, Callable], kind: str, name: str) -> Callable[[Callable], Callable]:
    def decorator(builder: Callable) -> Callable:
        if name in table and table[name] is not builder:
            raise ValueError(f"a {kind} named '{name}' is already registered")
        table[name] = builder
        return builder
    return decorator


def register_video_tower(name: str):
    """Decorator: `builder(model_cfg) -> nn.Module` whose forward maps B×3×T×H×W in [0,1] to a dict with
    `video_embedding` B×D."""
    return _register(_VIDEO_TOWERS, "video tower", name)


def register_text_tower(name: str):
    """Decorator: `builder(model_cfg, vocab, embedding_weights) -> nn.Module`, forward(input_ids, attention_mask)."""
    return _register(_TEXT_TOWERS, "text tower", name)


def register_tokenizer(name: str):
    """Decorator: `builder(model_cfg, vocab) -> callable(list[str]) -> dict(input_ids[, attention_mask])` for the
    text tower `name`."""
    return _register(_TOKENIZERS, "tokenizer", name)


def video_tower_names() -> List[str]:
    return sorted(set(_VIDEO_TOWERS) | set(_TOWER_MODULES["video"]))


def text_tower_names() -> List[str]:
    return sorted(set(_TEXT_TOWERS) | set(_TOWER_MODULES["text"]))


def as_model_config(model_cfg: Any) -> DictConfig:
    """A ModelConfig dataclass, dict or DictConfig → a DictConfig with every key of the schema."""
    if isinstance(model_cfg, ModelConfig):
        return OmegaConf.structured(model_cfg)
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), model_cfg or {})


def _lookup(table: Dict[str, Callable], kind: str, key: str, name: str, valid: List[str]) -> Callable:
    if name not in table and name in _TOWER_MODULES[kind]:
        module = _TOWER_MODULES[kind][name]
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            raise ConfigError(f"{key}: {kind} tower '{name}' is provided by {module}, which is not available "
                              f"in this installation") from None
    if name not in table:
        raise ConfigError(f"{key}: unknown {kind} tower '{name}'; valid names: {', '.join(valid)}")
    return table[name]


def build_video_tower(model_cfg: Any) -> nn.Module:
    cfg = as_model_config(model_cfg)
    return _lookup(_VIDEO_TOWERS, "video", "model.video_tower", cfg.video_tower, video_tower_names())(cfg)


def build_text_tower(model_cfg: Any, vocab: Optional[Sequence[str]] = None,
                     embedding_weights: Optional[torch.Tensor] = None) -> nn.Module:
    cfg = as_model_config(model_cfg)
    builder = _lookup(_TEXT_TOWERS, "text", "model.text_tower", cfg.text_tower, text_tower_names())
    return builder(cfg, vocab, embedding_weights)


def build_tokenizer(model_cfg: Any, vocab: Optional[Sequence[str]] = None) -> Callable:
    cfg = as_model_config(model_cfg)
    _lookup(_TEXT_TOWERS, "text", "model.text_tower", cfg.text_tower, text_tower_names())
    if cfg.text_tower not in _TOKENIZERS:
        raise ConfigError(f"model.text_tower: no tokenizer is registered for text tower '{cfg.text_tower}'")
    return _TOKENIZERS[cfg.text_tower](cfg, vocab)


# ----------------------------------------------------------------------------- word2vec inputs
def _read_word2vec_file(reader_name: str, key: str, path: str):
    """milnce.towers.word2vec's file readers, with the config key that named the file in the error."""
    from milnce.towers import word2vec

    try:
        return getattr(word2vec, reader_name)(path)
    except (FileNotFoundError, ValueError) as err:
        raise (FileNotFoundError if isinstance(err, FileNotFoundError) else ValueError)(f"{key}: {err}") from None


def _word2vec_vocabulary(cfg: DictConfig, vocab: Optional[Sequence[str]]) -> List[str]:
    if cfg.word2vec.vocab_path:
        return _read_word2vec_file("load_vocab", "model.word2vec.vocab_path", cfg.word2vec.vocab_path)
    if vocab is None:
        raise ConfigError("model.word2vec.vocab_path: the word2vec text tower needs a vocabulary; set "
                          "model.word2vec.vocab_path or pass the corpus vocabulary")
    return list(vocab)


# ----------------------------------------------------------------------------- built-in towers
@register_video_tower("s3d")
def _s3d(cfg: DictConfig) -> nn.Module:
    from milnce.towers.s3d import S3D

    return S3D(num_classes=cfg.embed_dim, **OmegaConf.to_container(cfg.s3d, resolve=True))


@register_video_tower("r2plus1d")
def _r2plus1d(cfg: DictConfig) -> nn.Module:
    from milnce.towers.r2plus1d import R2Plus1DSmall

    return R2Plus1DSmall(embed_dim=cfg.embed_dim, **OmegaConf.to_container(cfg.r2plus1d, resolve=True))


@register_video_tower("vit")
def _vit(cfg: DictConfig) -> nn.Module:
    from milnce.towers.vit import ViTVideoTower

    return ViTVideoTower(embed_dim=cfg.embed_dim, **OmegaConf.to_container(cfg.vit, resolve=True))


@register_text_tower("word2vec")
def _word2vec(cfg: DictConfig, vocab: Optional[Sequence[str]], embedding_weights: Optional[torch.Tensor]):
    from milnce.towers.word2vec import SentenceEmbedding

    w = cfg.word2vec
    if embedding_weights is None and w.embedding_path:
        embedding_weights = _read_word2vec_file("load_embedding_weights", "model.word2vec.embedding_path",
                                                w.embedding_path)
    return SentenceEmbedding(_word2vec_vocabulary(cfg, vocab), num_embeddings=w.num_embeddings,
                             embd_dim=cfg.embed_dim, word_embedding_dim=w.word_dim, output_dim=w.hidden_dim,
                             max_words=w.max_words, lowercase=w.lowercase, freeze_embedding=w.freeze_embedding,
                             embedding_weights=embedding_weights)


@register_tokenizer("word2vec")
def _word_tokenizer(cfg: DictConfig, vocab: Optional[Sequence[str]]):
    from milnce.text.word_tokenizer import WordTokenizer

    w = cfg.word2vec
    return WordTokenizer(_word2vec_vocabulary(cfg, vocab), max_words=w.max_words, lowercase=w.lowercase)


@register_text_tower("hf")
def _hf_text(cfg: DictConfig, vocab: Optional[Sequence[str]], embedding_weights: Optional[torch.Tensor]):
    from milnce.towers.hf_text import HFTextTower

    if embedding_weights is not None:
        raise ConfigError("model.text_tower: embedding_weights are for the word2vec tower; the hf tower loads its "
                          "own weights from model.hf_text.name_or_path")
    h = cfg.hf_text
    return HFTextTower(embed_dim=cfg.embed_dim, name_or_path=h.name_or_path, pooling=h.pooling,
                       freeze_layers=h.freeze_layers)


@register_tokenizer("hf")
def _hf_tokenizer(cfg: DictConfig, vocab: Optional[Sequence[str]]):
    from milnce.text.hf_tokenizer import HFTokenizer

    return HFTokenizer(cfg.hf_text.name_or_path, max_length=cfg.hf_text.max_length)
