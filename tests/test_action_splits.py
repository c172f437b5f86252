"""UCF-101 / HMDB-51 split readers on small files in the released formats, including malformed lines."""
import pytest

from datamodules.benchmarks.action_split import SplitFileError
from datamodules.benchmarks.hmdb51 import read_hmdb51_split
from datamodules.benchmarks.ucf101 import read_ucf101_split


def _ucf(tmp_path, train=None, test=None, classes="1 ApplyEyeMakeup\n2 Archery\n"):
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    (d / "classInd.txt").write_text(classes)
    (d / "trainlist01.txt").write_text(train if train is not None else
                                       "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                       "Archery/v_Archery_g08_c01.avi 2\r\n")
    (d / "testlist01.txt").write_text(test if test is not None else
                                      "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n"
                                      "Archery/v_Archery_g01_c01.avi\n\n")
    return d


def test_ucf101_reads_the_released_format(tmp_path):
    s = read_ucf101_split(_ucf(tmp_path), 1)
    assert s.classes == ["ApplyEyeMakeup", "Archery"]
    assert s.train == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0), ("Archery/v_Archery_g08_c01.avi", 1)]
    assert s.test == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0), ("Archery/v_Archery_g01_c01.avi", 1)]
    assert s.summary()["num_test"] == 2


@pytest.mark.parametrize("kw, where, what", [
    (dict(classes="1 ApplyEyeMakeup\nArchery\n"), "classInd.txt:2", "<index> <ClassName>"),
    (dict(classes="1 ApplyEyeMakeup\n3 Archery\n"), "classInd.txt", "without gaps"),
    (dict(train="ApplyEyeMakeup/a.avi 1\nArchery/b.avi x\n"), "trainlist01.txt:2", "class index"),
    (dict(train="ApplyEyeMakeup/a.avi 1\nArchery/b.avi 1\n"), "trainlist01.txt:2", "disagrees"),
    (dict(train="ApplyEyeMakeup/a.avi 3\n"), "trainlist01.txt:1", "outside 1..2"),
    (dict(test="ApplyEyeMakeup/a.avi\nDancing/b.avi\n"), "testlist01.txt:2", "class folder"),
    (dict(test="ApplyEyeMakeup/a.avi 1\n"), "testlist01.txt:1", "expected"),
    (dict(test="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n"), "testlist01.txt", "also in trainlist01"),
])
def test_ucf101_malformed_lines_name_file_and_line(tmp_path, kw, where, what):
    with pytest.raises(SplitFileError, match=what) as err:
        read_ucf101_split(_ucf(tmp_path, **kw), 1)
    assert where in str(err.value)


def test_ucf101_missing_list_is_an_error_naming_it(tmp_path):
    d = _ucf(tmp_path)
    with pytest.raises(SplitFileError, match="trainlist02.txt"):
        read_ucf101_split(d, 2)
    with pytest.raises(ValueError, match="1, 2 or 3"):
        read_ucf101_split(d, 4)


def _hmdb(tmp_path, brush="a.avi 1\nb.avi 2\nc.avi 0\n"):
    d = tmp_path / "testTrainMulti_7030_splits"
    d.mkdir()
    (d / "brush_hair_test_split1.txt").write_text(brush)
    (d / "cartwheel_test_split1.txt").write_text("d.avi 2 \ne.avi 1 \n")
    (d / "cartwheel_test_split2.txt").write_text("d.avi 1\ne.avi 2\n")
    return d


def test_hmdb51_reads_the_released_format(tmp_path):
    s = read_hmdb51_split(_hmdb(tmp_path), 1)
    assert s.classes == ["brush_hair", "cartwheel"]
    assert s.train == [("brush_hair/a.avi", 0), ("cartwheel/e.avi", 1)]
    assert s.test == [("brush_hair/b.avi", 0), ("cartwheel/d.avi", 1)]
    assert read_hmdb51_split(tmp_path / "testTrainMulti_7030_splits", 2).classes == ["cartwheel"]


@pytest.mark.parametrize("brush, where", [("a.avi 1\nb.avi 3\n", ":2"), ("a.avi\n", ":1"), ("a.avi 1\na.avi 2\n", ":2")])
def test_hmdb51_malformed_lines_name_file_and_line(tmp_path, brush, where):
    with pytest.raises(SplitFileError) as err:
        read_hmdb51_split(_hmdb(tmp_path, brush), 1)
    assert f"brush_hair_test_split1.txt{where}" in str(err.value)


def test_hmdb51_no_split_files_is_an_error(tmp_path):
    with pytest.raises(SplitFileError, match="_test_split3.txt"):
        read_hmdb51_split(_hmdb(tmp_path), 3)
