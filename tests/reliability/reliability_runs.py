"""Seconds-long training runs on a tiny toy corpus: overrides of conf/demo.yaml, and tools/train.py as a process."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "conf" / "demo.yaml")
TRAIN = str(ROOT / "tools" / "train.py")


def make_tiny_corpus(root: Path) -> Path:
    from datamodules.toy.corpus import ToyCorpusConfig, make_toy_corpus

    make_toy_corpus(root, ToyCorpusConfig.small(num_train_videos=8, duration_range=(20.0, 24.0)), progress=False,
                    workers=1)
    return root


def tiny_overrides(corpus, run_dir, max_steps: int = 6, every: int = 2) -> List[str]:
    """No evaluation, a 1/8-width S3D, 4 frames of 32 px, batches of 2, a checkpoint every `every` steps."""
    return [f"data.root={corpus}", "toy.generate=false", f"run_dir={run_dir}", "model.video_tower=s3d",
            "model.s3d.width_mult=0.125",
            "model.embed_dim=32", "model.word2vec.word_dim=16", "model.word2vec.hidden_dim=32",
            "data.batch_size=2", "data.num_frames=4", "data.resize=32", "data.crop=32", "trainer.num_threads=1",
            "eval.retrieval=[]", "eval.crosstask=null", f"trainer.max_steps={max_steps}",
            f"trainer.checkpoint_every_n_steps={every}", "optim.warmup_steps=2", "trainer.log_every_n_steps=1"]


def train_command(overrides: Sequence[str]) -> List[str]:
    return [sys.executable, TRAIN, DEMO, *overrides]


def run_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_train(overrides: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(overrides), cwd=ROOT, env=run_env(), capture_output=True, text=True,
                          timeout=timeout)


def train_tool():
    """tools/train.py as a module (its main(argv) returns the exit code)."""
    spec = importlib.util.spec_from_file_location("milnce_train_tool", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SHARED: dict = {}


def shared_tiny_corpus(tmp_path_factory) -> Path:
    """One tiny corpus per test session, whichever reliability module asks first (no conftest.py here: a second
    module named conftest would shadow tests/conftest.py for `from conftest import ...`)."""
    if "corpus" not in _SHARED:
        _SHARED["corpus"] = make_tiny_corpus(tmp_path_factory.mktemp("reliability_toy") / "corpus")
    return _SHARED["corpus"]
