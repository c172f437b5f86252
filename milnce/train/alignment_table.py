"""The narration-alignment table on the toy corpus (tools/alignment_table.py).

Corpus: the demo's content (conf/demo.yaml toy section) with step lines shifted N(0, σ²) from where they belong
(σ = 5 s, wider than the demo's U(−3, 3): real ASR drifts by several seconds) and an HTM-Align-style held-out split
of 40 narrated videos; rendered at ROOT when absent. The generator knows each step line's true place (its anchor).

1. Re-timing with a trained checkpoint (default: the demo's). The score smoothing is chosen on training videos
   (never the held-out split) by the median |predicted − true| time; the held-out split is then re-timed by
   `milnce align`'s API and measured: median |ASR − true| and |re-timed − true| over step lines, HTM-Align R@1 of
   the ASR times ("trust the ASR" baseline) and of the re-timed ones, ROC-AUC of alignability (step vs filler).
2. With --rounds: the loop the papers run, in miniature and at one budget: round 1 trains on the ASR times,
   re-times the training corpus with itself, round 2 trains from scratch on the re-timed captions (and, as a third
   row, on them less the least alignable fraction); each row's held-out YouCook2-style R@10 and HTM-Align R@1.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from milnce.align.retime import align_corpus, read_narrations, video_paths
from milnce.align.scoring import SearchSettings, retime
from milnce.align.windows import decoded_video, video_scores
from milnce.api import load_model
from milnce.config import load_config
from milnce.eval.alignment import alignability_auc, median_offset, recall_at_1
from milnce.train.run import train
from datamodules.atomic import atomic_write
from datamodules.benchmarks.htm_align import read_htm_align
from datamodules.narrations.retimed import read_sidecar
from datamodules.toy.corpus import ToyCorpusConfig, load_manifest, make_toy_corpus, toy_corpus_exists

CONF = Path(__file__).resolve().parents[2] / "conf"
OFFSET = {"offset_distribution": "normal", "narration_offset": 5.0, "num_align_videos": 40}
SMOOTH_GRID = (0.0, 1.2, 2.4, 3.2, 4.8)


def corpus_overrides(root: Path) -> List[str]:
    return [f"data.root={root}"] + [f"toy.{k}={v}" for k, v in OFFSET.items()]


def ensure_alignment_corpus(root: Path) -> None:
    toy = OmegaConf.to_container(load_config(CONF / "demo.yaml", corpus_overrides(root)).toy, resolve=True)
    toy.pop("generate")
    cfg = ToyCorpusConfig(**toy)
    if not toy_corpus_exists(root, cfg):
        make_toy_corpus(root, cfg)


def true_times(root: Path) -> Dict[str, np.ndarray]:
    """video → each narration's anchor (NaN for filler), in caption order."""
    return {vid: np.array([np.nan if n["anchor"] is None else n["anchor"] for n in v["narrations"]])
            for vid, v in load_manifest(root)["videos"].items() if "narrations" in v}


def choose_smoothing(model, root: Path, num_videos: int, settings: SearchSettings,
                     grid: Sequence[float] = SMOOTH_GRID) -> Dict[float, float]:
    """Median |re-timed − true| on the first training videos for each smoothing (each video embedded once)."""
    corpus = read_narrations(root / "howto100m" / "caption.json")[:num_videos]
    paths = video_paths([v for v, *_ in corpus], root / "videos")
    truth = true_times(root)
    errors: Dict[float, List[np.ndarray]] = {s: [] for s in grid}
    for vid, starts, ends, texts in tqdm(corpus, desc="choosing the smoothing", unit="video"):
        scores, windows = video_scores(model, decoded_video(paths[vid], model.clip_spec), texts, settings.stride)
        for s in grid:
            got = retime(scores, windows.centres, starts, ends, SearchSettings(settings.radius, settings.stride, s),
                         windows.seconds, windows.duration)
            errors[s].append(np.abs(got["pred_time"] - truth[vid])[np.isfinite(truth[vid])])
    return {s: float(np.median(np.concatenate(e))) for s, e in errors.items()}


def held_out_figures(root: Path, sidecar: Path) -> Dict[str, float]:
    table = read_sidecar(sidecar).to_pandas().sort_values(["video", "index"], kind="stable")
    ann = read_htm_align(root / "htm_align" / "htm_align.json")
    truth = true_times(root)
    asr, pred, true, start, end, flags, align = [], [], [], [], [], [], []
    for vid, g in table.groupby("video", sort=True):
        v = ann.videos[vid]
        asr.append(0.5 * (g.asr_start.values + g.asr_end.values))
        pred.append(0.5 * (g.pred_start.values + g.pred_end.values))
        true.append(truth[vid])
        start.append(v.start), end.append(v.end), flags.append(v.alignable), align.append(g.alignability.values)
    cat = np.concatenate
    return {"offset_before_s": median_offset(cat(asr), cat(true)), "offset_after_s": median_offset(cat(pred), cat(true)),
            "r1_asr": recall_at_1(cat(asr), cat(start), cat(end), cat(flags)),
            "r1_aligned": recall_at_1(cat(pred), cat(start), cat(end), cat(flags)),
            "auc": alignability_auc(cat(align), cat(flags)),
            "n_sentences": int(len(cat(flags))), "n_alignable": int(cat(flags).sum()), "videos": len(ann)}


