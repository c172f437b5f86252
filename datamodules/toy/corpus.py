"""The synthetic narrated-video corpus: real H.264 videos plus annotations in the real datasets' own layouts.

    make_toy_corpus(root, ToyCorpusConfig(seed=0)) writes under root:
      videos/<id>.mp4, howto100m/{videos.csv, caption.json, captions/<id>.csv, HowTo100M_v1.csv, task_ids.csv}
      youcook2/{validation_youcook.csv, youcookii_annotations_trainval.json, validation|training/<task>/<id>.mp4}
      msrvtt/{msrvtt_test.csv, MSRVTT_data.json, MSRVTT_train.9k.csv, videos/<video_id>.mp4}
      crosstask/{tasks_primary.txt, videos.csv, videos_val.csv, annotations/<task>_<video>.csv, videos/<id>.mp4}
      toy/manifest.json   seed, config, counts, vocabulary, per-video ground-truth step segments, file sizes

What is in the videos and what the narrator says is in toy_script.py; the pixels are in toy_render.py; the
annotation formats are in toy_formats.py. Everything is a function of the seed: each video draws from its own
generator seeded by (seed, split, index), so changing one split's count leaves every other video unchanged.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import string
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
from tqdm.auto import tqdm

from datamodules.toy.formats import action_class, write_annotations
from datamodules.toy.render import Mp4Writer, SpriteBank, make_scene, render_frames
from datamodules.toy.story import (ACTIONS, COLOURS, OFFSET_DISTRIBUTIONS, SHAPES, Task, Timeline, action_timeline,
                                   clip_timeline, make_tasks, narrate, palette, step_phrase, step_sentence,
                                   task_timeline)
from datamodules.atomic import atomic_dir

MANIFEST = "toy/manifest.json"
MSRVTT_TEST_FIRST_ID = 7020
FORMAT_VERSION = 2
# split -> (code for seeding, folder of its videos); youcook2 folders get /<task>/ appended
SPLITS = {"howto100m": (1, "videos"), "youcook2_val": (2, "youcook2/validation"),
          "youcook2_train": (3, "youcook2/training"), "crosstask": (4, "crosstask/videos"),
          "msrvtt_test": (5, "msrvtt/videos"), "msrvtt_train": (6, "msrvtt/videos"),
          "ucf101": (7, "ucf101/UCF-101"), "htm_align": (8, "htm_align/videos")}
UCF_CLIPS_PER_GROUP = 2                  # toy UCF-101: clips c01, c02 of each group gGG
# fields left out of the manifest while they are at their default, so the default corpus stays byte-identical
OMIT_AT_DEFAULT = {"num_action_videos_per_class": 0, "num_align_videos": 0, "offset_distribution": "uniform"}


@dataclass
class ToyCorpusConfig:
    seed: int = 0
    # counts per split (held-out splits never share videos with the pretraining corpus)
    num_train_videos: int = 160          # HowTo100M-style narrated pretraining videos
    num_youcook_videos: int = 30         # YouCook2-style validation videos (one clip per step: ~5 per video)
    num_youcook_train_videos: int = 24   # YouCook2-style fine-tuning videos (clean captions)
    num_msrvtt_clips: int = 100          # MSR-VTT-style test clips (one or two steps each)
    num_msrvtt_train_clips: int = 120    # MSR-VTT-style fine-tuning clips, 20 clean captions each
    num_crosstask_videos: int = 24       # CrossTask-style annotated videos
    num_crosstask_val_videos: int = 2    # of those, listed in videos_val.csv
    num_action_videos_per_class: int = 0 # UCF-101-style action split (ucf101/): clips per action class, 0 = none
    num_align_videos: int = 0            # HTM-Align-style held-out narrated videos (htm_align/), 0 = none
    # content
    num_colours: int = 4                 # palette: the first N colours and shapes of toy_script's lists
    num_shapes: int = 4
    num_tasks: int = 8
    steps_per_task: Tuple[int, int] = (4, 7)
    min_steps: int = 3                   # a video keeps at least this many of its task's steps
    skip_prob: float = 0.15              # a video skips each step with this probability
    repeat_prob: float = 0.05            # ... or does it twice
    step_duration: Tuple[float, float] = (3.0, 7.0)
    gap: Tuple[float, float] = (1.0, 6.0)
    intro: Tuple[float, float] = (1.0, 6.0)
    outro: Tuple[float, float] = (1.0, 5.0)
    duration_range: Tuple[float, float] = (20.0, 90.0)
    distractor_prob: float = 0.4         # a second, idle object on screen during a step
    idle_prob: float = 0.5               # the object stays on screen, at rest, after its step
    seconds_per_cut: float = 45.0        # mean seconds between background changes (0 = none)
    msrvtt_two_step_prob: float = 0.4
    msrvtt_captions_per_video: int = 20
    unique_test_captions: bool = False   # validation_youcook.csv keeps one clip per sentence (the first in video
                                         # order), as MSR-VTT 1k-A has one caption per clip: a perfect model can
                                         # then reach R@1 100 (with repeated sentences it cannot)
    # narration
    narration_offset: float = 3.0        # scale of the shift of a step line's centre from its anchor, seconds
    offset_distribution: str = "uniform" # story.narration_shift: uniform U(-o, o) | normal | laplace | lag
    line_duration: Tuple[float, float] = (2.0, 4.0)
    second_line_prob: float = 0.3        # steps of >= 5 s get a second line with this probability
    filler_fraction: float = 0.4         # fraction of narration lines unrelated to the video
    partial_prob: float = 0.1            # step lines that name only the object or only the action
    canonical_word_prob: float = 0.5     # a synonym slot uses the canonical word with this probability
    # video format
    width: int = 160
    height: int = 120
    fps: float = 10.0
    object_radius: float = 0.15          # fraction of the frame height
    qp: int = 22                         # x264 constant quantiser
    preset: str = "ultrafast"

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        for name in ("steps_per_task", "step_duration", "gap", "intro", "outro", "duration_range", "line_duration"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"ToyCorpusConfig.{name}: need 0 <= low <= high, got {(lo, hi)}")
        if not 0.0 <= self.filler_fraction < 1.0:
            raise ValueError(f"ToyCorpusConfig.filler_fraction: need 0 <= f < 1, got {self.filler_fraction}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 16:
            raise ValueError(f"ToyCorpusConfig: width/height must be even and >= 16, got {self.width}x{self.height}")
        palette(self)  # checks num_colours / num_shapes
        if self.offset_distribution not in OFFSET_DISTRIBUTIONS:
            raise ValueError(f"ToyCorpusConfig.offset_distribution: unknown '{self.offset_distribution}' "
                             f"(valid: {', '.join(OFFSET_DISTRIBUTIONS)})")
        if self.narration_offset < 0:
            raise ValueError(f"ToyCorpusConfig.narration_offset must be >= 0, got {self.narration_offset}")
        if self.steps_per_task[0] < 1 or self.num_tasks < 1:
            raise ValueError("ToyCorpusConfig: need num_tasks >= 1 and steps_per_task low >= 1")
        if self.num_crosstask_val_videos > self.num_crosstask_videos:
            raise ValueError("ToyCorpusConfig.num_crosstask_val_videos exceeds num_crosstask_videos")
        if 0 < self.num_action_videos_per_class < 3 * UCF_CLIPS_PER_GROUP:
            raise ValueError(f"ToyCorpusConfig.num_action_videos_per_class: need 0 or >= {3 * UCF_CLIPS_PER_GROUP} "
                             f"(three splits of {UCF_CLIPS_PER_GROUP}-clip groups), got "
                             f"{self.num_action_videos_per_class}")
        for f in fields(self):
            if f.name.startswith("num_") and getattr(self, f.name) < 0:
                raise ValueError(f"ToyCorpusConfig.{f.name} must be >= 0")

    @classmethod
    def small(cls, **overrides) -> "ToyCorpusConfig":
        """A few short videos per split (tests, smoke runs)."""
        base = dict(num_train_videos=8, num_youcook_videos=3, num_youcook_train_videos=2, num_msrvtt_clips=6,
                    num_msrvtt_train_clips=4, num_crosstask_videos=4, num_crosstask_val_videos=1, num_tasks=6,
                    duration_range=(20.0, 30.0))
        base.update(overrides)
        return cls(**base)

    def counts(self) -> Dict[str, int]:
        return {"howto100m": self.num_train_videos, "youcook2_val": self.num_youcook_videos,
                "youcook2_train": self.num_youcook_train_videos, "crosstask": self.num_crosstask_videos,
                "msrvtt_test": self.num_msrvtt_clips, "msrvtt_train": self.num_msrvtt_train_clips}


@dataclass
class VideoPlan:
    split: str
    index: int
    video_id: str
    task: Optional[Task]
    timeline: Timeline
    path: str               # relative to the corpus root

    def rng(self, seed: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([seed, SPLITS[self.split][0], self.index, stream])


_ID_CHARS = np.array(list(string.ascii_letters + string.digits))


def _youtube_like_id(rng: np.random.Generator) -> str:
    return "".join(_ID_CHARS[rng.integers(len(_ID_CHARS), size=11)])


def plan_corpus(cfg: ToyCorpusConfig) -> Tuple[List[Task], List[VideoPlan]]:
    """Tasks and every video's timeline and narration, without rendering (fast; tests and tools use it)."""
    tasks = make_tasks(np.random.default_rng([cfg.seed, 0]), cfg.num_tasks, cfg.steps_per_task, palette(cfg))
    plans: List[VideoPlan] = []
    # MSR-VTT numbering: training clips video0.., test clips from video7020 (where the real 1k-A test ids start)
    msrvtt_number = {"msrvtt_train": 0, "msrvtt_test": MSRVTT_TEST_FIRST_ID}
    if cfg.num_msrvtt_train_clips > MSRVTT_TEST_FIRST_ID:
        raise ValueError(f"ToyCorpusConfig.num_msrvtt_train_clips must be <= {MSRVTT_TEST_FIRST_ID}")
    for split, count in cfg.counts().items():
        code, folder = SPLITS[split]
        for i in range(count):
            rng = np.random.default_rng([cfg.seed, code, i, 0])
            if split.startswith("msrvtt"):
                video_id, task = f"video{msrvtt_number[split] + i}", None
                timeline = clip_timeline(rng, cfg)
            else:
                video_id = _youtube_like_id(rng)
                task = tasks[(i + code) % len(tasks)]
                timeline = task_timeline(task, rng, cfg)
                if split == "howto100m":
                    timeline.lines = narrate(timeline, rng, cfg)
            sub = f"{folder}/{task.task_id}" if split.startswith("youcook2") else folder
            plans.append(VideoPlan(split, i, video_id, task, timeline, f"{sub}/{video_id}.mp4"))
    plans += plan_action_split(cfg)
    plans += plan_align_split(cfg, tasks)
    ids = [p.video_id for p in plans]
    if len(set(ids)) != len(ids):
        raise RuntimeError("toy corpus: video id collision; choose another seed")
    return tasks, plans


