"""UCF-101 split files as released (ucfTrainTestlist/): classInd.txt, trainlist0N.txt, testlist0N.txt.

- classInd.txt: `<index> <ClassName>` per line, index 1..101 in order;
- trainlist0N.txt: `<ClassName>/v_<ClassName>_gGG_cCC.avi <index>` (the label is given, and must agree with the
  class folder);
- testlist0N.txt: `<ClassName>/v_<ClassName>_gGG_cCC.avi` (the label is the class folder's index).

`read_ucf101_split(split_dir, split)` → ActionSplit with 0-based labels. Every malformed line is a SplitFileError
naming file:line; a video listed in both lists of a split is an error too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from datamodules.benchmarks.action_split import ActionSplit, SplitFileError, read_lines


def read_class_index(path: Path) -> List[str]:
    """classInd.txt → class names in index order (index 1 first)."""
    classes: Dict[int, str] = {}
    for n, line in read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SplitFileError(path, n, f"expected '<index> <ClassName>', got {line!r}")
        index, name = int(parts[0]), parts[1]
        if index in classes or name in classes.values():
            raise SplitFileError(path, n, f"class {index} {name!r} listed twice")
        classes[index] = name
    if not classes:
        raise SplitFileError(path, None, "no classes")
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise SplitFileError(path, None, f"class indices must be 1..{len(classes)} without gaps")
    return [classes[i] for i in range(1, len(classes) + 1)]


def _class_of(path: Path, n: int, rel: str, lookup: Dict[str, int]) -> int:
    folder = rel.split("/")[0] if "/" in rel else None
    if folder is None or folder not in lookup:
        raise SplitFileError(path, n, f"video {rel!r} is not under a class folder of classInd.txt")
    return lookup[folder]


def read_list(path: Path, classes: List[str], labelled: bool) -> List[Tuple[str, int]]:
    lookup = {name: i for i, name in enumerate(classes)}
    rows: List[Tuple[str, int]] = []
    seen = set()
    for n, line in read_lines(path):
        parts = line.split()
        if labelled:
            if len(parts) != 2 or not parts[1].isdigit():
                raise SplitFileError(path, n, f"expected '<Class>/<video> <class index>', got {line!r}")
            label = int(parts[1]) - 1
            if not 0 <= label < len(classes):
                raise SplitFileError(path, n, f"class index {parts[1]} outside 1..{len(classes)}")
            if _class_of(path, n, parts[0], lookup) != label:
                raise SplitFileError(path, n, f"label {parts[1]} ({classes[label]}) disagrees with the folder of "
                                              f"{parts[0]!r}")
        else:
            if len(parts) != 1:
                raise SplitFileError(path, n, f"expected '<Class>/<video>', got {line!r}")
            label = _class_of(path, n, parts[0], lookup)
        if parts[0] in seen:
            raise SplitFileError(path, n, f"video {parts[0]!r} listed twice")
        seen.add(parts[0])
        rows.append((parts[0], label))
    if not rows:
        raise SplitFileError(path, None, "no videos")
    return rows


def read_ucf101_split(split_dir, split: int = 1) -> ActionSplit:
    split_dir = Path(split_dir)
    if split not in (1, 2, 3):
        raise ValueError(f"UCF-101 split must be 1, 2 or 3, got {split}")
    class_file = split_dir / "classInd.txt"
    train_file, test_file = split_dir / f"trainlist0{split}.txt", split_dir / f"testlist0{split}.txt"
    classes = read_class_index(class_file)
    train = read_list(train_file, classes, labelled=True)
    test = read_list(test_file, classes, labelled=False)
    both = {rel for rel, _ in train} & {rel for rel, _ in test}
    if both:
        raise SplitFileError(test_file, None, f"{len(both)} videos are also in {train_file.name}, e.g. "
                                              f"{sorted(both)[0]!r}")
    return ActionSplit("ucf101", split, classes, train, test, [str(class_file), str(train_file), str(test_file)])
