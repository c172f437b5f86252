"""What an action-recognition split is made of: the class list and (video, class) pairs for train and test.

The UCF-101 (datamodules/benchmarks/ucf101.py) and HMDB-51 (datamodules/benchmarks/hmdb51.py) readers return an
`ActionSplit`; the linear probe (milnce.eval.probe) consumes it. Paths are as the split files give them, relative to the
dataset's video folder (`Class/v_Class_g01_c01.avi`); `resolve` finds the file on disk, trying the other usual
extensions when the listed one is absent (a re-encoded copy: .mp4 for .avi).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")


class SplitFileError(ValueError):
    """A split file that does not follow the released format; the message names the file and the line."""

    def __init__(self, path, line: Optional[int], message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path, self.line = str(path), line


@dataclass
class ActionSplit:
    dataset: str                       # ucf101 | hmdb51
    split: int                         # 1, 2 or 3
    classes: List[str]                 # class index i -> name (0-based here; classInd.txt is 1-based)
    train: List[Tuple[str, int]] = field(default_factory=list)   # (relative video path, 0-based class)
    test: List[Tuple[str, int]] = field(default_factory=list)
    sources: List[str] = field(default_factory=list)              # the files read

    def resolve(self, video_root: str | Path, rel: str) -> Optional[Path]:
        path = Path(video_root) / rel
        if path.is_file():
            return path
        for ext in VIDEO_EXTENSIONS:
            other = path.with_suffix(ext)
            if other.is_file():
                return other
        return None

    def summary(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "num_classes": len(self.classes),
                "num_train": len(self.train), "num_test": len(self.test), "sources": list(self.sources)}


def read_lines(path: Path) -> List[Tuple[int, str]]:
    """(1-based line number, stripped text) of every non-blank line; a missing file is a SplitFileError."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as err:
        raise SplitFileError(path, None, f"cannot read the split file ({err.strerror or err})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