def plan_action_split(cfg: ToyCorpusConfig) -> List[VideoPlan]:
    """The UCF-101-style split: num_action_videos_per_class clips of each action, v_<Class>_gGG_cCC (2 per group)."""
    code, folder = SPLITS["ucf101"]
    plans = []
    n = cfg.num_action_videos_per_class
    for ci, action in enumerate(ACTIONS):
        for j in range(n):
            index = ci * n + j
            rng = np.random.default_rng([cfg.seed, code, index, 0])
            name = action_class(action)
            video_id = f"v_{name}_g{j // UCF_CLIPS_PER_GROUP + 1:02d}_c{j % UCF_CLIPS_PER_GROUP + 1:02d}"
            plans.append(VideoPlan("ucf101", index, video_id, None, action_timeline(action, rng, cfg),
                                   f"{folder}/{name}/{video_id}.mp4"))
    return plans


def plan_align_split(cfg: ToyCorpusConfig, tasks: List[Task]) -> List[VideoPlan]:
    """The HTM-Align-style split: held-out narrated task videos (never in the pretraining corpus) whose narration's
    true places are known; formats.write_htm_align writes their annotation and ASR captions."""
    code, folder = SPLITS["htm_align"]
    plans = []
    for i in range(cfg.num_align_videos):
        rng = np.random.default_rng([cfg.seed, code, i, 0])
        video_id = _youtube_like_id(rng)
        task = tasks[(i + code) % len(tasks)]
        timeline = task_timeline(task, rng, cfg)
        timeline.lines = narrate(timeline, rng, cfg)
        plans.append(VideoPlan("htm_align", i, video_id, task, timeline, f"{folder}/{video_id}.mp4"))
    return plans


