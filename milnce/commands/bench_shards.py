"""Clips/s and bytes read per clip: training items from per-video files vs from shards, side by side in one run.

On one toy corpus (HowTo100M layout): the same epoch order of the same items (EpochShardSampler, seed 0) read by
the file datamodule (data.dataset=howto100m: read_clip seeks in each file) and by data.dataset=shards from the
local folder and from an S3-compatible server on 127.0.0.1 (moto); plus webdataset's sequential tar read of the
same samples as a second engine's rate; and the same items from a segmented set (`milnce shard --segment-seconds`,
--segment-seconds / --overlap-seconds here; 0 skips it), local and on S3. Bytes per clip: files through a counting
file object handed to PyAV, shards as the bytes litdata returns (its S3 downloader wrapped; locally, every field of
every sample read for segments: the narrations sample and the segment). Single process, one decoder thread. The
last line is a JSON object: clips_per_s_files, clips_per_s_shards, clips_per_s_s3, clips_per_s_webdataset,
clips_per_s_segments, clips_per_s_segments_s3, bytes_per_clip_files, bytes_per_clip_shards, bytes_per_clip_s3,
bytes_per_clip_segments, bytes_per_clip_segments_s3, mosaic (the install note).
"""
import argparse
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from milnce.config import DataConfig
from datamodules.epoch_sampler import EpochShardSampler
from datamodules.howto100m import HowTo100MDataModule
from datamodules.shards.datamodule import ShardsDataModule
from datamodules.shards.writer import write_shards
from datamodules.toy.corpus import ToyCorpusConfig, make_toy_corpus
from datamodules.video.decode import read_clip_bytes, set_decoder_threads
from datamodules.video.pyav import PyAVReader

MOSAIC = ("mosaicml-streaming 0.13.0: installing it replaced torch 2.13.0+cpu by 2.14.1 (CUDA wheels), added "
          "torchvision and downgraded transformers 5.24 -> 4.57.6; with --no-deps it fails to import without "
          "torchvision. Not measured.")


def tokenize(texts):
    return {"input_ids": torch.zeros(len(texts), 4, dtype=torch.long)}


class CountingFile(io.RawIOBase):
    """A file whose reads are counted: what PyAV pulls from a video file for one clip."""

    def __init__(self, path, counter):
        self.f, self.counter = open(path, "rb"), counter

    def readinto(self, buf):
        n = self.f.readinto(buf)
        self.counter[0] += n or 0
        return n

    def seek(self, offset, whence=0):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()

    def readable(self):
        return True

    def seekable(self):
        return True

    def close(self):
        self.f.close()
        super().close()


def rate(ds, codes):
    t0 = time.perf_counter()
    for code in codes:
        ds[code]
    return len(codes) / (time.perf_counter() - t0)


def file_bytes_per_clip(dm, ds, codes, cfg) -> float:
    """Replay the clips the file dataset decodes, through a counting file object."""
    counter, clips = [0], 0
    for code in codes:
        item = ds[code]
        video = int(item["video_index"][0])
        rng = np.random.default_rng([cfg.seed, *divmod(code, len(ds))])
        for s in ds.sampler.sample_clips(video, rng):
            raw = CountingFile(dm.paths[video], counter)
            with PyAVReader(dm.paths[video], source=raw) as reader:
                reader.clip(s.seek, cfg.num_frames, cfg.fps, cfg.resize)
            clips += 1
    return counter[0] / clips


def webdataset_rate(shard_dir: Path, dm, cfg, n: int) -> float:
    import webdataset as wds  # optional: the second engine measured here

    tar_path = shard_dir / "wds-000000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for i, path in enumerate(dm.paths):
            data = Path(path).read_bytes()
            info = tarfile.TarInfo(f"{i:08d}.mp4")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    t0, count = time.perf_counter(), 0
    for sample in wds.WebDataset(str(tar_path), shardshuffle=False):
        read_clip_bytes(sample["mp4"], sample["__key__"], 1.0, cfg.num_frames, cfg.fps, cfg.resize)
        count += 1
        if count >= n:
            break
    return count / (time.perf_counter() - t0)


def s3_rate(shard_dir: Path, cfg, codes, cache: str):
    from moto.server import ThreadedMotoServer  # optional: test extra
    import boto3
    from litdata.streaming.downloader import S3Downloader

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    counted = [0]
    original = S3Downloader.download_bytes

    def counting(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        counted[0] += len(out)
        return out

    S3Downloader.download_bytes = counting
    try:
        host, port = server.get_host_and_port()
        os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                          AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="milnce-bench")
        for f in shard_dir.iterdir():
            if f.is_file() and not f.name.startswith("wds-"):
                s3.upload_file(str(f), "milnce-bench", f"shards/{f.name}")
        remote_cfg = OmegaConf.merge(cfg, {"shards": "s3://milnce-bench/shards", "shard_cache": cache})
        dm = ShardsDataModule(remote_cfg, tokenizer=tokenize, progress=False)
        dm.setup()
        ds = dm.build_dataset()
        ds[codes[0]]
        counted[0] = 0
        r = rate(ds, codes)
        return r, counted[0] / len(codes)
    finally:
        S3Downloader.download_bytes = original
        server.stop()