def retime_split(model, root: Path, split: str, out: Path, settings: SearchSettings) -> Path:
    base = root / split
    videos = root / "videos" if split == "howto100m" else base / "videos"
    align_corpus(model, base / "caption.json", videos, out, settings)
    return out / "alignment.parquet"


def train_round(run_dir: Path, root: Path, steps: int, extra: Sequence[str] = ()) -> Dict[str, float]:
    if (run_dir / "metrics.json").is_file():
        print(f"[alignment_table] reusing the finished run in {run_dir}")
        return json.loads((run_dir / "metrics.json").read_text())
    asr = root / "htm_align" / "caption.json"     # the windowed protocol around the real ASR times
    cfg = load_config(CONF / "demo.yaml", [*corpus_overrides(root), f"run_dir={run_dir}", f"trainer.max_steps={steps}",
                                           "trainer.max_time=null", "eval.at_fractions=[]", "eval.crosstask=null",
                                           "eval.alignment={}", f"eval.alignment.asr_captions={asr}", *extra])
    return train(cfg)


def rounds(root: Path, work: Path, steps: int, settings: SearchSettings, drop_fraction: float) -> Dict[str, dict]:
    first = train_round(work / "round1", root, steps)
    model = load_model(work / "round1" / "checkpoints" / "last.ckpt")
    sidecar = retime_split(model, root, "howto100m", work / "round1_aligned", settings)
    threshold = float(np.quantile(read_sidecar(sidecar).column("alignability").to_numpy(), drop_fraction))
    captions = work / "round1_aligned" / "caption.json"
    second = train_round(work / "round2", root, steps, [f"data.captions={captions}"])
    filtered = train_round(work / "round2_filtered", root, steps,
                           [f"data.captions={captions}", f"data.min_alignability={threshold:.6g}"])
    return {"round1 (ASR times)": first, "round2 (re-timed)": second,
            f"round2 (re-timed, drop {drop_fraction:.0%} least alignable)": filtered}


def alignment_table(checkpoint: str, root: str, work_dir: str, radius: float, stride: float, select_videos: int,
                    with_rounds: bool, steps: int, drop_fraction: float) -> Dict:
    root, work = Path(root), Path(work_dir)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: no checkpoint to re-time with; train one first "
                                f"(`milnce train conf/demo.yaml`) or pass --checkpoint")
    ensure_alignment_corpus(root)
    model = load_model(checkpoint)
    base = SearchSettings(radius=radius, stride=stride)
    chosen = choose_smoothing(model, root, select_videos, base)
    smooth = min(chosen, key=chosen.get)
    settings = SearchSettings(radius=radius, stride=stride, smooth=smooth)
    out = work / f"demo_aligned_r{radius:g}_s{stride:g}_m{smooth:g}"
    figures = held_out_figures(root, retime_split(model, root, "htm_align", out, settings))
    result = {"figures": figures, "smoothing_on_train_videos": chosen, "settings": settings.__dict__,
              "checkpoint": str(checkpoint)}
    if with_rounds:
        result["rounds"] = {k: {m: v.get(m) for m in ("youcook2/R10", "youcook2/R1", "htm_align/R1_global",
                                                       "htm_align/R1_window", "htm_align/AUC", "train/steps")}
                            for k, v in rounds(root, work, steps, settings, drop_fraction).items()}
    atomic_write(work / "alignment_table.json", json.dumps(result, indent=1))
    return result


def format_table(result: Dict) -> str:
    f = result["figures"]
    lines = ["| toy held-out split | trust the ASR times | re-timed (`milnce align`) |", "|---|---|---|",
             f"| median \\|time − true time\\| (s) | {f['offset_before_s']:.2f} | {f['offset_after_s']:.2f} |",
             f"| HTM-Align R@1 (%) | {f['r1_asr']:.1f} | {f['r1_aligned']:.1f} |",
             f"| alignability ROC-AUC (step vs filler) | – | {f['auc']:.3f} |"]
    if "rounds" in result:
        lines += ["", "| pretraining round | YouCook2 R@10 | R@1 | HTM-Align R@1 global / window | steps |",
                  "|---|---|---|---|---|"]
        for name, m in result["rounds"].items():
            lines.append(f"| {name} | {m['youcook2/R10']:.1f} | {m['youcook2/R1']:.1f} | "
                         f"{m['htm_align/R1_global']:.1f} / {m['htm_align/R1_window']:.1f} | {m['train/steps']:.0f} |")
    return "\n".join(lines)


def summary_line(result: Dict) -> str:
    f = result["figures"]
    return json.dumps({k: round(f[k], 3) for k in ("offset_before_s", "offset_after_s", "r1_asr", "r1_aligned",
                                                   "auc")})
