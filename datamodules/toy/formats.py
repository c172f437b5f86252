"""Annotation files of the toy corpus, each in its real dataset's own format (PROTOCOLS.md Part B §1.1, §2-4).

HowTo100M: video list, caption.json, one start,end,text CSV per video, HowTo100M_v1.csv, task_ids.csv (tab-separated,
no header). YouCook2: MIL-NCE's validation_youcook.csv (integer seconds) and youcookii_annotations_trainval.json.
MSR-VTT: msrvtt_test.csv (1k-A layout), MSRVTT_data.json, MSRVTT_train.9k.csv. CrossTask: tasks_primary.txt,
videos.csv / videos_val.csv (no header), annotations/<task>_<video>.csv (1-based step, start, end; no header).
HTM-Align (TAN, CVPR 2022): htm_align.json. Test captions are the canonical step sentences; fine-tuning captions
are clean paraphrases without filler.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from datamodules.benchmarks.htm_align import AlignedVideo
from datamodules.benchmarks.htm_align import write_htm_align as write_htm_align_json
from datamodules.toy.story import Segment, Task, canonical_caption, clean_caption, distinct_captions, step_phrase

YOUTUBE = "https://www.youtube.com/watch?v="


def _write_csv(path: Path, header: Sequence[str], rows: List[Sequence]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def integer_segment(seg: Segment, duration: float) -> Tuple[int, int]:
    """A step as YouCook2 gives it: integer seconds, at least one second long, inside the video."""
    last = max(int(duration), 1)
    start = min(int(round(seg.start)), last - 1)
    end = min(max(int(round(seg.end)), start + 1), last)
    return start, end


def write_annotations(root: Path, cfg, tasks: List[Task], plans) -> None:
    by_split: Dict[str, list] = {}
    for p in plans:
        by_split.setdefault(p.split, []).append(p)
    write_howto100m(root, tasks, by_split.get("howto100m", []))
    write_youcook2(root, cfg, by_split.get("youcook2_val", []), by_split.get("youcook2_train", []))
    write_msrvtt(root, cfg, by_split.get("msrvtt_test", []), by_split.get("msrvtt_train", []))
    write_crosstask(root, cfg, tasks, by_split.get("crosstask", []))
    if by_split.get("ucf101"):
        write_ucf101(root, by_split["ucf101"])
    if by_split.get("htm_align"):
        write_htm_align(root, by_split["htm_align"])


def _write_narrations(base: Path, plans) -> None:
    """videos.csv, caption.json and captions/<id>.csv (the HowTo100M layouts) of narrated videos."""
    _write_csv(base / "videos.csv", ["video_path"], [[f"{p.video_id}.mp4"] for p in plans])
    captions = {}
    for p in plans:
        lines = p.timeline.lines
        captions[p.video_id] = {"start": [ln.start for ln in lines], "end": [ln.end for ln in lines],
                                "text": [ln.text for ln in lines]}
        _write_csv(base / "captions" / f"{p.video_id}.csv", ["start", "end", "text"],
                   [[ln.start, ln.end, ln.text] for ln in lines])
    (base / "caption.json").write_text(json.dumps(captions))


def write_howto100m(root: Path, tasks: List[Task], plans) -> None:
    base = root / "howto100m"
    _write_narrations(base, plans)
    rank: Dict[str, int] = {}
    rows = []
    for p in plans:
        rank[p.task.task_id] = rank.get(p.task.task_id, 0) + 1
        rows.append([p.video_id, "Hobbies and Crafts", "Toy Shapes", rank[p.task.task_id], p.task.task_id])
    _write_csv(base / "HowTo100M_v1.csv", ["video_id", "category_1", "category_2", "rank", "task_id"], rows)
    with open(base / "task_ids.csv", "w") as f:
        f.writelines(f"{t.task_id}\t{t.name}\n" for t in tasks)


def write_youcook2(root: Path, cfg, val_plans, train_plans) -> None:
    base = root / "youcook2"
    rows, database, listed = [], {}, set()
    for subset, plans in (("validation", val_plans), ("training", train_plans)):
        for p in plans:
            rng = p.rng(cfg.seed, 2)
            annotations = []
            for i, seg in enumerate(p.timeline.segments):
                start, end = integer_segment(seg, p.timeline.duration)
                if subset == "validation":
                    sentence = canonical_caption([seg])
                    if not (cfg.unique_test_captions and sentence in listed):
                        rows.append([end, start, p.task.task_id, sentence, p.video_id])
                        listed.add(sentence)
                else:
                    sentence = clean_caption([seg], rng)
                annotations.append({"id": i, "segment": [start, end], "sentence": sentence})
            database[p.video_id] = {"annotations": annotations, "duration": p.timeline.duration,
                                   "subset": subset, "recipe_type": p.task.task_id,
                                   "video_url": YOUTUBE + p.video_id}
    _write_csv(base / "validation_youcook.csv", ["end", "start", "task", "text", "video_id"], rows)
    (base / "youcookii_annotations_trainval.json").write_text(json.dumps({"database": database}))


def write_msrvtt(root: Path, cfg, test_plans, train_plans) -> None:
    base = root / "msrvtt"
    videos, sentences, test_rows = [], [], []
    for split, plans in (("train", train_plans), ("test", test_plans)):
        for p in plans:
            number = int(p.video_id[len("video"):])
            rng = p.rng(cfg.seed, 2)
            videos.append({"category": int(rng.integers(20)), "url": f"{YOUTUBE}toy{number:08d}",
                           "video_id": p.video_id, "start time": 0.0, "end time": p.timeline.duration,
                           "split": split, "id": number})
            caps = distinct_captions(p.timeline.segments, rng, cfg.msrvtt_captions_per_video)
            # the test caption is the canonical one (caps[0]); training lists it among the paraphrases
            order = np.arange(len(caps)) if split == "test" else rng.permutation(len(caps))
            for j in order:
                sentences.append({"caption": caps[j], "video_id": p.video_id, "sen_id": len(sentences)})
            if split == "test":
                test_rows.append([f"ret{len(test_rows)}", f"msr{number}", p.video_id, caps[0]])
    base.mkdir(parents=True, exist_ok=True)
    (base / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    _write_csv(base / "msrvtt_test.csv", ["key", "vid_key", "video_id", "sentence"], test_rows)
    _write_csv(base / "MSRVTT_train.9k.csv", ["video_id"], [[p.video_id] for p in train_plans])


def write_crosstask(root: Path, cfg, tasks: List[Task], plans) -> None:
    base = root / "crosstask"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "tasks_primary.txt", "w") as f:
        for t in tasks:
            steps = ",".join(step_phrase(o, a) for o, a in t.steps)
            f.write(f"{t.task_id}\n{t.name}\nhttps://www.wikihow.com/{t.name.replace(' ', '-')}\n"
                    f"{len(t.steps)}\n{steps}\n\n")
    listed = [[p.task.task_id, p.video_id, YOUTUBE + p.video_id] for p in plans]
    _write_csv(base / "videos.csv", [], listed)
    _write_csv(base / "videos_val.csv", [], listed[:cfg.num_crosstask_val_videos])
    for p in plans:
        rows = [[seg.step + 1, f"{seg.start:.2f}", f"{seg.end:.2f}"] for seg in p.timeline.segments]
        _write_csv(base / "annotations" / f"{p.task.task_id}_{p.video_id}.csv", [], rows)


UCF_SPLITS = 3


def action_class(action: str) -> str:
    """The toy's action as a UCF-101 class name (CamelCase folder name): slide -> Slide."""
    return action.capitalize()


