"""Zero-shot / scratch / fine-tuned text→video R@1 side by side (the HowTo100M fine-tuning table), toy corpus default.

  tools/finetune_table.py                                  # demo pretraining first, then the three rows
  tools/finetune_table.py --pretrained runs/demo/checkpoints/last.ckpt --steps 200
  tools/finetune_table.py --dataset msrvtt --pretrained runs/demo/checkpoints/last.ckpt

The last line printed is JSON: {"zero_shot": R1, "scratch": R1, "finetuned": R1}.
"""
import argparse
import sys


from milnce.config import ConfigError
from milnce.train.finetune_table import finetune_table, format_table, summary_line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrained", help="pretraining checkpoint (ours, or the released S3D with the matching --set "
                                        "model overrides); default: run conf/demo.yaml into WORK_DIR/pretrain first")
    p.add_argument("--dataset", default="youcook2", choices=("youcook2", "msrvtt"))
    p.add_argument("--steps", type=int, default=100, help="training steps of the scratch and fine-tuned rows")
    p.add_argument("--work-dir", default="runs/finetune_table", help="the row runs are overwritten here")
    p.add_argument("--scratch-lr", type=float, default=1e-3, help="learning rate of the scratch row")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of conf/finetune_<dataset>.yaml for every row (e.g. optim.lr=3e-4)")
    p.add_argument("--pretrain-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of conf/demo.yaml for the pretraining (e.g. trainer.max_steps=300)")
    args = p.parse_args(argv)
    try:
        rows = finetune_table(args.pretrained, args.dataset, args.steps, args.work_dir, args.scratch_lr, args.set,
                              args.pretrain_set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows, args.dataset))
    print(summary_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
