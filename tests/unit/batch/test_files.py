"""The folder walk both engines share: links, names that are not UTF-8, URIs, and streaming."""

import itertools
import os
from pathlib import Path

import pytest

from cartoon.batch import command, files
from cartoon.image import codec
from tests import photos
from tests.reports import read_report


def planned(source: Path, target: Path, tally: files.Tally) -> list[str]:
    """The first 100 planned inputs: enough for these folders, and a walk that loops ends."""
    items = files.plan(files.Location.parse(str(source)), files.Location.parse(str(target)), "png",
                       overwrite=False, tally=tally)
    return [str(item.relative) for item in itertools.islice(items, 100)]


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_links_are_followed_and_each_folder_is_walked_once(tmp_path):
    """Three photos, a loop back to the top, a second name of a folder, a folder outside:
    each photo once, under the first name the walk meets its folder by (path order)."""
    source, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    for name in ("b.jpg", "a/x.jpg", "a/deeper/y.jpg"):
        touch(source / name)
    touch(elsewhere / "z.jpg")
    (source / "a" / "deeper" / "loop").symlink_to(source, target_is_directory=True)
    (source / "second_name").symlink_to(source / "a", target_is_directory=True)
    (source / "linked").symlink_to(elsewhere, target_is_directory=True)
    (source / "linked_photo.jpg").symlink_to(elsewhere / "z.jpg")
    tally = files.Tally()

    found = planned(source, tmp_path / "out", tally)

    # A folder's files first, then its folders, each in name order.
    assert found == ["b.jpg", "linked_photo.jpg", "a/x.jpg", "a/deeper/y.jpg", "linked/z.jpg"]
    assert tally.links_cut == 2  # the loop and the second name
    assert tally.failures == []


def test_the_output_folder_is_not_walked_even_by_a_link(tmp_path):
    touch(tmp_path / "x.jpg")
    touch(tmp_path / "out" / "old.jpg")
    (tmp_path / "view_of_out").symlink_to(tmp_path / "out", target_is_directory=True)

    assert planned(tmp_path, tmp_path / "out", files.Tally()) == ["x.jpg"]


def test_plan_streams_a_folder_at_a_time(tmp_path, monkeypatch):
    """The first photo comes before the walk has listed more than the folders on its way."""
    for index in range(50):
        touch(tmp_path / "in" / f"folder{index:02d}" / "x.jpg")
    listed = []
    listing = files.Location.listing
    monkeypatch.setattr(files.Location, "listing", lambda self, folder: listed.append(folder) or listing(self, folder))
    items = files.plan(files.Location.parse(str(tmp_path / "in")), files.Location.parse(str(tmp_path / "out")),
                       "png", overwrite=False, tally=files.Tally())

    first = next(items)

    assert str(first.relative) == "folder00/x.jpg"
    assert len(listed) <= 4  # the top, folder00, and their output folders
    assert len(list(items)) == 49


def test_names_that_are_not_utf8_are_reported_per_file_and_the_run_goes_on(tmp_path):
    source = tmp_path / "in"
    (source / "good").mkdir(parents=True)
    (source / "good" / "pair.png").write_bytes(photos.encode(photos.two_faces()))
    for name in (b"caf\xe9.png", b"bad\xff/inside.png", b"notes\xff.txt"):
        path = os.fsencode(source) + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(photos.encode(photos.two_faces()))
    report = tmp_path / "report.jsonl"

    code = command.main([str(source), "-o", str(tmp_path / "out"), "--report", str(report)])

    assert code == command.EXIT_FAILED
    summary = read_report(report)
    assert (summary["done"], summary["failed"], summary["ignored"]) == (1, 2, 1)
    assert sorted(failure["input"] for failure in summary["failures"]) == ["bad\\xff/inside.png", "caf\\xe9.png"]
    assert all("not UTF-8" in failure["error"] for failure in summary["failures"])
    assert codec.decode((tmp_path / "out" / "good" / "pair.png").read_bytes()).rgb.shape == (320, 640, 3)


def test_the_http_engine_writes_to_a_uri_through_pyarrow(tmp_path, monkeypatch):
    """``-o file:///...`` is the folder it names, not a folder named ``file:`` here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "pair.png").write_bytes(photos.encode(photos.two_faces()))

    code = command.main([(tmp_path / "in").as_uri(), "-o", (tmp_path / "out").as_uri()])

    assert code == command.EXIT_OK
    assert codec.decode((tmp_path / "out" / "pair.png").read_bytes()).rgb.shape == (320, 640, 3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in", "out"]


@pytest.mark.parametrize("engine", ["http", "ray"])
def test_an_unknown_uri_scheme_exits_2_before_anything_runs(tmp_path, capsys, engine):
    (tmp_path / "in").mkdir()

    code = command.main([str(tmp_path / "in"), "-o", "nosuchscheme://bucket/out", "--engine", engine])

    assert code == command.EXIT_USAGE
    assert "nosuchscheme://bucket/out" in capsys.readouterr().err
