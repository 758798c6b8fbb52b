"""cartoonize-batch without a service: planning, backoff (cartoon.retry), and the in-process pipeline."""

from pathlib import PurePosixPath

import pyarrow.fs as pafs
import pytest

from cartoon import retry
from cartoon.batch import command, files
from cartoon.image import codec
from tests import clips, photos
from tests.reports import read_report


def plan(source, target, format: str, overwrite: bool, tally: files.Tally) -> list[tuple[str, str]]:
    """``files.plan`` of two local folders, as (input, output) paths relative to them."""
    planned = files.plan(files.Location.parse(str(source)), files.Location.parse(str(target)), format, overwrite, tally)
    return [(str(item.relative), str(item.output)) for item in planned]


def test_backoff_grows_to_its_cap_and_honours_retry_after():
    for attempt in range(12):
        ceiling = min(retry.BACKOFF_CAP_S, retry.BACKOFF_BASE_S * 2**attempt)
        delays = [retry.backoff_s(attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered
    assert all(retry.backoff_s(0, 5.0) >= 5.0 for _ in range(50))


def test_plan_mirrors_the_tree_skips_existing_outputs_and_reports_name_clashes(tmp_path):
    source = tmp_path / "in"
    for name in ("a/x.jpg", "a/x.png", "b/y.JPG", "b/z.webp", ".cache/w.jpg", "readme.txt"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"")
    (tmp_path / "out" / "b").mkdir(parents=True)
    (tmp_path / "out" / "b" / "y.png").write_bytes(b"done before")
    tally = files.Tally()

    tasks = plan(source, tmp_path / "out", "png", overwrite=False, tally=tally)

    assert tasks == [("a/x.jpg", "a/x.png"), ("b/z.webp", "b/z.png")]
    assert (tally.ignored, tally.skipped) == (1, 1)
    assert [failure["input"] for failure in tally.failures] == ["a/x.png"]
    redo = plan(source, tmp_path / "out", "png", overwrite=True, tally=files.Tally())
    assert len(redo) == 3


def test_outputs_inside_the_input_folder_are_not_inputs(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.jpg").write_bytes(b"an earlier run's output")
    tasks = plan(tmp_path, tmp_path / "out", "jpeg", overwrite=True, tally=files.Tally())
    assert tasks == [("x.jpg", "x.jpg")]


def test_in_process_run_without_url(tmp_path, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "pair.png").write_bytes(photos.encode(photos.two_faces()))
    (tmp_path / "in" / "broken.png").write_bytes(photos.encode(photos.two_faces())[:500])
    report = tmp_path / "report.jsonl"

    code = command.main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--format", "webp",
                        "--report", str(report)])

    assert code == command.EXIT_FAILED
    assert codec.decode((tmp_path / "out" / "sub" / "pair.webp").read_bytes()).rgb.shape == (320, 640, 3)
    summary = read_report(report)
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert summary["failures"][0]["input"] == "broken.png"
    assert "corrupt_image" in summary["failures"][0]["error"]
    assert "done 1, skipped 0, failed 1" in capsys.readouterr().out


def test_plan_walks_a_subtree_filesystem_as_a_local_folder(tmp_path):
    """The same choices through pyarrow's listing, on a SubTreeFileSystem (as an s3://
    bucket would be seen), and from a file:// URI."""
    for name in ("a/x.jpg", "a/x.png", "b/y.JPG", "b/z.webp", ".cache/w.jpg", "readme.txt", "out/old.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "out" / "b").mkdir(parents=True, exist_ok=True)
    (tmp_path / "out" / "b" / "y.png").write_bytes(b"done before")
    subtree = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    tally = files.Tally()

    planned = files.plan(files.Location(subtree, ""), files.Location(subtree, "out"), "png", overwrite=False,
                         tally=tally)

    assert [(str(item.relative), str(item.output)) for item in planned] == [("a/x.jpg", "a/x.png"), ("b/z.webp", "b/z.png")]
    assert (tally.ignored, tally.skipped) == (1, 1)
    assert [failure["input"] for failure in tally.failures] == ["a/x.png"]
    from_uri = files.plan(files.Location.parse(tmp_path.as_uri()), files.Location.parse(str(tmp_path / "out")),
                          "png", overwrite=True, tally=files.Tally())
    assert [str(item.relative) for item in from_uri] == ["a/x.jpg", "b/y.JPG", "b/z.webp"]


def test_plan_refuses_a_missing_folder_at_once_and_an_unknown_scheme(tmp_path):
    with pytest.raises(files.UsageError, match="is not a folder"):
        files.plan(files.Location.parse(str(tmp_path / "nowhere")), files.Location.parse(str(tmp_path)),
                   "png", overwrite=False, tally=files.Tally())
    with pytest.raises(files.UsageError):
        files.Location.parse("nosuchscheme://bucket/photos")


def test_write_atomic_leaves_no_temporary_when_the_rename_fails(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "inside").write_bytes(b"")
    with pytest.raises(OSError):
        files.write_atomic(pafs.LocalFileSystem(), str(tmp_path / "taken"), b"data")  # a folder is in the way
    assert sorted(path.name for path in tmp_path.iterdir()) == ["taken"]
    files.write_atomic(pafs.LocalFileSystem(), str(tmp_path / "new" / "x.png"), b"data")
    assert [path.name for path in (tmp_path / "new").iterdir()] == ["x.png"]


def test_plan_takes_clips_at_their_own_path_beside_photos_of_the_same_stem(tmp_path):
    source = tmp_path / "in"
    for name in ("trip/day.mp4", "trip/day.jpg", "b.MOV", "c.webm", "d.mkv", "e.avi"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"")
    tally = files.Tally()

    tasks = plan(source, tmp_path / "out", "png", overwrite=False, tally=tally)

    assert sorted(tasks) == [
        ("b.MOV", "b.MOV"), ("c.webm", "c.webm"), ("d.mkv", "d.mkv"),
        ("trip/day.jpg", "trip/day.png"), ("trip/day.mp4", "trip/day.mp4"),
    ]
    assert (tally.ignored, tally.failures) == (1, [])


def test_clips_without_a_service_are_reported_not_skipped(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    clips.astronaut_clip(tmp_path / "in" / "hello.mp4", frames=3)
    report = tmp_path / "report.jsonl"

    code = command.main([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--report", str(report)])

    assert code == command.EXIT_FAILED
    [failure] = read_report(report)["failures"]
    assert failure == {"input": "hello.mp4", "status": None,
                       "error": "video clips are cartoonized by the service: give --url"}
    assert not (tmp_path / "out" / "hello.mp4").exists()


def test_remove_partials_deletes_only_the_temporaries_of_the_planned_outputs(tmp_path):
    target = files.Location.parse(str(tmp_path))
    (tmp_path / "a").mkdir()
    for name in ("a/x.png", "a/.x.png.4242.partial", ".y.png.17.partial", "a/.z.png.5.partial", "a/.x.png.notes"):
        (tmp_path / name).write_bytes(b"")
    planned = [PurePosixPath("a/x.png"), PurePosixPath("y.png")]

    removed = files.remove_partials(target, planned)

    # z.png was not planned (another run's writer may own it); the other names are no temporaries.
    assert sorted(map(str, removed)) == [".y.png.17.partial", "a/.x.png.4242.partial"]
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()) == [
        "a/.x.png.notes", "a/.z.png.5.partial", "a/x.png",
    ]
