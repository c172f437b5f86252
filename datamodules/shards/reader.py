"""Random access to the samples of a shard set by number, from a local folder or an object-store URL.

litdata's StreamingDataset is opened lazily in each process (DataLoader workers included) and indexed directly, so
the sample order is ours (datamodules.epoch_sampler), not litdata's. A local set is read in place (memory-mapped
shards); a remote one is read per sample with two ranged GETs (the sample's offsets, then exactly its bytes), so
no shard is downloaded whole and any order costs the same. Endpoints of S3-compatible stores come from
AWS_ENDPOINT_URL (boto3's own variable), or `storage_options={"endpoint_url": …}`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from datamodules.shards.manifest import is_remote
from datamodules.video.decode import DecodeError


@dataclass(frozen=True)
class ShardSample:
    number: int            # sample number in the set
    video_id: str
    duration: float
    video: bytes
    starts: np.ndarray
    ends: np.ndarray
    texts: List[str]


class ShardReader:
    def __init__(self, url: str, cache_dir: Optional[str] = None, storage_options: Optional[dict] = None):
        self.url = str(url).removeprefix("file://") if not is_remote(url) else str(url)
        self.cache_dir = cache_dir
        self.storage_options = storage_options
        self._dataset = None
        self._pid = None

    def name(self, number: int, video_id: str = "") -> str:
        return f"{self.url}#{number}" + (f" ({video_id})" if video_id else "")

    def _open(self):
        if self._dataset is None or self._pid != os.getpid():
            # litdata is a heavy optional dependency ([shards] extra); imported where a shard set is opened
            os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
            from litdata import StreamingDataset

            self._dataset = StreamingDataset(self.url, cache_dir=self.cache_dir, storage_options=self.storage_options)
            self._pid = os.getpid()
        return self._dataset

    def __len__(self) -> int:
        return len(self._open())

    def __getstate__(self):  # a DataLoader worker opens its own dataset (litdata holds per-process handles)
        state = self.__dict__.copy()
        state["_dataset"], state["_pid"] = None, None
        return state

    def raw(self, number: int) -> Any:
        return self._open()[int(number)]

    def read(self, number: int) -> ShardSample:
        """Sample `number`, its bytes checked against its sha256; DecodeError for any read or checksum failure."""
        try:
            raw = self.raw(number)
        except Exception as err:  # noqa: BLE001 - a failed read is a counted, replaced sample
            raise DecodeError(self.name(number), f"cannot read the sample: {type(err).__name__}: {err}") from err
        try:
            video = np.asarray(raw["video"], dtype=np.uint8).tobytes()
            video_id = str(raw["video_id"])
            if hashlib.sha256(video).hexdigest() != raw["sha256"]:
                raise DecodeError(self.name(number, video_id), "video bytes do not match the sample's sha256 "
                                                               "(corrupt shard)")
            narr = json.loads(raw["narrations"])
            return ShardSample(int(number), video_id, float(raw["duration"]), video,
                               np.asarray(narr["start"], dtype=np.float64), np.asarray(narr["end"], dtype=np.float64),
                               list(narr["text"]))
        except DecodeError:
            raise
        except Exception as err:  # noqa: BLE001 - a sample whose fields do not parse is corrupt
            raise DecodeError(self.name(number), f"corrupt sample: {type(err).__name__}: {err}") from err
