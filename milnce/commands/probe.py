"""Linear probe of a checkpoint's frozen video tower on UCF-101 / HMDB-51 splits: tools/probe.py CONFIG checkpoint=PATH

Examples:
  tools/probe.py conf/probe_toy.yaml checkpoint=runs/demo/checkpoints/last.ckpt
  tools/probe.py conf/probe_toy.yaml checkpoint=s3d_howto100m.pth probe.dataset=hmdb51 \\
      probe.video_root=/data/hmdb51/videos probe.split_dir=/data/hmdb51/testTrainMulti_7030_splits probe.size=224
  tools/probe.py conf/probe_toy.yaml checkpoint=… probe.l2=1e-2     # a sweep re-uses the cached features

Writes RUN_DIR/metrics.json (<dataset>/top1, <dataset>/top1_splitN, chance/…), results.md and protocol_cards.json
(the probe's card: feature, clip sampling, classifier, splits). Features are cached under probe.cache_dir
(default RUN_DIR/probe_features).
"""
import sys
from pathlib import Path

from datamodules.benchmarks.action_split import SplitFileError
from milnce.api import load_model
from milnce.config import config_from_argv
from milnce.eval.probe import ProbeError, flat_metrics, model_key, run_probe
from milnce.train.run import write_results


def main(argv=None) -> int:
    cfg, code = config_from_argv(sys.argv[1:] if argv is None else argv, __doc__)
    if cfg is None:
        return code
    if not cfg.checkpoint:
        print("error: checkpoint=PATH is required (a .ckpt of ours, a converted file, or s3d_howto100m.pth)",
              file=sys.stderr)
        return 2
    run_dir = Path(cfg.run_dir)
    module = load_model(cfg.checkpoint, vocab=cfg.model.word2vec.vocab_path)
    try:
        result = run_probe(module.video_tower, cfg.probe, cfg.data.root,
                           cache_dir=cfg.probe.cache_dir or str(run_dir / "probe_features"),
                           model_key=model_key(cfg.checkpoint))
    except (ProbeError, SplitFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    card = {**result.card, "checkpoint": str(cfg.checkpoint)}
    write_results(run_dir, flat_metrics(cfg.probe.dataset, result.metrics), {f"{cfg.probe.dataset}_probe": card})
    return 0


if __name__ == "__main__":
    sys.exit(main())
