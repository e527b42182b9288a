"""Alignment of outside videos: frame rate, size, face crop, length, overlays."""

from __future__ import annotations

import numpy as np
import pytest

from eval.align import OVERLAYS, OverlayBox, align_video, remove_overlay, trim_to_audio
from eval.methods import FolderMethod, parse_method
from hub import SAMPLES_PER_FRAME


def _write_30fps(path, frames: np.ndarray) -> None:
    """Write frames at 30 fps (H.264) with PyAV directly (hub.media writes 25 fps only by default)."""
    from hub.media import write_video

    write_video(path, frames, None, fps=30)


def test_trim_to_audio_counts_both_sides():
    frames = np.zeros((50, 4, 4, 3), np.uint8)
    kept, dropped, missing = trim_to_audio(frames, 30 * SAMPLES_PER_FRAME + 100)
    assert (len(kept), dropped, missing) == (30, 20, 0)
    kept, dropped, missing = trim_to_audio(frames, 60 * SAMPLES_PER_FRAME)
    assert (len(kept), dropped, missing) == (50, 0, 10)
    with pytest.raises(ValueError, match="nothing to align"):
        trim_to_audio(frames, 100)


def test_overlay_box_is_validated_and_inpainted():
    with pytest.raises(ValueError, match="fractions"):
        OverlayBox("bad", 0.5, 0.0, 0.4, 1.0)
    rng = np.random.default_rng(0)
    frames = np.full((2, 64, 64, 3), 90, np.uint8) + rng.integers(0, 5, (2, 64, 64, 3)).astype(np.uint8)
    x0, y0, x1, y1 = OVERLAYS["vasa1"].pixels(64, 64)
    frames[:, y0:y1, x0:x1] = 255  # a bright thumbnail in the bottom-left corner
    cleaned, box = remove_overlay(frames, OVERLAYS["vasa1"])
    assert box == (x0, y0, x1, y1) and (x0, y1) == (0, 64)
    assert abs(float(cleaned[:, y0:y1, x0:x1].mean()) - 92) < 6  # filled from the surroundings
    assert np.array_equal(cleaned[:, :y0 - 12], frames[:, :y0 - 12])  # the rest untouched


def test_mismatched_outside_video_is_aligned(tmp_path, shared_data):
    """A 30 fps 512x512 video of a real face, longer than the audio, with a VASA-1-style thumbnail."""
    import cv2

    from hub.media import read_image

    portrait = read_image(shared_data / "portraits" / "hallo_1.jpg")
    side = min(portrait.shape[:2])
    square = cv2.resize(portrait[:side, :side], (512, 512), interpolation=cv2.INTER_AREA)
    frames = np.stack([np.roll(square, shift=k, axis=1) for k in range(45)])  # (45, 512, 512, 3): 1.5 s at 30 fps
    x0, y0, x1, y1 = OVERLAYS["vasa1"].pixels(512, 512)
    frames[:, y0:y1, x0:x1] = 255
    video = tmp_path / "clip.mp4"
    _write_30fps(video, frames)
    audio_samples = 30 * SAMPLES_PER_FRAME + 123  # 1.2 s of audio: shorter than the video

    aligned, record = align_video(video, 64, audio_samples=audio_samples, overlay=OVERLAYS["vasa1"])
    assert aligned.shape == (30, 64, 64, 3) and aligned.dtype == np.uint8
    assert record.source_fps == pytest.approx(30.0, abs=0.01)
    assert record.source_size_hw == (512, 512)
    assert record.source_frames_25fps == 38  # 1.5 s at 25 fps (round(1.5 * 25))
    assert (record.frames_kept, record.frames_dropped_video, record.frames_missing_video) == (30, 8, 0)
    assert record.overlay == "vasa1" and record.crop_box_xywh is not None
    assert any("30.000 -> 25 fps" in note for note in record.notes)
    # a square crop of the same size is kept as it is
    small = tmp_path / "small.mp4"
    _write_30fps(small, aligned)
    same, rec2 = align_video(small, 64)
    assert same.shape[1:] == (64, 64, 3) and rec2.crop.startswith("already a face crop")


def test_folder_method_finds_videos_by_clip_id(tmp_path):
    (tmp_path / "vasa1" / "10").mkdir(parents=True)
    (tmp_path / "vasa1" / "10" / "output.mp4").write_bytes(b"x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "clip_a.mp4").write_bytes(b"x")
    vasa = parse_method(f"folder:{tmp_path / 'vasa1'}")
    assert isinstance(vasa, FolderMethod) and vasa.label == "vasa1" and vasa.overlay is OVERLAYS["vasa1"]
    assert vasa.find_video(("vasa1_10", "vasa1/10")) == tmp_path / "vasa1" / "10" / "output.mp4"
    assert vasa.find_video(("emo_talk_hb", "emo/talk_hb")) is None
    mine = parse_method(f"folder:{tmp_path / 'mine'}?name=ours-old&cropped=yes")
    assert mine.label == "ours-old" and mine.overlay is None and mine.cropped is True
    assert mine.find_video(("clip_a",)) == tmp_path / "mine" / "clip_a.mp4"
    with pytest.raises(ValueError, match="overlay="):
        parse_method(f"folder:{tmp_path / 'mine'}?overlay=logo")
