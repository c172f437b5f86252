"""The toy corpus's UCF-101-style action split: off by default (the default corpus is unchanged), in the release's
format when on, held out from pretraining, each video a test video in exactly one of the three splits."""
from dataclasses import asdict

import pytest

from datamodules.benchmarks.ucf101 import read_ucf101_split
from datamodules.toy.corpus import (OMIT_AT_DEFAULT, ToyCorpusConfig, make_toy_corpus, manifest_config, plan_corpus,
                                    toy_corpus_exists)
from datamodules.toy.story import ACTIONS

OFF = dict(num_train_videos=2, num_youcook_videos=0, num_youcook_train_videos=0, num_msrvtt_clips=0,
           num_msrvtt_train_clips=0, num_crosstask_videos=0, num_crosstask_val_videos=0, width=48, height=32)


def test_action_split_is_off_by_default_and_absent_from_the_manifest():
    cfg = ToyCorpusConfig()
    assert cfg.num_action_videos_per_class == 0
    assert "num_action_videos_per_class" not in manifest_config(cfg)
    assert manifest_config(cfg) == {k: v for k, v in asdict(cfg).items() if k not in OMIT_AT_DEFAULT}
    assert not [p for p in plan_corpus(cfg)[1] if p.split == "ucf101"]
    with pytest.raises(ValueError, match="num_action_videos_per_class"):
        ToyCorpusConfig(num_action_videos_per_class=4)


def test_action_split_in_the_ucf101_format(tmp_path):
    cfg = ToyCorpusConfig.small(**OFF, num_action_videos_per_class=6)
    manifest = make_toy_corpus(tmp_path / "c", cfg, progress=False, workers=1)
    assert toy_corpus_exists(tmp_path / "c", cfg)
    assert manifest["counts"]["ucf101"] == 6 * len(ACTIONS)
    lists = tmp_path / "c" / "ucf101" / "ucfTrainTestlist"
    tested = []
    for k in (1, 2, 3):
        split = read_ucf101_split(lists, k)
        assert split.classes == [a.capitalize() for a in ACTIONS]
        assert len(split.train) + len(split.test) == 6 * len(ACTIONS)
        for rel, label in split.train + split.test:
            path = split.resolve(tmp_path / "c" / "ucf101" / "UCF-101", rel)
            assert path is not None and path.suffix == ".mp4"
            entry = manifest["videos"][path.stem]
            assert entry["split"] == "ucf101" and entry["steps"][0]["action"] == list(ACTIONS)[label]
        tested += [rel for rel, _ in split.test]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 6 * len(ACTIONS)
    pretraining = (tmp_path / "c" / "howto100m" / "videos.csv").read_text()
    assert "v_" not in pretraining
