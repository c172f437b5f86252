"""The shard tests' data config and dataset: data.dataset=shards over a tiny corpus, with a stand-in tokenizer."""
import torch
from omegaconf import OmegaConf

from datamodules.shards.datamodule import ShardsDataModule
from milnce.config import DataConfig


def tokenize(texts):
    return {"input_ids": torch.tensor([[len(t), sum(map(ord, t)) % 997] for t in texts])}


def data_cfg(corpus, shards, seed=3, **kw):
    fields = dict(dataset="shards", root=str(corpus), shards=str(shards), num_frames=4, resize=32, crop=32,
                  batch_size=2, num_workers=0, seed=seed)
    fields.update(kw)
    return OmegaConf.structured(DataConfig(**fields))


def shard_dataset(corpus, shards, **kw):
    dm = ShardsDataModule(data_cfg(corpus, shards, **kw), tokenizer=tokenize)
    dm.setup()
    return dm.build_dataset()
