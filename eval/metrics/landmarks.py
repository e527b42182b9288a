"""Weight-free (offline-weight) signals from face landmarks and pixels.

* ``lmd``: mouth (or face) landmark distance to ground truth (dlib 68 points).
* ``av_landmark_sync``: audio-visual offset and correlation of the mouth opening with the speech
  envelope (RMS of the 300-3000 Hz band per video frame). A landmark signal, not SyncNet: never compare it with LSE numbers.
* ``av_facesync``: audio-visual offset and correlation from this project's FaceSync model (CCA of
  log-mel audio and mouth-shape features fitted on in-sync training clips; eval/nets/facesync.py).
* ``landmark_jitter``: high-frequency landmark motion left after temporal smoothing.
* ``blink_rate``: blinks per minute from the eye aspect ratio.
* ``head_motion``: head-pose statistics (solvePnP of 6 landmarks on a generic 3D face).
* ``flicker``: mean absolute frame difference in the static region (outside every face box).

Landmarks are dlib's 68 points (iBUG 300-W indexing, 0-based): jaw 0-16, eyes 36-41 and 42-47,
nose tip 30, mouth 48-67 (inner lips 60-67).
"""

from __future__ import annotations

import numpy as np

from eval.metrics.faces import cached_landmarks68, cached_yunet, dlib_models_check, nan_interpolate
from eval.metrics.registry import EvalSample, register_metric
from eval.weights import FACESYNC_CCA, YUNET, resolve_weight
from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

LMD_RESOLUTION = 256  # LMD in pixels of frames scaled so that the longer side is this
MOUTH = slice(48, 68)
SYNC_MAX_OFFSET = 15
SYNC_DETREND_FRAMES = 0  # moving average removed from both signals (0: none; measured best on val clips)
SPEECH_BAND_HZ = (300.0, 3000.0)
JITTER_SMOOTH_FRAMES = 5
BLINK_EAR_RATIO = 0.75  # a blink frame has EAR below this fraction of the clip's median EAR
BLINK_MIN_FRAMES = 2
FLICKER_BOX_MARGIN = 0.2  # face boxes are enlarged by this fraction of their size on each side

_DLIB_REQUIRES = ["dlib", "face_recognition_models", "cv2"]
_DLIB_CHECKS = [dlib_models_check]


def _valid(landmarks: np.ndarray) -> np.ndarray:
    return np.isfinite(landmarks).all(axis=(1, 2))


def _need_faces(landmarks: np.ndarray, what: str, minimum: int = 2) -> None:
    if _valid(landmarks).sum() < minimum:
        raise ValueError(f"{what}: a face was found in {_valid(landmarks).sum()} frames, need {minimum}")


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (36, 45) per frame; (T,)."""
    return np.linalg.norm(landmarks[:, 45] - landmarks[:, 36], axis=-1)


# --- LMD -------------------------------------------------------------------------------------

def landmark_distance(gen: np.ndarray, gt: np.ndarray, region: str = "mouth") -> np.ndarray:
    """Per-frame mean L2 distance between centred landmark sets.

    Args:
        gen, gt: (T, 68, 2) landmarks in pixels at the same resolution.
        region: ``mouth`` (points 48-67) or ``face`` (all 68).

    Returns:
        (T,) distances; NaN where either set is missing.
    """
    if region not in ("mouth", "face"):
        raise ValueError(f"region must be 'mouth' or 'face', got {region!r}")
    sel = MOUTH if region == "mouth" else slice(0, 68)
    a, b = gen[:, sel], gt[:, sel]                               # (T, K, 2)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return np.linalg.norm(a - b, axis=-1).mean(axis=1)          # (T,)


def _lmd(sample: EvalSample, region: str, resolution: int) -> float:
    if sample.ground_truth is None:
        raise ValueError(f"LMD needs ground-truth frames; sample {sample.clip_id!r} has none")
    if len(sample.ground_truth) != len(sample.frames):
        raise ValueError(f"LMD needs equal frame counts: {len(sample.frames)} generated vs "
                         f"{len(sample.ground_truth)} ground truth")
    gen = cached_landmarks68(sample) * (resolution / max(sample.frames.shape[1:3]))
    gt = cached_landmarks68(sample, "ground_truth") * (resolution / max(sample.ground_truth.shape[1:3]))
    dist = landmark_distance(gen, gt, region)
    if not np.isfinite(dist).any():
        raise ValueError("LMD: no frame with a face in both the generated and the ground-truth clip")
    return float(np.nanmean(dist))


@register_metric(name="lmd", kind="motion", higher_is_better=False, needs_reference_video=True,
                 requires=_DLIB_REQUIRES,
                 checks=_DLIB_CHECKS, unit="px",
                 variant=f"dlib 68 points, mouth 48-67 centred, px at longer side {LMD_RESOLUTION}",
                 description="Mouth landmark distance to ground truth (ER-NeRF style LMD).")
def lmd(sample: EvalSample, resolution: int = LMD_RESOLUTION) -> float:
    """Mouth LMD in pixels at ``resolution``."""
    return _lmd(sample, "mouth", resolution)


@register_metric(name="lmd_face", kind="motion", higher_is_better=False, needs_reference_video=True,
                 requires=_DLIB_REQUIRES,
                 checks=_DLIB_CHECKS, unit="px",
                 variant=f"dlib 68 points, all points centred, px at longer side {LMD_RESOLUTION}",
                 description="Whole-face landmark distance to ground truth.")
def lmd_face(sample: EvalSample, resolution: int = LMD_RESOLUTION) -> float:
    """Face LMD (all 68 points) in pixels at ``resolution``."""
    return _lmd(sample, "face", resolution)


# --- audio-visual sync from landmarks ---------------------------------------------------------

def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening over mouth width per frame: mean(|61-67|, |62-66|, |63-65|) / |48-54|; (T,)."""
    gap = np.linalg.norm(landmarks[:, [61, 62, 63]] - landmarks[:, [67, 66, 65]], axis=-1).mean(axis=1)
    width = np.linalg.norm(landmarks[:, 54] - landmarks[:, 48], axis=-1)
    return gap / width


