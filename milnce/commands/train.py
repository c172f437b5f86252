"""Train (and evaluate) from a config: tools/train.py CONFIG [key=value ...]

Examples:
  tools/train.py conf/demo.yaml
  tools/train.py conf/demo.yaml trainer.max_steps=50 run_dir=runs/quick
  tools/train.py conf/pretrain_howto100m.yaml data.root=/data/howto100m trainer.devices=8 trainer.num_nodes=4
"""
import sys

from milnce.config import config_from_argv
from milnce.train.checkpoint_io import CheckpointSaveError
from milnce.train.run import train
from milnce.train.run_lock import RunDirLocked


def main(argv=None) -> int:
    cfg, code = config_from_argv(sys.argv[1:] if argv is None else argv, __doc__)
    if cfg is None:
        return code
    try:
        train(cfg)
    except RunDirLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except CheckpointSaveError as err:  # disk full, file-size limit, read-only run_dir: the previous one is intact
        print(f"error: {err}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