def manifest_config(cfg: ToyCorpusConfig) -> Dict[str, Any]:
    """asdict(cfg) without the fields of OMIT_AT_DEFAULT that are at their default (old corpora stay valid)."""
    out = asdict(cfg)
    for name, default in OMIT_AT_DEFAULT.items():
        if out.get(name) == default:
            out.pop(name)
    return out


def render_video(plan: VideoPlan, cfg: ToyCorpusConfig, path: Path, bank: SpriteBank, progress=None) -> int:
    cast = sorted({obj for obj, _ in plan.task.steps}) if plan.task else None
    scene = make_scene(plan.timeline, plan.rng(cfg.seed, 1), cfg.width, cfg.height, cfg, cast=cast)
    n = 0
    with Mp4Writer(path, cfg.width, cfg.height, cfg.fps, preset=cfg.preset, qp=cfg.qp) as writer:
        for frame in render_frames(scene, plan.timeline.duration, cfg.width, cfg.height, cfg.fps, bank):
            writer.write(frame)
            n += 1
            if progress is not None:
                progress.update(1)
    return n


_WORKER_BANK: Dict[float, SpriteBank] = {}


def _render_job(job: Tuple[VideoPlan, ToyCorpusConfig, Path]) -> Tuple[str, int]:
    plan, cfg, path = job
    radius = cfg.object_radius * cfg.height
    bank = _WORKER_BANK.setdefault(radius, SpriteBank(radius))
    return plan.video_id, render_video(plan, cfg, path, bank)


