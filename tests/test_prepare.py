import csv
import json
import wave

import numpy as np
import pytest

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, media
from hub.data import prepare as prep
from hub.data.__main__ import main as data_main

SMALL = [
    "lipnet_GRID_bbaf2n.mp4",  # 360x288, 25 fps, 3 s, AAC 44.1 kHz stereo
    "hdtf_radio10_clip0.mp4",  # 512x512, 29.97 fps, 2.1 s
    "liveportrait_d0.mp4",  # 512x512, no audio track
]


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    """Three small shared clips prepared at 64 px, plus one broken file in the source folder."""
    root = tmp_path_factory.mktemp("prepare")
    src = root / "src"
    src.mkdir()
    for name in SMALL:
        (src / name).symlink_to(shared_data / "clips" / name)
    (src / "broken.mp4").write_text("not a video")
    out = root / "out"
    clips = prep.list_sources(src, "val")
    counts = prep.prepare(clips, out, prep.PrepareConfig(size=64), workers=1, progress=False)
    return src, out, counts


def test_prepare_outputs(prepared, shared_data):
    _, out, counts = prepared
    assert counts["done"] == 3 and counts["failed"] == 1 and counts["skipped"] == 0
    rows = prep.read_index(out / "index.csv")
    with open(out / "index.csv", newline="") as handle:
        assert next(csv.reader(handle)) == prep.INDEX_COLUMNS
    assert sorted(r["id"] for r in rows) == sorted(n[:-4] for n in SMALL)
    for row in rows:
        assert row["split"] == "val" and row["identity"] == row["id"] and row["size"] == "64"
        source = media.read_video(shared_data / "clips" / f"{row['id']}.mp4", with_audio=False)
        frames = int(row["frames"])
        assert frames == source.num_frames and float(row["seconds"]) == pytest.approx(frames / FPS)
        clip = media.read_video(out / row["path"])
        assert clip.frames.shape == (frames, 64, 64, 3)
        assert media.probe(out / row["path"]).fps == pytest.approx(FPS)
        marks = np.load(out / row["landmarks_path"])
        assert marks.shape == (frames, 478, 2) and marks.dtype == np.float32
        found = np.isfinite(marks[:, 0, 0])
        assert found.mean() > 0.9
        assert np.nanmin(marks) > -8 and np.nanmax(marks) < 72  # landmarks inside the crop
        if row["id"] == "liveportrait_d0":
            assert row["has_audio"] == "False" and row["audio_path"] == "" and clip.audio is None
            continue
        assert row["has_audio"] == "True"
        with wave.open(str(out / row["audio_path"])) as handle:
            assert handle.getframerate() == SAMPLE_RATE and handle.getnchannels() == 1
            assert handle.getnframes() == frames * SAMPLES_PER_FRAME
        wav = media.read_audio(out / row["audio_path"])
        assert np.abs(wav - media.read_video(shared_data / "clips" / f"{row['id']}.mp4").audio).max() < 1e-3
        assert np.abs(clip.audio).max() > 0.01  # the mp4 carries the audio too


def test_failures_logged(prepared):
    _, out, _ = prepared
    lines = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [entry["id"] for entry in lines] == ["broken"]
    assert "broken.mp4: not a readable media file" in lines[0]["error"]


def test_resume_skips_done_and_keeps_index(prepared):
    src, out, _ = prepared
    before = (out / "index.csv").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    clips = [c for c in prep.list_sources(src, "val") if c.id != "broken"]
    counts = prep.prepare(clips, out, prep.PrepareConfig(size=64), workers=1, progress=False)
    assert counts == {**counts, "done": 0, "skipped": 3, "failed": 0}
    assert (out / "index.csv").read_text() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == mtimes
    with pytest.raises(ValueError, match="prepared with other settings"):
        prep.prepare(clips, out, prep.PrepareConfig(size=96), workers=1, progress=False)


def test_list_sources_from_manifest(shared_data):
    clips = prep.list_sources(shared_data / "manifest.csv")
    assert len(clips) >= 50 and all(c.path.is_file() for c in clips)
    val = prep.list_sources(shared_data / "manifest.csv", "val")
    assert {c.split for c in val} == {"val"}
    aoc = [c for c in val if c.id == "hdtf_aoc_wda"][0]
    assert aoc.identity == "aoc" and aoc.source.startswith("OpenTalker/SadTalker:")


def test_list_sources_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        prep.list_sources(tmp_path / "missing")
    with pytest.raises(ValueError, match="no video clips found"):
        prep.list_sources(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"1")
    (tmp_path / "x.mkv").write_bytes(b"1")
    with pytest.raises(ValueError, match="share the id 'x'"):
        prep.list_sources(tmp_path)


def test_cli_errors(tmp_path, capsys):
    assert data_main(["prepare", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                      "--size", "64"]) == 2
    assert "error: --src" in capsys.readouterr().err
    assert data_main(["prepare", "--src", str(tmp_path), "--out", str(tmp_path / "o"),
                      "--size", "4"]) == 2
    assert "--size must be between" in capsys.readouterr().err
