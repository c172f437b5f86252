"""The CrossTask release readers and the VideoCLIP seed-0 split (PROTOCOLS Part B §1.1, 1.2, 1.7)."""
import numpy as np
import pytest

from datamodules.benchmarks.crosstask import (CrossTaskRelease, index_videos, random_split, read_assignment, read_task_info,
                                   read_video_list)

TASKS = ("23521\nMake Jello Shots\nhttp://www.wikihow.com/Make-Jello-Shots\n3\n"
         "pour water,pour jello powder, stir mixture\n\n"
         "16815\nJack Up a Car\nhttp://www.wikihow.com/Jack-Up-a-Car\n2\njack up,lower car\n\n")


def test_task_blocks_split_steps_on_comma_without_stripping(tmp_path):
    p = tmp_path / "tasks_primary.txt"
    p.write_text(TASKS)
    tasks = read_task_info(p)
    assert list(tasks) == ["23521", "16815"]
    t = tasks["23521"]
    assert t.title == "Make Jello Shots" and t.n_steps == 3
    assert t.steps == ("pour water", "pour jello powder", " stir mixture")   # as the original parser
    assert tasks["16815"].steps == ("jack up", "lower car")


@pytest.mark.parametrize("text,where", [
    ("1\nT\nu\nthree\na,b,c\n\n", ":4:"),            # K not an integer
    ("1\nT\nu\n2\na,b,c\n\n", ":5:"),                # K disagrees with the steps line
    ("1\nT\nu\n2\n", ":1:"),                         # truncated block
    ("1\nT\nu\n1\na\nnot blank\n", ":6:"),           # block separator missing
])
def test_malformed_task_file_names_the_line(tmp_path, text, where):
    p = tmp_path / "tasks_primary.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=str(p).replace("\\", "\\\\") + where):
        read_task_info(p)


def test_video_lists_keep_first_appearance_order(tmp_path):
    p = tmp_path / "videos.csv"
    p.write_text("2,b,u\n1,a,u\n2,c,u\n\n")
    assert read_video_list(p) == {"2": ["b", "c"], "1": ["a"]}
    assert list(read_video_list(p)) == ["2", "1"]
    p.write_text("2,b\n")
    with pytest.raises(ValueError, match="videos.csv:1"):
        read_video_list(p)


def test_assignment_floor_ceil_and_numpy_clipping(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("1,1.2,2.7\n2,4.0,5.0\n3,5.5,99\n")
    y = read_assignment(p, 7, 3)
    assert y.dtype == np.uint8 and y.shape == (7, 3)
    assert y[:, 0].nonzero()[0].tolist() == [1, 2]
    assert y[:, 1].nonzero()[0].tolist() == [4]           # an integer end is excluded
    assert y[:, 2].nonzero()[0].tolist() == [5, 6]        # past T: clipped silently, like numpy slicing
    p.write_text("1,0,1\n4,1,2\n")
    with pytest.raises(ValueError, match="a.csv:2: step 4 outside 1..3"):
        read_assignment(p, 7, 3)
    p.write_text("1,zero,1\n")
    with pytest.raises(ValueError, match="a.csv:1"):
        read_assignment(p, 7, 3)


def test_split_equals_seeded_global_numpy_draws():
    task_vids = {"r": [f"r{i}" for i in range(50)],          # related task: never split, consumes no draws
                 "a": [f"a{i}" for i in range(45)], "b": [f"b{i}" for i in range(30)],
                 "c": [f"c{i}" for i in range(31)]}
    train, test = random_split(task_vids, {"a", "b", "c"}, 30, seed=0)
    np.random.seed(0)                                       # the VideoCLIP procedure, literally
    ref_a = np.random.choice(task_vids["a"], 30, replace=False).tolist()
    ref_c = np.random.choice(task_vids["c"], 30, replace=False).tolist()
    assert train["a"] == ref_a and train["c"] == ref_c
    assert test["a"] == [v for v in task_vids["a"] if v not in ref_a] and len(test["a"]) == 15
    assert len(test["c"]) == 1
    assert "b" not in test and train["b"] == task_vids["b"]      # exactly 30: all training, none to test
    assert train["r"] == task_vids["r"] and "r" not in test
    assert random_split(task_vids, {"a", "b", "c"}, 30, seed=1)[0]["a"] != ref_a


def make_release(tmp_path, n_a=6, n_b=3):
    root = tmp_path / "crosstask"
    (root / "annotations").mkdir(parents=True)
    (root / "videos" / "sub").mkdir(parents=True)
    (root / "tasks_primary.txt").write_text(TASKS)
    lines = [f"23521,a{i},http://y/a{i}" for i in range(n_a)] + [f"16815,b{i},http://y/b{i}" for i in range(n_b)]
    lines.append("99999,rel0,http://y/rel0")                   # related task: no annotation
    (root / "videos.csv").write_text("\n".join(lines) + "\n")
    (root / "videos_val.csv").write_text("23521,a0,http://y/a0\n")
    for i in range(n_a):
        (root / "annotations" / f"23521_a{i}.csv").write_text("1,0,2\n3,4.5,6\n")
        if i != 5:                                             # a5: annotated but not downloaded
            (root / "videos" / f"a{i}.mp4").write_bytes(b"")
    for i in range(n_b):
        (root / "annotations" / f"16815_b{i}.csv").write_text("2,1,3\n")
        (root / "videos" / "sub" / f"b{i}.webm").write_bytes(b"")
    (root / "videos" / "b0.mkv").write_bytes(b"")              # mkv beats webm
    (root / "videos" / "rel0.mp4").write_bytes(b"")
    return root


def test_index_videos_finds_nested_files_in_extension_order(tmp_path):
    root = make_release(tmp_path)
    idx = index_videos(root / "videos")
    assert idx["b0"].endswith("b0.mkv") and idx["b1"].endswith("sub/b1.webm") and idx["a1"].endswith("a1.mp4")


def test_release_split_counts_val_and_missing(tmp_path):
    root = make_release(tmp_path)
    rel = CrossTaskRelease(root)
    videos, info = rel.evaluation_videos(use_split=True, n_train=2, seed=0)
    # task 23521: a1..a4 available (a0 is val, a5 missing) → 2 train + 2 test; 16815: b0..b2 → 2 train + 1 test
    assert info["per_task"]["23521"] == {"available": 4, "train": 2, "test": 2}
    assert info["per_task"]["16815"] == {"available": 3, "train": 2, "test": 1}
    assert info["val_excluded"] == 1
    assert info["missing"] == [("23521", "a5")]
    assert len(videos) == 3 and all(v.path for v in videos)
    assert {v.task_id for v in videos} == {"23521", "16815"}
    assert "a0" not in {v.video_id for v in videos}
    np.random.seed(0)
    train_a = np.random.choice(["a1", "a2", "a3", "a4"], 2, replace=False).tolist()
    assert [v.video_id for v in videos if v.task_id == "23521"] == [v for v in ["a1", "a2", "a3", "a4"]
                                                                    if v not in train_a]
    all_videos, info = rel.evaluation_videos(use_split=False)
    assert len(all_videos) == 7 and info["per_task"]["23521"]["test"] == 4
