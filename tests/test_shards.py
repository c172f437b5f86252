"""data.dataset=shards: `milnce shard` round-trips a tiny corpus; the epoch contract (rank-disjoint, seeded by
(seed, epoch, item)) holds on shards; a corrupt sample is replaced and counted; an S3-compatible server on
127.0.0.1 (moto) serves the same samples as the local folder."""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("litdata")

from datamodules.epoch_sampler import EpochShardSampler  # noqa: E402
from datamodules.howto100m import HowTo100MDataModule  # noqa: E402
from datamodules.shards.manifest import read_manifest, verify_shards  # noqa: E402
from datamodules.shards.reader import ShardReader  # noqa: E402
from datamodules.video.decode import DecodeError, read_clip, read_clip_bytes  # noqa: E402
from milnce.commands.shard import main as shard_main  # noqa: E402
from milnce.train.failures import FailureBudget  # noqa: E402
from shard_fakes import data_cfg, shard_dataset, tokenize  # noqa: E402


@pytest.fixture(scope="module")
def shards(tiny_toy_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "set"
    assert shard_main(["--root", str(tiny_toy_corpus), "--out", str(out), "--chunk-bytes", "300KB"]) == 0
    return out


def dataset(corpus, shards, **kw):
    return shard_dataset(corpus, shards, **kw)


def test_shards_round_trip_every_sample_and_the_manifest_checksums(tiny_toy_corpus, shards):
    corpus = HowTo100MDataModule(data_cfg(tiny_toy_corpus, shards))
    corpus.setup()
    manifest = read_manifest(str(shards))
    assert manifest["samples"] == len(corpus.paths) == 6 and len(manifest["shards"]) >= 2
    assert verify_shards(shards) == []
    reader = ShardReader(str(shards))
    for i, path in enumerate(corpus.paths):
        sample = reader.read(i)
        data = Path(path).read_bytes()
        starts, ends, texts = corpus.index.narrations(i)
        assert sample.video == data and manifest["videos"][i]["sha256"] == hashlib.sha256(data).hexdigest()
        assert sample.video_id == corpus.index.video_ids[i] == manifest["videos"][i]["video_id"]
        assert np.array_equal(sample.starts, starts) and np.array_equal(sample.ends, ends) and sample.texts == texts
    # decoding from memory gives the file's frames
    from_memory = read_clip_bytes(reader.read(0).video, "sample 0", 2.0, 4, 5.0, 32)
    assert torch.equal(from_memory, read_clip(corpus.paths[0], 2.0, 4, 5.0, 32))
    # a flipped byte in a shard is what --verify reports
    first = shards.parent / "copy"
    shutil.copytree(shards, first)
    chunk = first / manifest["shards"][0]["file"]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    assert shard_main(["--verify", str(first)]) == 1 and len(verify_shards(first)) == 1


def test_two_ranks_read_disjoint_samples_and_every_item_is_seeded_by_seed_epoch_item(tiny_toy_corpus, shards):
    ds = dataset(tiny_toy_corpus, shards)
    n = len(ds)
    ranks = [EpochShardSampler(n, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(1)
    codes = [list(s) for s in ranks]
    assert set(codes[0]).isdisjoint(codes[1]) and len(codes[0]) == len(codes[1]) == n // 2
    videos = [{int(ds[c]["video_index"][0]) for c in cs} for cs in codes]
    assert videos[0].isdisjoint(videos[1]) and len(videos[0] | videos[1]) == n   # no failures: item = sample
    again = dataset(tiny_toy_corpus, shards)                    # a fresh reader in a fresh dataset
    a, b = ds[codes[0][0]], again[codes[0][0]]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["text"], b["text"])
    other_epoch = ds[codes[0][0] % n + 2 * n]                   # same item in another epoch: the same video
    assert int(other_epoch["video_index"][0]) == int(a["video_index"][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=ranks[0], num_workers=2)  # readers in workers
    batches = list(loader)
    assert [c for b in batches for c in b["sample"].tolist()] == codes[0]
    assert torch.equal(batches[0]["video"][0], ds[codes[0][0]]["video"])


def test_a_corrupt_sample_is_replaced_and_counted(tiny_toy_corpus, shards, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    corpus = HowTo100MDataModule(data_cfg(tiny_toy_corpus, shards))
    corpus.setup()
    victim = 1
    data = Path(corpus.paths[victim]).read_bytes()
    manifest = read_manifest(str(broken))
    chunk = broken / manifest["shards"][manifest["videos"][victim]["shard"]]["file"]
    raw = bytearray(chunk.read_bytes())
    at = raw.find(data)
    assert at >= 0
    raw[at + len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))

    with pytest.raises(DecodeError, match="sha256"):
        ShardReader(str(broken)).read(victim)
    item = dataset(tiny_toy_corpus, broken)[victim]             # epoch 0, item `victim`
    lines = item["failed"].splitlines()   # the replacement may draw the victim again: each try is counted
    assert len(lines) == item["failures"] >= 1 and all(f"#{victim} (" in line and "sha256" in line for line in lines)
    assert int(item["video_index"][0]) != victim
    budget = FailureBudget(max_fraction=0.5, min_tries=1)
    budget.update(torch.tensor([item["failures"]]), [item["failed"]])
    assert budget.failures == item["failures"] and budget.samples == 1 and len(budget.by_file) == 1


def test_s3_compatible_endpoint_serves_the_same_samples_as_the_folder(tiny_toy_corpus, shards, tmp_path, s3_endpoint):
    s3 = s3_endpoint
    s3.create_bucket(Bucket="milnce-test")
    for f in sorted(shards.iterdir()):
        s3.upload_file(str(f), "milnce-test", f"corpus/shards/{f.name}")
    url = "s3://milnce-test/corpus/shards"
    remote = dataset(tiny_toy_corpus, url, shard_cache=str(tmp_path / "cache"))
    local = dataset(tiny_toy_corpus, shards)
    assert len(remote) == len(local) == read_manifest(url)["samples"]
    for code in EpochShardSampler(len(local), seed=3):
        a, b = remote[code], local[code]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["text"], b["text"])
        assert torch.equal(a["video_index"], b["video_index"])
    cached = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.bin"))
    assert cached == 0   # ranged reads per sample: no shard was downloaded whole


@pytest.mark.parametrize("options", [{}, {"window": "bag", "fractional_seek": True, "num_candidates": 3}])
def test_shards_and_files_draw_the_same_items_under_the_sampler_options(tiny_toy_corpus, shards, options):
    """data.window / fractional_seek / num_candidates reach both datamodules' samplers: the same (seed, epoch, item)
    gives the same clip from the shard set and from the video files."""
    files = HowTo100MDataModule(data_cfg(tiny_toy_corpus, shards, **options), tokenizer=tokenize)
    files.setup()
    from_files, from_shards = files.build_dataset(), dataset(tiny_toy_corpus, shards, **options)
    for key, value in options.items():
        assert getattr(from_files.sampler, {"num_candidates": "k"}.get(key, key)) == value
    for code in list(EpochShardSampler(len(from_files), seed=3))[:4]:
        a, b = from_files[code], from_shards[code]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["text"], b["text"])