def _render_all(plans: List[VideoPlan], cfg: ToyCorpusConfig, out: Path, workers: int, progress: bool) -> Dict[str, int]:
    for plan in plans:
        (out / plan.path).parent.mkdir(parents=True, exist_ok=True)
    total = sum(int(round(p.timeline.duration * cfg.fps)) for p in plans)
    num_frames: Dict[str, int] = {}
    with tqdm(total=total, unit="frame", desc="rendering toy corpus", disable=not progress) as bar:
        if workers <= 1:
            bank = SpriteBank(cfg.object_radius * cfg.height)
            for plan in plans:
                bar.set_postfix_str(f"{plan.split} {plan.video_id}", refresh=False)
                num_frames[plan.video_id] = render_video(plan, cfg, out / plan.path, bank, bar)
        else:
            # spawn, not fork: the caller may hold torch threads; videos are independent, so order is irrelevant
            jobs = sorted(((p, cfg, out / p.path) for p in plans), key=lambda j: -j[0].timeline.duration)
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for video_id, n in pool.imap_unordered(_render_job, jobs):
                    num_frames[video_id] = n
                    bar.update(n)
    return num_frames


def make_toy_corpus(root: Union[str, Path], cfg: Optional[ToyCorpusConfig] = None, progress: bool = True,
                    workers: Optional[int] = None) -> Dict[str, Any]:
    """Render the corpus into a temporary folder next to `root`, then move it into place in one rename.

    An existing corpus at root (one with toy/manifest.json) is replaced; any other non-empty folder is left alone
    and is an error. `workers` rendering processes (default: up to 4 CPU cores for a corpus of more than 20 videos);
    the output is the same for any number of workers.
    """

    cfg = cfg or ToyCorpusConfig()
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise FileExistsError(f"{root} exists, is not empty and holds no {MANIFEST}: refusing to overwrite it")
    t0 = time.perf_counter()
    with atomic_dir(root) as tmp:
        tasks, plans = plan_corpus(cfg)
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if len(plans) > 20 else 1
        num_frames = _render_all(plans, cfg, tmp, workers, progress)
        write_annotations(tmp, cfg, tasks, plans)
        manifest = build_manifest(tmp, cfg, tasks, plans, num_frames, time.perf_counter() - t0)
        manifest["render_workers"] = workers
        (tmp / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def build_manifest(root: Path, cfg: ToyCorpusConfig, tasks: List[Task], plans: List[VideoPlan],
                   num_frames: Dict[str, int], seconds: float) -> Dict[str, Any]:

    videos = {}
    for p in plans:
        entry = {"split": p.split, "path": p.path, "task_id": p.task.task_id if p.task else None,
                 "duration": p.timeline.duration, "num_frames": num_frames[p.video_id],
                 "steps": [{"step": s.step, "object": s.object, "action": s.action, "start": s.start, "end": s.end}
                           for s in p.timeline.segments]}
        if p.timeline.lines:
            entry["narrations"] = [{"start": ln.start, "end": ln.end, "segment": ln.segment, "anchor": ln.anchor}
                                   for ln in p.timeline.lines]
        videos[p.video_id] = entry
    files = sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())
    return {
        "format_version": FORMAT_VERSION,
        "seed": cfg.seed,
        "config": manifest_config(cfg),
        "counts": {**cfg.counts(), **({"ucf101": sum(p.split == "ucf101" for p in plans)}
                                      if cfg.num_action_videos_per_class else {}),
                   **({"htm_align": cfg.num_align_videos} if cfg.num_align_videos else {}),
                   "tasks": len(tasks), "frames": sum(num_frames.values()),
                   "seconds_of_video": round(sum(p.timeline.duration for p in plans), 1)},
        "render_seconds": round(seconds, 1),
        "vocabulary": {
            "colours": {c: list(v[0]) for c, v in list(COLOURS.items())[:cfg.num_colours]},
            "shapes": {s: list(v) for s, v in list(SHAPES.items())[:cfg.num_shapes]},
            "actions": {a: [list(f) for f in v] for a, v in ACTIONS.items()},
            "objects": palette(cfg),
            "tasks": [{"task_id": t.task_id, "name": t.name,
                       "steps": [{"object": o, "action": a, "phrase": step_phrase(o, a),
                                  "sentence": step_sentence(o, a)} for o, a in t.steps]} for t in tasks],
        },
        "videos": videos,
        "files": {f: (root / f).stat().st_size for f in files},
    }


def load_manifest(root: Union[str, Path]) -> Dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{path}: cannot read the toy corpus manifest ({err})") from err


def toy_corpus_exists(root: Union[str, Path], cfg: Optional[ToyCorpusConfig] = None) -> bool:
    """True when root holds a complete corpus: a readable manifest and every file it lists, at its size.

    With `cfg`, the corpus must also have been generated with exactly that config.
    """
    root = Path(root)
    try:
        manifest = load_manifest(root)
    except FileNotFoundError:
        return False
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
        return False
    if cfg is not None and manifest.get("config") != json.loads(json.dumps(manifest_config(cfg))):
        return False
    for rel, size in manifest["files"].items():
        try:
            if (root / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True
