"""Bad caption files and video lists at the level a user meets them: HowTo100MDataModule.setup().

A file that cannot be read as a whole is a CaptionError naming the file (and line). A bad row is dropped, counted
in the index's build_stats with its file and line, warned about, and never reaches a sample; with
strict_captions=True it is a CaptionError naming the file and line instead.
"""
import json
import re

import pytest

from datamodules.narrations.readers import CaptionError
from datamodules.howto100m import HowTo100MDataModule
from reliability_media import data_config, toy_tokenizer, write_corpus

GOOD_ROWS = "0,1,cut the onion\n5,6,stir the pan\n"

# row -> (build_stats reason, message fragment); the bad row is line 3 of the CSV
BAD_ROWS = {
    "end_before_start": ("2,1,backwards\n", "end_before_start", "end 1.0 < start 2.0"),
    "negative_time": ("-1,2,too early\n", "negative_time", "negative time"),
    "nan_time": ("nan,3,no time\n", "bad_time", "not a finite number"),
    "text_time": ("soon,3,no time\n", "bad_time", ""),
    "empty_text": ("3,4,\n", "empty_text", "empty text"),
    "duplicate": ("0,1,cut the onion\n", "duplicate", "duplicate"),
}


def _setup(root, **kwargs):
    strict = kwargs.pop("strict_captions", False)
    dm = HowTo100MDataModule(data_config(root, **kwargs), tokenizer=toy_tokenizer, progress=False,
                             strict_captions=strict)
    dm.setup()
    return dm


def _csv_corpus(root, first_row_block: bytes):
    write_corpus(root, {}, num_good=2)
    folder = root / "howto100m" / "captions"
    folder.mkdir()
    (folder / "good0.csv").write_bytes(b"start,end,text\n0,1,cut the onion\n" + first_row_block + b"5,6,stir the pan\n")
    (folder / "good1.csv").write_text("start,end,text\n" + GOOD_ROWS)
    return folder


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_dropped_counted_and_named(tmp_path, case):
    row, reason, fragment = BAD_ROWS[case]
    folder = _csv_corpus(tmp_path, row.encode())
    with pytest.warns(UserWarning, match=re.escape(f"{folder / 'good0.csv'}, line 3")):
        dm = _setup(tmp_path, captions=str(folder))
    stats = dm.index.manifest["build_stats"]
    assert stats["dropped_rows"] == {reason: 1}
    assert stats["examples"][0].startswith(f"{folder / 'good0.csv'}, line 3") and fragment in stats["examples"][0]
    video = list(dm.index.video_ids).index("good0")
    starts, ends, texts = dm.index.narrations(video)
    assert texts == ["cut the onion", "stir the pan"] and list(starts) == [0.0, 5.0]


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_an_error_when_strict(tmp_path, case):
    row, _, fragment = BAD_ROWS[case]
    folder = _csv_corpus(tmp_path, row.encode())
    with pytest.raises(CaptionError, match=re.escape(f"{folder / 'good0.csv'}, line 3")) as info:
        _setup(tmp_path, captions=str(folder), strict_captions=True)
    assert fragment in str(info.value)


def test_non_utf8_text_row(tmp_path):
    folder = _csv_corpus(tmp_path, b"2,3,caf\xe9 in latin-1\n")
    with pytest.warns(UserWarning, match="line 3"):
        dm = _setup(tmp_path, captions=str(folder))
    assert dm.index.manifest["build_stats"]["dropped_rows"] == {"bad_utf8": 1}
    with pytest.raises(CaptionError, match=r"good0\.csv, line 3: text is not valid UTF-8"):
        (tmp_path / "howto100m" / "narration_index").rename(tmp_path / "old_index")
        _setup(tmp_path, captions=str(folder), strict_captions=True)


# -- files that cannot be read as a whole -----------------------------------------------------------------------------
def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


FILE_CASES = {
    # name: (file relative to root, content, message fragment)
    "empty_caption_json": ("howto100m/caption.json", b"", ""),
    "caption_json_no_videos": ("howto100m/caption.json", "{}", ""),
    "caption_json_missing_key": ("howto100m/caption.json",
                                 json.dumps({"good0": {"start": [0], "text": ["a"]}}), "missing key"),
    "caption_json_not_utf8": ("howto100m/caption.json", b'{"good0": {"start": [0], "end": [1], "text": ["\xe9"]}}',
                              "UTF-8"),
    "caption_json_malformed": ("howto100m/caption.json", '{"good0": {"start": [0], "end": [1], ', ""),
    "list_empty": ("howto100m/videos.csv", "video_path\n", "no videos listed"),
    "list_missing_column": ("howto100m/videos.csv", "path\ngood0.mp4\n", "missing column"),
    "list_parent_escape": ("howto100m/videos.csv", "video_path\ngood0.mp4\n../../etc/passwd.mp4\n",
                           "escapes the video root"),
    "list_absolute_path": ("howto100m/videos.csv", "video_path\ngood0.mp4\n/etc/passwd.mp4\n",
                           "escapes the video root"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_unreadable_file_is_an_error_naming_it(tmp_path, case):
    rel, content, fragment = FILE_CASES[case]
    write_corpus(tmp_path, {}, num_good=2)
    _write(tmp_path / rel, content)
    with pytest.raises(CaptionError) as info:
        _setup(tmp_path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / rel)), message
    assert fragment in message
    if case.startswith("list_") and case != "list_empty":
        assert re.search(r", line \d+", message), message


def test_empty_caption_csv_is_an_error_naming_it(tmp_path):
    folder = _csv_corpus(tmp_path, b"")
    (folder / "good1.csv").write_text("")
    with pytest.raises(CaptionError, match=re.escape(f"{folder / 'good1.csv'}, line 1")):
        _setup(tmp_path, captions=str(folder))


def test_caption_csv_missing_column_is_an_error_naming_it(tmp_path):
    folder = _csv_corpus(tmp_path, b"")
    (folder / "good1.csv").write_text("start,text\n0,cut the onion\n")
    with pytest.raises(CaptionError, match=re.escape(f"{folder / 'good1.csv'}, line 1") + ".*missing column"):
        _setup(tmp_path, captions=str(folder))