def speech_envelope(audio: np.ndarray, frames: int) -> np.ndarray:
    """RMS of the 300-3000 Hz band of each 640-sample (one video frame) block.

    A linear RMS of the speech band tracked known audio shifts on 4 of 4 validation clips where the
    full-band log energy tracked 2 of 4 (silence noise dominates a log), so the envelope is linear.

    Returns:
        (min(frames, S // 640),) float64.
    """
    from scipy.signal import butter, sosfiltfilt

    n = min(frames, len(audio) // SAMPLES_PER_FRAME)
    sos = butter(4, SPEECH_BAND_HZ, btype="bandpass", fs=SAMPLE_RATE, output="sos")
    band = sosfiltfilt(sos, np.asarray(audio, np.float64)) if len(audio) > 27 else np.asarray(audio, np.float64)
    blocks = band[: n * SAMPLES_PER_FRAME].reshape(n, SAMPLES_PER_FRAME)
    return np.sqrt(np.mean(blocks ** 2, axis=1))


def _detrend(x: np.ndarray, window: int) -> np.ndarray:
    if window > 1 and len(x) > window:
        kernel = np.ones(window) / window
        padded = np.pad(x, (window // 2, window - 1 - window // 2), mode="edge")
        x = x - np.convolve(padded, kernel, mode="valid")
    std = x.std()
    return (x - x.mean()) / std if std > 0 else x - x.mean()


def lagged_correlation(video_signal: np.ndarray, audio_signal: np.ndarray,
                       max_offset: int = SYNC_MAX_OFFSET) -> np.ndarray:
    """Pearson correlation of video[t] with audio[t - k] for k = -max_offset .. +max_offset.

    Positive k means the audio leads the video by k frames (same sign as the SyncNet offset).

    Returns:
        (2 * max_offset + 1,) correlations.
    """
    n = min(len(video_signal), len(audio_signal))
    if n < 2 * max_offset + 2:
        raise ValueError(f"signals of {n} frames are too short for offsets up to ±{max_offset}")
    v, a = video_signal[:n], audio_signal[:n]
    out = np.empty(2 * max_offset + 1)
    for j, k in enumerate(range(-max_offset, max_offset + 1)):
        vv, aa = (v[k:], a[: n - k]) if k >= 0 else (v[: n + k], a[-k:])
        vv, aa = vv - vv.mean(), aa - aa.mean()
        denom = np.sqrt((vv ** 2).sum() * (aa ** 2).sum())
        out[j] = (vv * aa).sum() / denom if denom > 0 else 0.0
    return out


def av_sync_from_signals(mouth: np.ndarray, energy: np.ndarray, max_offset: int = SYNC_MAX_OFFSET,
                         detrend_frames: int = SYNC_DETREND_FRAMES) -> dict[str, float]:
    """Peak correlation, its offset and peak minus median of the lagged correlation."""
    corr = lagged_correlation(_detrend(nan_interpolate(mouth), detrend_frames),
                              _detrend(energy, detrend_frames), max_offset)
    if np.ptp(corr) == 0:  # a motionless mouth (e.g. a still image): no peak, no offset
        return {"av_corr": float(corr[0]), "av_offset": float("nan"), "av_conf": 0.0}
    peak = int(np.argmax(corr))
    return {"av_corr": float(corr[peak]), "av_offset": float(peak - max_offset),
            "av_conf": float(corr[peak] - np.median(corr))}


@register_metric(name="av_landmark_sync", kind="sync", higher_is_better=True, needs_audio=True,
                 requires=_DLIB_REQUIRES,
                 checks=_DLIB_CHECKS, outputs=["av_corr", "av_offset", "av_conf"],
                 directions={"av_offset": None},
                 variant="dlib inner-lip opening / mouth width vs RMS of the 300-3000 Hz band per "
                         "40 ms, z-scored, Pearson over ±15 frames",
                 description="Audio-visual correlation of mouth opening and the speech envelope (a landmark "
                             "signal, not SyncNet LSE); offset in frames, positive: audio leads.")
def av_landmark_sync(sample: EvalSample, max_offset: int = SYNC_MAX_OFFSET) -> dict[str, float]:
    """Landmark-based audio-visual sync: ``av_corr`` (peak), ``av_offset``, ``av_conf`` (peak - median)."""
    if sample.audio is None:
        raise ValueError("av_landmark_sync needs the driving audio")
    landmarks = cached_landmarks68(sample)
    _need_faces(landmarks, "av_landmark_sync", 2 * max_offset + 2)
    energy = speech_envelope(sample.audio, len(sample.frames))
    return av_sync_from_signals(mouth_opening(landmarks)[: len(energy)], energy, max_offset)


@register_metric(name="av_facesync", kind="sync", higher_is_better=True, needs_audio=True,
                 requires=_DLIB_REQUIRES + ["python_speech_features", "safetensors"], checks=_DLIB_CHECKS,
                 weights=[FACESYNC_CCA], outputs=["fs_corr", "fs_offset", "fs_conf", "fs_in_sync"],
                 directions={"fs_offset": None},
                 variant="FaceSync CCA (Slaney & Covell 2000) fitted here: log-mel ±3 frames vs dlib mouth "
                         "shape, canonical-correlation-weighted Pearson over ±15 frames; in sync: |offset| <= 1",
                 description="Audio-visual offset (frames, positive: audio leads) and correlation from a "
                             "linear sync model fitted on in-sync training clips; not SyncNet LSE.")
def av_facesync(sample: EvalSample) -> dict[str, float]:
    """``fs_corr`` (peak), ``fs_offset`` (frames) and ``fs_conf`` (peak - median) of the FaceSync lag curve.

    ``fs_in_sync`` is 1 when the offset is within ±1 frame, else 0: its mean over clips is the share
    of clips in sync.
    """
    from eval.nets.facesync import load_cached

    if sample.audio is None:
        raise ValueError("av_facesync needs the driving audio")
    model = load_cached(resolve_weight(FACESYNC_CCA))
    landmarks = cached_landmarks68(sample)
    _need_faces(landmarks, "av_facesync", 2 * model.config.max_offset + 2)
    result = model.sync(sample.audio, landmarks)
    return {"fs_corr": result["corr"], "fs_offset": result["offset"], "fs_conf": result["conf"],
            "fs_in_sync": float(abs(result["offset"]) <= 1)}


# --- temporal stability ------------------------------------------------------------------------

def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding; same shape as ``x``."""
    pad = [(window // 2, window - 1 - window // 2)] + [(0, 0)] * (x.ndim - 1)
    padded = np.pad(x, pad, mode="edge")
    csum = np.cumsum(padded, axis=0)
    csum = np.concatenate([np.zeros_like(csum[:1]), csum])
    return (csum[window:] - csum[:-window]) / window


def jitter_from_landmarks(landmarks: np.ndarray, window: int = JITTER_SMOOTH_FRAMES) -> float:
    """Mean distance of landmarks to their temporal moving average, in inter-ocular distances."""
    _need_faces(landmarks, "landmark_jitter", window + 1)
    filled = nan_interpolate(landmarks)                                     # (T, 68, 2)
    residual = np.linalg.norm(filled - _moving_average(filled, window), axis=-1)  # (T, 68)
    return float(np.mean(residual.mean(axis=1) / np.nanmedian(interocular(landmarks))))


@register_metric(name="landmark_jitter", kind="motion", higher_is_better=False, requires=_DLIB_REQUIRES,
                 checks=_DLIB_CHECKS,
                 unit="inter-ocular",
                 variant=f"dlib 68 points; residual to a centred {JITTER_SMOOTH_FRAMES}-frame moving "
                         "average; divided by the median inter-ocular distance",
                 description="High-frequency landmark jitter (compare with the same number on real footage).")
def landmark_jitter(sample: EvalSample, window: int = JITTER_SMOOTH_FRAMES) -> float:
    """Landmark jitter after smoothing, relative to the inter-ocular distance."""
    return jitter_from_landmarks(cached_landmarks68(sample), window)


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Mean eye aspect ratio of both eyes (Soukupová & Čech 2016) per frame; (T,)."""
    def ear(eye: np.ndarray) -> np.ndarray:  # (T, 6, 2)
        vertical = np.linalg.norm(eye[:, 1] - eye[:, 5], axis=-1) + np.linalg.norm(eye[:, 2] - eye[:, 4], axis=-1)
        return vertical / (2 * np.linalg.norm(eye[:, 0] - eye[:, 3], axis=-1))
    return (ear(landmarks[:, 36:42]) + ear(landmarks[:, 42:48])) / 2


def count_blinks(ear: np.ndarray, ratio: float = BLINK_EAR_RATIO, min_frames: int = BLINK_MIN_FRAMES) -> int:
    """Runs of at least ``min_frames`` frames with EAR below ``ratio`` x median EAR."""
    closed = np.nan_to_num(ear, nan=np.inf) < ratio * np.nanmedian(ear)
    edges = np.diff(np.concatenate([[0], closed.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(np.sum(stops - starts >= min_frames))


@register_metric(name="blink_rate", kind="motion", higher_is_better=True, requires=_DLIB_REQUIRES,
                 checks=_DLIB_CHECKS,
                 outputs=["blinks_per_min", "ear_mean"], directions={"blinks_per_min": None, "ear_mean": None}, unit="1/min",
                 variant=f"dlib eye aspect ratio; blink = at least {BLINK_MIN_FRAMES} frames below "
                         f"{BLINK_EAR_RATIO} x median EAR",
                 description="Blinks per minute (real speakers: roughly 10-20; compare with real footage).")
def blink_rate(sample: EvalSample) -> dict[str, float]:
    """Blinks per minute and the mean eye aspect ratio."""
    landmarks = cached_landmarks68(sample)
    _need_faces(landmarks, "blink_rate", BLINK_MIN_FRAMES + 1)
    ear = eye_aspect_ratio(landmarks)
    minutes = len(sample.frames) / FPS / 60
    return {"blinks_per_min": count_blinks(ear) / minutes, "ear_mean": float(np.nanmean(ear))}


# Generic 3D face (mm) for nose tip 30, chin 8, eye outer corners 36/45, mouth corners 48/54, in
# camera axes (x right, y down, z away from the camera) so that a frontal face has zero rotation.
_POSE_POINTS = [30, 8, 36, 45, 48, 54]
_POSE_MODEL = np.array([[0.0, 0.0, 0.0], [0.0, 330.0, 65.0], [-225.0, -170.0, 135.0],
                        [225.0, -170.0, 135.0], [-150.0, 150.0, 125.0], [150.0, 150.0, 125.0]])


def head_pose(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Yaw, pitch, roll in degrees per frame from solvePnP on 6 landmarks; (T, 3), NaN without a face.

    The camera is a pinhole with focal length = image width and the principal point at the centre;
    each frame starts from the frontal pose in front of the camera (no flipped solutions).
    """
    import cv2

    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)
    out = np.full((len(landmarks), 3), np.nan)
    for t, points in enumerate(landmarks):
        if not np.isfinite(points).all():
            continue
        rvec = np.zeros((3, 1))
        tvec = np.array([[0.0], [0.0], [float(width) * 3]])  # a face about a third of the frame wide
        ok, rvec, tvec = cv2.solvePnP(_POSE_MODEL, points[_POSE_POINTS].astype(np.float64), camera, None,
                                      rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            continue
        angles = cv2.RQDecomp3x3(cv2.Rodrigues(rvec)[0])[0]  # (pitch, yaw, roll) about x, y, z
        out[t] = (angles[1], angles[0], angles[2])
    return out


@register_metric(name="head_motion", kind="motion", higher_is_better=True, requires=_DLIB_REQUIRES,
                 checks=_DLIB_CHECKS,
                 outputs=["yaw_std", "pitch_std", "roll_std", "angular_speed"],
                 directions={"yaw_std": None, "pitch_std": None, "roll_std": None, "angular_speed": None},
                 unit="deg, deg/s",
                 variant="dlib 68 points; solvePnP (6 points, generic face, f = width); std over the clip "
                         "and mean angular speed after a 5-frame moving average",
                 description="Head-pose statistics (informational: compare with real footage).")
def head_motion(sample: EvalSample) -> dict[str, float]:
    """Standard deviation of yaw/pitch/roll (deg) and mean angular speed (deg/s)."""
    landmarks = cached_landmarks68(sample)
    _need_faces(landmarks, "head_motion")
    pose = head_pose(landmarks, sample.frames.shape[2], sample.frames.shape[1])
    smooth = _moving_average(nan_interpolate(pose), JITTER_SMOOTH_FRAMES)  # landmark noise removed
    speed = np.linalg.norm(np.diff(smooth, axis=0), axis=1) * FPS
    std = np.nanstd(pose, axis=0)
    return {"yaw_std": float(std[0]), "pitch_std": float(std[1]), "roll_std": float(std[2]),
            "angular_speed": float(np.nanmean(speed))}


def static_mask(shape: tuple[int, int], boxes: np.ndarray, margin: float = FLICKER_BOX_MARGIN) -> np.ndarray:
    """True for pixels outside every face box enlarged by ``margin`` x its size on each side; (H, W)."""
    h, w = shape
    mask = np.ones((h, w), bool)
    for x, y, bw, bh in boxes[np.isfinite(boxes).all(axis=1)]:
        x0, y0 = int(max(0, x - margin * bw)), int(max(0, y - margin * bh))
        x1, y1 = int(min(w, x + (1 + margin) * bw)), int(min(h, y + (1 + margin) * bh))
        mask[y0:y1, x0:x1] = False
    return mask


def flicker_in_mask(frames: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute grey-level difference of consecutive frames over the ``mask`` pixels (0..255)."""
    if mask.mean() < 0.01:
        raise ValueError(f"flicker: only {mask.mean():.1%} of the pixels lie outside the face region "
                         "(the face fills the frame); flicker needs some static background")
    grey = frames[:, mask].astype(np.float32).mean(axis=-1)       # (T, P)
    return float(np.abs(np.diff(grey, axis=0)).mean())


def flicker_per_pair(frames: np.ndarray, boxes: np.ndarray, margin: float = FLICKER_BOX_MARGIN) -> np.ndarray:
    """Flicker of each consecutive pair outside both frames' enlarged face boxes; (T - 1,), NaN when
    less than 1% of the pixels are static in that pair."""
    out = np.full(len(frames) - 1, np.nan)
    for t in range(1, len(frames)):
        mask = static_mask(frames.shape[1:3], boxes[t - 1:t + 1], margin)
        if mask.mean() >= 0.01:
            diff = np.abs(frames[t][mask].astype(np.float32) - frames[t - 1][mask].astype(np.float32))  # (P, 3)
            out[t - 1] = diff.mean()
    return out


@register_metric(name="flicker", kind="motion", higher_is_better=False, weights=[YUNET], requires=["cv2"],
                 unit="grey levels",
                 variant="mean |frame_t - frame_t-1| (RGB, 0..255) outside both frames' YuNet face boxes "
                         "enlarged by 20% per side",
                 description="Temporal flicker of the static background.")
def flicker(sample: EvalSample) -> float:
    """Frame-difference flicker in the static (non-face) region."""
    if len(sample.frames) < 2:
        raise ValueError("flicker needs at least 2 frames")
    per_pair = flicker_per_pair(sample.frames, cached_yunet(sample)[:, :4])
    if not np.isfinite(per_pair).any():
        raise ValueError("flicker: the face fills every frame; no static background to measure")
    return float(np.nanmean(per_pair))
