"""Sharded streaming for pretraining: a HowTo100M-layout corpus written once into litdata shards (writer.py), read
back by sample index from a local folder or an object store (reader.py), trained from with the same epoch sampler,
per-sample seeding and failure budget as the per-file corpus (datamodule.py). manifest.py: the JSON manifest.
segments.py: videos cut into keyframe-aligned stream-copy segments (`milnce shard --segment-seconds`).
"""