def segment_rows(files, cfg, work: Path, codes, length: float, overlap: float) -> dict:
    """clips/s and bytes per clip of a segmented set of the same corpus, local folder and S3."""
    out = work / f"segments-{length:g}-{overlap:g}"
    if not (out / "manifest.json").is_file():
        write_shards(files.index, files.paths, out, chunk_bytes="8MB", overwrite=True, segment_seconds=length,
                     overlap_seconds=overlap)
    seg_cfg = OmegaConf.merge(cfg, {"shards": str(out)})
    dm = ShardsDataModule(seg_cfg, tokenizer=tokenize, progress=False)
    dm.setup()
    ds = dm.build_dataset()
    ds[codes[0]]
    row = {"segment_seconds": length, "overlap_seconds": overlap,
           "segments_per_video": sum(len(v["segments"]) for v in dm.manifest["videos"]) / len(codes),
           "clips_per_s_segments": rate(ds, codes)}
    counted, raw = [0], ds.reader.raw

    def counting(number):
        sample = raw(number)
        counted[0] += sum(len(v) for v in sample.values() if isinstance(v, (np.ndarray, str, bytes)))
        return sample

    ds.reader.raw = counting
    for code in codes:
        ds[code]
    row["bytes_per_clip_segments"] = counted[0] / (len(codes) * cfg.clips_per_video)
    row["clips_per_s_segments_s3"], s3_bytes = s3_rate(out, seg_cfg, codes, str(work / "s3_cache_segments"))
    row["bytes_per_clip_segments_s3"] = s3_bytes / cfg.clips_per_video
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--work", help="folder for the corpus and shards (default: a temporary one)")
    ap.add_argument("--segment-seconds", type=float, default=10.0,
                    help="segment length of the segmented set measured (0: skip; 10 s against 40-60 s toy videos)")
    ap.add_argument("--overlap-seconds", type=float, default=4.0, help="its overlap (the clip is 3.2 s)")
    args = ap.parse_args(argv)
    set_decoder_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_shards_"))
    root = work / "corpus"
    if not (root / "howto100m" / "videos.csv").is_file():
        make_toy_corpus(root, ToyCorpusConfig.small(num_train_videos=args.videos, num_youcook_videos=1,
                                                    num_msrvtt_clips=1, num_crosstask_videos=1,
                                                    duration_range=(40.0, 60.0)), progress=True, workers=1)
    cfg = OmegaConf.structured(DataConfig(dataset="shards", root=str(root), shards=str(work / "shards"),
                                          num_frames=16, fps=5.0, resize=128, crop=112, seed=0))
    files = HowTo100MDataModule(cfg, tokenizer=tokenize, progress=False)
    files.setup()
    if not (work / "shards" / "manifest.json").is_file():
        write_shards(files.index, files.paths, work / "shards", chunk_bytes="8MB", overwrite=True)
    file_ds = files.build_dataset()
    shards = ShardsDataModule(cfg, tokenizer=tokenize, progress=False)
    shards.setup()
    shard_ds = shards.build_dataset()
    codes = list(EpochShardSampler(len(file_ds), seed=0))
    shard_ds[codes[0]], file_ds[codes[0]]                  # open readers, warm the page cache for both
    result = {"videos": len(codes), "clip": "16 frames at 5 fps, 128 px short side",
              "clips_per_s_files": rate(file_ds, codes), "clips_per_s_shards": rate(shard_ds, codes)}
    result["clips_per_s_s3"], result["bytes_per_clip_s3"] = s3_rate(work / "shards", cfg, codes,
                                                                    str(work / "s3_cache"))
    result["clips_per_s_webdataset"] = webdataset_rate(work / "shards", files, cfg, len(codes))
    result["bytes_per_clip_files"] = file_bytes_per_clip(files, file_ds, codes, cfg)
    result["bytes_per_clip_shards"] = float(np.mean([len(shard_ds.reader.read(i).video) for i in range(len(codes))]))
    chunks = sum(p.stat().st_size for p in (work / "shards").glob("chunk-*.bin"))
    result["shard_bytes_per_sample"] = chunks / len(codes)
    if args.segment_seconds > 0:
        result.update(segment_rows(files, cfg, work, codes, args.segment_seconds, args.overlap_seconds))
    result["mosaic"] = MOSAIC
    result = {k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result))
    return 0
