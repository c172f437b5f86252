"""HMDB-51 split files as released (testTrainMulti_7030_splits/): one `<class>_test_split<N>.txt` per class and split.

Each line is `<video>.avi <mark>`, mark 1 = train, 2 = test, 0 = not used in that split (70 / 30 videos per class).
The class is the file name's prefix; the video lives in `<class>/<video>.avi`. Classes are sorted by name (the
order the released file list gives them). `read_hmdb51_split(split_dir, split)` → ActionSplit with 0-based labels;
a malformed line is a SplitFileError naming file:line.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

from datamodules.benchmarks.action_split import ActionSplit, SplitFileError, read_lines

MARKS = {"0": None, "1": "train", "2": "test"}


def split_files(split_dir: Path, split: int) -> List[Tuple[str, Path]]:
    pattern = re.compile(rf"^(.+)_test_split{split}\.txt$")
    found = []
    for path in sorted(Path(split_dir).iterdir()) if Path(split_dir).is_dir() else []:
        m = pattern.match(path.name)
        if m:
            found.append((m.group(1), path))
    if not found:
        raise SplitFileError(split_dir, None, f"no <class>_test_split{split}.txt files")
    return found


def read_hmdb51_split(split_dir, split: int = 1) -> ActionSplit:
    if split not in (1, 2, 3):
        raise ValueError(f"HMDB-51 split must be 1, 2 or 3, got {split}")
    files = split_files(Path(split_dir), split)
    classes = [name for name, _ in files]
    out = ActionSplit("hmdb51", split, classes, sources=[str(p) for _, p in files])
    for label, (name, path) in enumerate(files):
        seen = set()
        for n, line in read_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in MARKS:
                raise SplitFileError(path, n, f"expected '<video>.avi <0|1|2>', got {line!r}")
            if parts[0] in seen:
                raise SplitFileError(path, n, f"video {parts[0]!r} listed twice")
            seen.add(parts[0])
            side = MARKS[parts[1]]
            if side is not None:
                getattr(out, side).append((f"{name}/{parts[0]}", label))
        if not seen:
            raise SplitFileError(path, None, "no videos")
    return out
