import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# 2-core CI machine: keep torch from oversubscribing when several processes run.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REFERENCE = ROOT / "tests" / "data"   # facts the tests check against (tests/data/README.md)


@pytest.fixture(scope="session")
def tiny_toy_corpus(tmp_path_factory):
    """A few short toy videos in every layout (HowTo100M, YouCook2, MSR-VTT, CrossTask), rendered once per run."""
    from datamodules.toy.corpus import ToyCorpusConfig, make_toy_corpus

    root = tmp_path_factory.mktemp("toy") / "corpus"
    make_toy_corpus(root, ToyCorpusConfig.small(num_train_videos=6, num_youcook_videos=2, num_msrvtt_clips=4,
                                                num_crosstask_videos=3, duration_range=(20.0, 24.0)),
                    progress=False, workers=1)
    return root


def tiny_run_overrides(corpus, run_dir):
    """Overrides that shrink conf/demo.yaml to a seconds-long run on the tiny corpus."""
    return [f"data.root={corpus}", "toy.generate=false", f"run_dir={run_dir}", "model.s3d.width_mult=0.125",
            "model.r2plus1d.widths=[8,8,16,16]",
            "model.embed_dim=32", "model.word2vec.word_dim=16", "model.word2vec.hidden_dim=32",
            "data.batch_size=3", "data.num_frames=4", "data.resize=32", "data.crop=32",
            "eval.retrieval.0.num_windows=2", "eval.retrieval.0.num_frames=4", "eval.retrieval.0.size=32",
            "eval.crosstask.num_frames=4", "eval.crosstask.size=32", "trainer.num_threads=1",
            "trainer.checkpoint_every_n_steps=2"]


@pytest.fixture
def s3_endpoint(monkeypatch):
    """moto's S3-compatible server on 127.0.0.1 (a real HTTP endpoint, not a mocked client) with the AWS_* variables
    set for this process and its children; yields a boto3 S3 client. Skips where moto or boto3 is not installed."""
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        yield boto3.client("s3")
    finally:
        server.stop()
