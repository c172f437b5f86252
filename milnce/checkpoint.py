"""Checkpoint I/O: read the released MIL-NCE files, MIL-NCE training checkpoints and our own, load towers strictly.

Every file is read with torch.load(weights_only=True): a checkpoint can never run code. Whatever the source,
read_state_dict returns canonical keys, `video_tower.<S3D key>` and `text_tower.<SentenceEmbedding key>`
(the released `text_module.*` keys become `text_tower.*`), plus any other module keys of our own checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from milnce.towers.s3d import S3D
from milnce.towers.word2vec import SentenceEmbedding
from datamodules.atomic import atomic_path

PathLike = Union[str, Path]
VIDEO_PREFIX = "video_tower."
TEXT_PREFIX = "text_tower."
RELEASED_TEXT_PREFIX = "text_module."
BN_COUNTER = "num_batches_tracked"
_LISTED = 10  # names shown in an error before "… and N more"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model; the message names the path or keys."""


def read_state_dict(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state, meta) from any supported checkpoint file.

    meta: `format` (released | milnce_training | lightning | milnce), `path`, `epoch` where known, `milnce`
    (our metadata dict: vocab, model config, …) where present, and `inferred` (what the tensors say about the
    architecture: space_to_depth, num_embeddings, width of mixed_5c).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, or a pickle weights_only refuses
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise CheckpointError(f"{path}: not a plain state dict (torch.load(weights_only=True) refused it: "
                                  f"{message})") from e
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {message})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (a state dict or a checkpoint), got {type(obj).__name__}")

    meta: Dict[str, Any] = {"path": str(path)}
    if isinstance(obj.get("state_dict"), dict):
        raw = obj["state_dict"]
        if "pytorch-lightning_version" in obj:
            meta["format"] = "lightning"
        elif "milnce" in obj:
            meta["format"] = "milnce"
        else:
            meta["format"] = "milnce_training"
        if "epoch" in obj:
            meta["epoch"] = obj["epoch"]
        if isinstance(obj.get("milnce"), dict):
            meta["milnce"] = obj["milnce"]
    else:
        raw = obj
        meta["format"] = "released"

    bad = [k for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict: entries that are not tensors: {_names(bad)}")
    if not raw:
        raise CheckpointError(f"{path}: the state dict is empty")
    state = _canonical_keys(raw, meta["format"], path)
    meta["inferred"] = infer_architecture(state)
    return state, meta


def _canonical_keys(raw: Dict[str, torch.Tensor], fmt: str, path: Path) -> Dict[str, torch.Tensor]:
    keys = list(raw)
    if all(k.startswith("module.") for k in keys):  # DataParallel / DDP wrappers
        raw = {k[len("module."):]: v for k, v in raw.items()}
    if any(k.startswith((VIDEO_PREFIX, TEXT_PREFIX)) for k in raw):
        return dict(raw)  # already ours (Lightning module or converted file)
    if fmt in ("lightning", "milnce"):
        raise CheckpointError(f"{path}: a {fmt} checkpoint without video_tower.* or text_tower.* keys "
                              f"(found {_names(list(raw))})")
    state = {}
    for key, value in raw.items():  # the original S3D module: video keys at top level, text under text_module.
        if key.startswith(RELEASED_TEXT_PREFIX):
            state[TEXT_PREFIX + key[len(RELEASED_TEXT_PREFIX):]] = value
        else:
            state[VIDEO_PREFIX + key] = value
    return state


def infer_architecture(state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """What the tensors tell about the towers (S3D conv1 layout, mixed_5c width, word table size)."""
    info: Dict[str, Any] = {}
    conv1 = state.get(VIDEO_PREFIX + "conv1.conv1.weight")
    if conv1 is not None and conv1.dim() == 5:
        info["video_tower"] = "s3d"
        info["space_to_depth"] = conv1.shape[1] == 24
        fc = state.get(VIDEO_PREFIX + "fc.weight")
        if fc is not None and fc.dim() == 2:
            info["mixed_5c_channels"], info["embed_dim"] = int(fc.shape[1]), int(fc.shape[0])
    word_embd = state.get(TEXT_PREFIX + "word_embd.weight")
    if word_embd is not None and word_embd.dim() == 2:
        info["text_tower"] = "word2vec"
        info["num_embeddings"], info["word_embedding_dim"] = (int(s) for s in word_embd.shape)
    info["has_bn_counters"] = any(k.endswith(BN_COUNTER) for k in state)
    return info


def load_towers(video_tower: Optional[nn.Module], text_tower: Optional[nn.Module],
                state: Dict[str, torch.Tensor], strict: bool = True) -> Dict[str, Dict[str, List[str]]]:
    """Load canonical-key tensors into the towers (either may be None to skip it).

    strict: any missing or unexpected tower key is a CheckpointError naming them (a missing BatchNorm
    num_batches_tracked is tolerated: older files lack it). Shape mismatches are always an error.
    Keys outside both towers' prefixes (e.g. loss parameters) are left to the caller.
    Returns {"video_tower"|"text_tower": {"missing": [...], "unexpected": [...]}} for the non-strict case.
    """
    report: Dict[str, Dict[str, List[str]]] = {}
    problems: List[str] = []
    for prefix, tower in ((VIDEO_PREFIX, video_tower), (TEXT_PREFIX, text_tower)):
        if tower is None:
            continue
        name = prefix[:-1]
        given = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = tower.state_dict()
        missing = [k for k in own if k not in given and not k.endswith(BN_COUNTER)]
        unexpected = [k for k in given if k not in own]
        mismatched = [f"{prefix}{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}"
                      for k, v in given.items() if k in own and v.shape != own[k].shape]
        if mismatched:
            hint = ""
            if any("conv1.conv1.weight" in m for m in mismatched):
                hint = " (conv1 differs: check model.s3d.space_to_depth)"
            elif any("word_embd.weight" in m for m in mismatched):
                rows = given["word_embd.weight"].shape[0]
                hint = f" (the checkpoint's word table has {rows} rows: set model.word2vec.num_embeddings={rows})"
            problems.append(f"{name}: shape mismatch for {len(mismatched)} tensors: "
                            f"{_names(mismatched)}{hint}")
        if strict and (missing or unexpected):
            if missing:
                problems.append(f"{name}: missing keys {_names([prefix + k for k in missing])}")
            if unexpected:
                problems.append(f"{name}: unexpected keys {_names([prefix + k for k in unexpected])}")
        report[name] = {"missing": missing, "unexpected": unexpected}
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))

    for prefix, tower in ((VIDEO_PREFIX, video_tower), (TEXT_PREFIX, text_tower)):
        if tower is None:
            continue
        own = tower.state_dict()
        given = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own}
        for key, value in own.items():  # keep the model's own counters where the file has none
            if key not in given and key.endswith(BN_COUNTER):
                given[key] = value
        tower.load_state_dict(given, strict=strict)
    return report


