"""Bring outside videos onto a benchmark's grid: 25 fps, the benchmark's square face crop, the
driving audio's length, overlays removed.

Videos made elsewhere (VASA-1, EMO, any folder of results) differ from ours in frame rate, size,
framing and length, and some carry overlays. Every step is explicit and recorded in an
:class:`AlignmentRecord` that goes into the results metadata:

1. **frame rate**: :func:`hub.media.read_video` resamples to 25 fps by timestamps (output frame
   ``k`` is the latest source frame at or before ``k / 25`` s); the source rate is recorded;
2. **overlays**: known static overlays (VASA-1's reference thumbnail in the bottom-left corner,
   EMO's "Generated Video" watermark) are cut out of every frame and filled by inpainting
   (``cv2.INPAINT_TELEA``) before anything else looks at the frames, so that neither the face
   detector nor a metric sees them;
3. **crop**: the same square head crop as ``python -m hub.data prepare`` (one fixed box per clip
   from the median face centre and size, ``scale`` x face size, shrunk to fit down to
   ``min_scale``, edge padding beyond), resized to the benchmark's size; a video that already is
   a square of that size with the face filling it (our own methods) is kept as is;
4. **length**: trimmed to the shorter of the video and the driving audio (whole frames of 640
   samples); the number of frames dropped on either side is recorded.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hub import FPS, SAMPLES_PER_FRAME

CROP_SCALE = 2.0  # same defaults as hub.data.prepare.PrepareConfig
CROP_MIN_SCALE = 1.5
INPAINT_RADIUS = 5


@dataclass(frozen=True)
class OverlayBox:
    """A static overlay as a box in fractions of the frame (x0, y0, x1, y1 in [0, 1])."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float
    note: str = ""

    def __post_init__(self) -> None:
        if not (0.0 <= self.x0 < self.x1 <= 1.0 and 0.0 <= self.y0 < self.y1 <= 1.0):
            raise ValueError(f"overlay {self.name}: box ({self.x0}, {self.y0}, {self.x1}, {self.y1}) "
                             "must be fractions with x0 < x1 and y0 < y1 in [0, 1]")

    def pixels(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The box in pixels (x0, y0, x1, y1), rounded outwards."""
        return (int(np.floor(self.x0 * width)), int(np.floor(self.y0 * height)),
                int(np.ceil(self.x1 * width)), int(np.ceil(self.y1 * height)))


# Measured on the shared samples (512x512): VASA-1's thumbnail is 128x64 px at (0, 448); EMO's
# two-line watermark spans x 5..135, y 437..502. Boxes include a few pixels of margin.
OVERLAYS: dict[str, OverlayBox] = {
    "vasa1": OverlayBox("vasa1", 0.0, 0.870, 0.255, 1.0,
                        note="reference thumbnail, bottom-left 128x64 of 512x512, inpainted"),
    "emo": OverlayBox("emo", 0.0, 0.840, 0.280, 1.0,
                      note="'Generated Video' watermark, bottom-left, inpainted"),
}


@dataclass
class AlignmentRecord:
    """What was done to one outside video (stored with the results)."""

    source: str
    source_fps: float | None = None
    source_size_hw: tuple[int, int] | None = None
    source_frames_25fps: int = 0
    overlay: str | None = None
    overlay_box_px: tuple[int, int, int, int] | None = None
    crop_box_xywh: tuple[int, int, int, int] | None = None
    crop: str = ""
    output_size: int = 0
    audio_frames: int | None = None
    frames_kept: int = 0
    frames_dropped_video: int = 0
    frames_missing_video: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def remove_overlay(frames: np.ndarray, overlay: OverlayBox) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Inpaint ``overlay``'s box in every frame.

    Args:
        frames: uint8 (T, H, W, 3) RGB.
    Returns:
        (frames with the box filled from its surroundings, the box in pixels).
    """
    import cv2

    _, h, w, _ = frames.shape
    x0, y0, x1, y1 = overlay.pixels(h, w)
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 255
    # Inpaint only a band around the box (cheap) and paste it back.
    m = 2 * INPAINT_RADIUS
    bx0, by0, bx1, by1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
    out = frames.copy()
    sub_mask = mask[by0:by1, bx0:bx1]
    for t in range(len(frames)):
        out[t, by0:by1, bx0:bx1] = cv2.inpaint(np.ascontiguousarray(frames[t, by0:by1, bx0:bx1]),
                                               sub_mask, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return out, (x0, y0, x1, y1)


def face_crop_frames(frames: np.ndarray, size: int, *, analyzer=None, detect_every: int = 1,
                     scale: float = CROP_SCALE, min_scale: float | None = CROP_MIN_SCALE,
                     name: str = "video") -> tuple[np.ndarray, tuple[int, int, int]]:
    """The ``python -m hub.data prepare`` crop of a clip, in memory.

    Args:
        frames: uint8 (T, H, W, 3) RGB at 25 fps.
        size: output side in pixels.
        analyzer: an open :class:`hub.face.FaceAnalyzer` to reuse (one is opened otherwise).
        detect_every: run the face analyzer on every n-th frame only (the box is one fixed box
            from the median face, so a subsample gives nearly the same box).
    Returns:
        (uint8 (T, size, size, 3) crops, the fixed box (x0, y0, side) in source pixels).
    Raises:
        ValueError: no face in any analysed frame.
    """
    from hub.face import FaceAnalyzer, crop_square, track_clip_boxes

    if detect_every < 1:
        raise ValueError(f"detect_every={detect_every}; must be >= 1")
    own = analyzer is None
    analyzer = analyzer or FaceAnalyzer(max_faces=1, blendshapes=False)
    try:
        targets: list[np.ndarray | None] = []
        for t in range(0, len(frames), detect_every):
            faces = analyzer.detect(frames[t])
            face = faces[0] if faces else None
            targets.append(None if face is None else (face.landmarks if face.landmarks is not None else face.box))
    finally:
        if own:
            analyzer.close()
    try:
        box = track_clip_boxes(targets, frames.shape[1:], scale=scale, min_scale=min_scale)[0]
    except ValueError:
        raise ValueError(f"{name}: no face found in any of {len(targets)} analysed frames") from None
    crops = np.stack([crop_square(f, box, size) for f in frames])  # (T, S, S, 3)
    return crops, (box.x0, box.y0, box.side)


def trim_to_audio(frames: np.ndarray, audio_samples: int | None) -> tuple[np.ndarray, int, int]:
    """Trim ``frames`` (T, ...) to the audio's whole frames.

    Returns:
        (frames[:n], frames dropped from the video, frames the video lacks against the audio),
        with n = min(T, audio_samples // 640) (n = T without audio).
    """
    if audio_samples is None:
        return frames, 0, 0
    audio_frames = audio_samples // SAMPLES_PER_FRAME
    n = min(len(frames), audio_frames)
    if n < 1:
        raise ValueError(f"nothing to align: {len(frames)} video frames, {audio_frames} audio frames")
    return frames[:n], len(frames) - n, audio_frames - n


def align_video(path: str | os.PathLike, size: int, *, audio_samples: int | None = None,
                overlay: OverlayBox | None = None, already_cropped: bool | None = None,
                analyzer=None, detect_every: int = 5,
                max_seconds: float | None = None) -> tuple[np.ndarray, AlignmentRecord]:
    """Read an outside video and put it on the benchmark grid (see the module docstring).

    Args:
        path: any video file :func:`hub.media.read_video` reads.
        size: the benchmark's square crop size.
        audio_samples: length of the driving audio at 16 kHz (None: keep every frame).
        overlay: a static overlay to inpaint first (e.g. ``OVERLAYS["vasa1"]``).
        already_cropped: True keeps the frames (resized to ``size``) without a face crop; None
            decides: a square video is taken as already cropped when its side equals ``size``.
        detect_every: face analysis stride for the crop box.
    Returns:
        (uint8 (n, size, size, 3) frames at 25 fps, the record of what was done).
    """
    import cv2

    from hub.media import read_video

    clip = read_video(path, with_audio=False, max_seconds=max_seconds)
    frames = clip.frames                                          # (T, H, W, 3)
    _, h, w, _ = frames.shape
    record = AlignmentRecord(source=str(path), source_fps=round(float(clip.source_fps), 3),
                             source_size_hw=(h, w), source_frames_25fps=len(frames), output_size=size)
    if abs(clip.source_fps - FPS) > 1e-3:
        record.notes.append(f"resampled {clip.source_fps:.3f} -> {FPS} fps by timestamps (latest frame at or "
                            "before each output time)")
    if audio_samples is not None:  # trim before the (costly) overlay removal and crop
        frames, dropped, missing = trim_to_audio(frames, audio_samples)
        record.audio_frames = audio_samples // SAMPLES_PER_FRAME
        record.frames_dropped_video, record.frames_missing_video = dropped, missing
        if dropped:
            record.notes.append(f"dropped the last {dropped} video frames (longer than the audio)")
        if missing:
            record.notes.append(f"the video is {missing} frames shorter than the audio; metrics use the "
                                f"first {len(frames)} frames of the audio")
    if overlay is not None:
        frames, box = remove_overlay(frames, overlay)
        record.overlay, record.overlay_box_px = overlay.name, box
        record.notes.append(f"overlay {overlay.name}: {overlay.note}")
    if already_cropped is None:
        already_cropped = h == w == size
    if already_cropped:
        if (h, w) != (size, size):
            if h != w:
                raise ValueError(f"{Path(path).name}: {w}x{h} is not square; it cannot be taken as a face crop")
            frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if h > size
                                          else cv2.INTER_CUBIC) for f in frames])
            record.crop = f"already a face crop; resized {w}x{h} -> {size}x{size}"
        else:
            record.crop = "already a face crop at the benchmark size; unchanged"
    else:
        frames, (x0, y0, side) = face_crop_frames(frames, size, analyzer=analyzer, detect_every=detect_every,
                                                  name=Path(path).name)
        record.crop_box_xywh = (x0, y0, side, side)
        record.crop = (f"hub.face crop as in `python -m hub.data prepare` (fixed box, scale {CROP_SCALE}, "
                       f"min_scale {CROP_MIN_SCALE}, faces analysed every {detect_every} frames), "
                       f"resized to {size}x{size}")
    record.frames_kept = len(frames)
    return np.ascontiguousarray(frames), record
