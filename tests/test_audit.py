import csv
import json

import pytest

from api_fakes import write_video
from milnce.train.audit import audit, dataset_list, write_audit


@pytest.fixture
def howto_list(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "aaa.mp4", seconds=2.0)
    write_video(root / "sub" / "bbb.mp4", seconds=1.5)
    (root / "ccc.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (tmp_path / "videos.csv").write_text("video_path\naaa.mp4\nsub/bbb.mp4\nccc.mp4\nddd.mp4\n")
    return tmp_path / "videos.csv", root


def test_howto100m_counts_missing_broken_and_duration(howto_list, tmp_path):
    csv_path, root = howto_list
    videos = dataset_list("howto100m", csv_path, root)
    assert [v.key for v in videos] == ["aaa", "sub/bbb", "ccc", "ddd"]
    report = audit(videos, "howto100m", csv_path, workers=2, progress=False)
    s = report.summary()
    assert (s["listed"], s["present"], s["decodable"], s["missing"], s["broken"]) == (4, 3, 2, 1, 1)
    assert s["seconds"] == pytest.approx(3.5, abs=0.01)
    out = write_audit(report, tmp_path / "audit")
    with open(out["missing_list"]) as f:
        assert list(csv.reader(f)) == [["video", "problem"], ["ddd", "not found"]]
    with open(out["broken_list"]) as f:
        rows = list(csv.reader(f))
    assert rows[1][:2] == ["ccc", str(root / "ccc.mp4")] and rows[1][2]
    assert json.loads((tmp_path / "audit" / "howto100m_audit.json").read_text())["decodable"] == 2


def test_cli_on_youcook2_csv_counts_videos_not_rows(tmp_path, capsys):
    import tools.audit_data as tool

    write_video(tmp_path / "yc" / "validation" / "101" / "vidA.mp4", seconds=1.0)
    (tmp_path / "val.csv").write_text("end,start,task,text,video_id\n5,1,101,cut the onion,vidA\n"
                                      "9,6,101,fry it,vidA\n4,0,102,stir,vidB\n")
    tool.main(["youcook2", str(tmp_path / "val.csv"), "--video-root", str(tmp_path / "yc"),
               "--out", str(tmp_path / "out"), "--workers", "1"])
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (s["listed"], s["decodable"], s["missing"]) == (2, 1, 1)


def test_unknown_dataset_and_missing_root_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'kinetics'"):
        dataset_list("kinetics", tmp_path)
    with pytest.raises(ValueError, match="video-root"):
        dataset_list("howto100m", tmp_path / "videos.csv")


def test_toy_crosstask_release_all_listed_videos_decodable(tiny_toy_corpus):
    videos = dataset_list("crosstask", tiny_toy_corpus / "crosstask")
    assert videos and all("/" in v.key for v in videos)
    report = audit(videos, "crosstask", progress=False)
    assert report.decodable == len(videos) == report.listed and not report.broken