def write_checkpoint(path: PathLike, state: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> None:
    """Write {"state_dict": state, "milnce": meta} atomically (datamodules.atomic).

    meta must hold only plain values (dict, list, str, int, float, bool, None) so weights_only can read it.
    """
    path = Path(path)
    _check_plain(meta, "meta")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"write_checkpoint: state entries that are not tensors: {_names(bad)}")
    with atomic_path(path) as tmp:
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in state.items()}, "milnce": meta}, tmp)


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"write_checkpoint: {where} has a non-string key {key!r}")
            _check_plain(item, f"{where}.{key}")
        return
    raise CheckpointError(f"write_checkpoint: {where} is a {type(value).__name__}; metadata must be plain "
                          f"dict/list/str/int/float/bool/None (convert OmegaConf configs to containers)")


def _names(items: List[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" … and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def convert_original(src: PathLike, dst: PathLike, vocab: Optional[List[str]] = None,
                     max_words: int = 16) -> Dict[str, Any]:
    """Turn the released s3d_howto100m.pth (or a MIL-NCE epoch file) into our checkpoint format.

    The tensors are first loaded strictly into freshly built towers, so a file that would not load later is
    refused now. vocab: the word list (s3d_dict.npy) stored with the weights. Returns what was found.
    """

    state, meta = read_state_dict(src)
    info = meta["inferred"]
    if info.get("video_tower") != "s3d":
        raise CheckpointError(f"{src}: no S3D weights (conv1.conv1.weight) in this checkpoint")
    if info.get("mixed_5c_channels") != 1024:
        raise CheckpointError(f"{src}: mixed_5c has {info.get('mixed_5c_channels')} channels, not 1024: "
                              f"not the released S3D width")
    video = S3D(num_classes=info["embed_dim"], space_to_depth=info["space_to_depth"])
    text = None
    model: Dict[str, Any] = {"video_tower": "s3d", "s3d": {"space_to_depth": bool(info["space_to_depth"])}}
    if info.get("text_tower") == "word2vec":
        num_embeddings = info["num_embeddings"]
        if vocab is not None and len(vocab) > num_embeddings - 1:
            raise CheckpointError(f"{src}: the vocabulary has {len(vocab)} words but the checkpoint's embedding "
                                  f"table only {num_embeddings} rows (ids 1..{num_embeddings - 1})")
        text = SentenceEmbedding(vocab or [], num_embeddings=num_embeddings,
                                 word_embedding_dim=info["word_embedding_dim"], embd_dim=info["embed_dim"],
                                 max_words=max_words)
        model["text_tower"] = "word2vec"
        model["word2vec"] = {"num_embeddings": num_embeddings, "max_words": int(max_words)}
    load_towers(video, text, state, strict=True)
    ours = {k: v for k, v in state.items() if k.startswith((VIDEO_PREFIX, TEXT_PREFIX))}
    write_checkpoint(dst, ours, {"vocab": list(vocab) if vocab is not None else None, "model": model,
                                 "source": {"path": str(src), "format": meta["format"],
                                            "epoch": meta.get("epoch")}})
    return {"format": meta["format"], "epoch": meta.get("epoch"), "tensors": len(ours),
            "video_parameters": sum(p.numel() for p in video.parameters()),
            "text_parameters": sum(p.numel() for p in text.parameters()) if text is not None else 0,
            "has_bn_counters": info["has_bn_counters"], "model": model,
            "vocab_size": len(vocab) if vocab is not None else None}
