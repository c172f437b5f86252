"""A sharded, epoch-aware, resumable sampler for training datasets.

Each yielded index encodes (epoch, item) as `epoch * n + item`, so a dataset can seed its per-sample randomness
from (seed, epoch, item) alone: epochs are reproducible from the seed, whatever the number of workers, and a
resumed run draws exactly the samples the interrupted one would have drawn.

Under DDP each rank takes a disjoint, equal-sized shard of each epoch's permutation (Lightning's
DistributedSampler semantics with drop_last=True), so no sample is duplicated across ranks.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List

import numpy as np
from torch.utils.data import Sampler


class EpochShardSampler(Sampler[int]):
    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if num_items <= 0:
            raise ValueError("EpochShardSampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"EpochShardSampler: rank {rank} outside world size {world_size}")
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0          # samples of the current epoch already consumed (mid-epoch resume)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        # The epoch's full length, also while resuming it: Lightning restores its batch count of the interrupted
        # epoch and ends the epoch at this length, so the remaining batches are exactly the ones not yet trained on
        # (a shorter length would also shorten every later epoch, as the loader is not rebuilt).
        return self.num_items // self.world_size

    def _order(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        per_rank = self.num_items // self.world_size
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[int]:
        # the skip stays until the epoch changes: Lightning may call iter() more than once before the first batch
        order = self._order()[self._skip:]
        base = self.epoch * self.num_items
        return iter((base + int(i)) for i in order)

    # Lightning does not save sampler state itself; the datamodule stores this in checkpoints.
    def state_dict(self, consumed: int) -> Dict[str, int]:
        return {"epoch": self.epoch, "consumed": int(consumed), "seed": self.seed, "num_items": self.num_items}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        if state.get("num_items") != self.num_items or state.get("seed") != self.seed:
            raise ValueError("sampler state in the checkpoint was made for another dataset or seed "
                             f"({state.get('num_items')} items, seed {state.get('seed')}; now {self.num_items}, "
                             f"{self.seed})")
        self.epoch = int(state["epoch"])
        self._skip = int(state["consumed"])


def split_sample_index(index: int, num_items: int):
    """Inverse of the sampler's encoding: (epoch, item)."""
    return divmod(int(index), int(num_items))


class ResumableEpochs:
    """Mixin for a LightningDataModule whose training loader uses an EpochShardSampler.

    Lightning saves `state_dict()` in every checkpoint and hands it back through `load_state_dict()` on resume;
    the sampler then skips what the interrupted epoch already trained on.
    """

    sampler: "EpochShardSampler | None" = None
    _resume_state: "Dict[str, int] | None" = None

    def epoch_sampler(self, num_items: int, seed: int) -> EpochShardSampler:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        self.sampler = EpochShardSampler(num_items, seed=seed, rank=rank, world_size=world)
        if self._resume_state is not None:
            self.sampler.load_state_dict(self._resume_state)
            self._resume_state = None
        return self.sampler

    def state_dict(self) -> Dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if self.sampler is None or trainer is None:
            return {}
        # processed, not completed: a step checkpoint is written in on_train_batch_end, after the batch trained
        # but before Lightning counts it as completed (on restore Lightning counts it as completed itself)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"sampler": self.sampler.state_dict(consumed=done * self.cfg.batch_size)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._resume_state = state.get("sampler")


def with_replacement(item: int, num_items: int, rng: np.random.Generator, attempt, recoverable, max_tries: int,
                     describe, what: str = "samples failed to decode"):
    """`attempt(item)`; while it raises one of `recoverable`, count the failure and try another random item.

    A sample that cannot be produced is replaced, never emitted as zeros. Returns (item used, result, failure
    messages); past `max_tries` consecutive failures it raises, naming the last ones.
    """
    failed: List[str] = []
    for _ in range(max_tries):
        try:
            return item, attempt(item, failed), failed
        except recoverable as err:
            failed.append(describe(item, err))
            item = int(rng.integers(num_items))
    raise RuntimeError(f"{max_tries} consecutive {what}; last: {failed[-3:]}")