def ucf_test_split(group: int) -> int:
    """The split (1..3) in which videos of group g (1-based) are test videos; the other splits train on them."""
    return (group - 1) % UCF_SPLITS + 1


def write_ucf101(root: Path, plans) -> None:
    """ucf101/ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}, as UCF-101 releases them.

    Classes are the toy's actions (classInd order = story.ACTIONS order); the lists name each video
    `<Class>/v_<Class>_gGG_cCC.avi` as the release does (the files themselves are .mp4: the split readers resolve the
    extension). Splits are by group, as in UCF-101: in split k the groups with (g − 1) mod 3 = k − 1 are test.
    """
    base = root / "ucf101" / "ucfTrainTestlist"
    base.mkdir(parents=True, exist_ok=True)
    classes = []
    for p in plans:
        name = action_class(p.timeline.segments[0].action)
        if name not in classes:
            classes.append(name)
    (base / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    for k in range(1, UCF_SPLITS + 1):
        train, test = [], []
        for p in plans:
            name = action_class(p.timeline.segments[0].action)
            group = int(p.video_id.split("_g")[1][:2])
            rel = f"{name}/{p.video_id}.avi"
            (test.append(f"{rel}\n") if ucf_test_split(group) == k else
             train.append(f"{rel} {classes.index(name) + 1}\n"))
        (base / f"trainlist0{k}.txt").write_text("".join(train))
        (base / f"testlist0{k}.txt").write_text("".join(test))


def write_htm_align(root: Path, plans) -> None:
    """htm_align/htm_align.json as TAN releases HTM-Align: {video_id: [[alignable 1/0, start, end, text], …]} in
    narration order; a step line is alignable and carries the segment of the step it describes, a filler line is not
    and keeps its ASR times (as the release keeps them for non-alignable sentences). Beside it the same narrations
    with their ASR times in the HowTo100M layouts (caption.json, captions/<id>.csv, videos.csv): what `milnce align`
    re-times. The true place of each line (its anchor) is in toy/manifest.json."""
    base = root / "htm_align"
    _write_narrations(base, plans)
    annotation = {}
    for p in plans:
        segments, lines = p.timeline.segments, p.timeline.lines
        spans = [(segments[ln.segment].start, segments[ln.segment].end) if ln.segment >= 0 else (ln.start, ln.end)
                 for ln in lines]
        annotation[p.video_id] = AlignedVideo(p.video_id, np.array([ln.segment >= 0 for ln in lines], bool),
                                              np.array([s for s, _ in spans], np.float64),
                                              np.array([e for _, e in spans], np.float64), [ln.text for ln in lines])
    write_htm_align_json(base / "htm_align.json", annotation)
