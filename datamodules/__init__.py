"""LightningDataModules and the data layer they stand on.

base.py (TrainingDataModule) under howto100m.py, finetune.py and features.py; video/ (the reader contract, decoding,
ClipSpec, transforms), narrations/ (caption readers, the narration index, bags and windows), benchmarks/ (YouCook2,
MSR-VTT, CrossTask readers), toy/ (the synthetic corpus), atomic.py (every writer). Imports nothing from milnce.
"""
