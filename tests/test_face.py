import warnings

import numpy as np
import pytest

from hub import face, media, settings


@pytest.fixture(scope="module")
def analyzer(shared_data):
    with face.FaceAnalyzer(max_faces=4) as fa:
        yield fa


def _inside(points: np.ndarray, box: face.CropBox) -> bool:
    x, y = points[:, 0], points[:, 1]
    return bool(
        (x >= box.x0).all() and (x <= box.x0 + box.side).all()
        and (y >= box.y0).all() and (y <= box.y0 + box.side).all()
    )


def test_detect_portrait_landmarks_and_blendshapes(analyzer, shared_data):
    image = media.read_image(shared_data / "portraits" / "hallo_1.jpg")
    faces = analyzer.detect(image)
    assert len(faces) == 1
    f = faces[0]
    assert f.landmarks.shape == (face.NUM_LANDMARKS, 2) and f.landmarks.dtype == np.float32
    h, w = image.shape[:2]
    assert (f.landmarks[:, 0] >= 0).all() and (f.landmarks[:, 0] < w).all()
    assert (f.landmarks[:, 1] >= 0).all() and (f.landmarks[:, 1] < h).all()
    assert "jawOpen" in f.blendshapes and len(f.blendshapes) == 52
    assert 0.1 * w < f.size < w


def test_crop_box_contains_landmarks_on_shared_frame(analyzer, shared_data):
    _, frame = next(media.iter_video_frames(shared_data / "clips" / "hdtf_aoc_wda.mp4"))
    landmarks = analyzer.detect(frame)[0].landmarks
    for scale in (1.8, 2.0, 2.2):
        assert _inside(landmarks, face.square_crop_box(landmarks, frame.shape, scale=scale))
        box = face.square_crop_box(landmarks, frame.shape, scale=scale, min_scale=None)
        assert _inside(landmarks, box)
        size = max(np.ptp(landmarks[:, 0]), np.ptp(landmarks[:, 1]))
        assert box.side == pytest.approx(scale * size, abs=1.0)
        crop = face.crop_square(frame, box, 96)
        assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
        inner = box.to_crop_coords(landmarks, 96)
        assert (inner >= 0).all() and (inner <= 96).all()


def test_crop_pads_at_borders_without_distortion():
    image = np.arange(20 * 30 * 3, dtype=np.int64).reshape(20, 30, 3).astype(np.uint8)
    landmarks = np.array([[0.0, 0.0], [10.0, 10.0]])  # face in the top-left corner
    box = face.square_crop_box(landmarks, image.shape, scale=2.5, min_scale=None)  # side 25 > H
    assert box.side == 25 and box.x0 == 0  # shifted inside horizontally (fits: 25 <= 30)
    assert box.y0 < 0 or box.y0 + box.side > 20  # cannot fit vertically: padded
    crop = face.crop_square(image, box, 25)  # no resize: pixels must be copied 1:1
    top = -box.y0  # rows of padding above the image
    rows = min(20, box.y0 + box.side)  # image rows inside the box
    assert top > 0
    np.testing.assert_array_equal(crop[top : top + rows], image[:rows, :25])
    np.testing.assert_array_equal(crop[:top], np.repeat(image[:1, :25], top, axis=0))  # edge pad
    black = face.crop_square(image, face.CropBox(-5, -5, 10), 10, pad_mode="constant")
    assert (black[:5] == 0).all() and np.array_equal(black[5:, 5:], image[:5, :5])


def test_crop_shrinks_to_fit_before_padding():
    shape = (224, 224, 3)
    landmarks = np.array([[62.0, 52.0], [162.0, 172.0]])  # face 120 px in a 224 px frame
    box = face.square_crop_box(landmarks, shape, scale=2.0)  # 240 does not fit: shrink to 224
    assert (box.x0, box.y0, box.side) == (0, 0, 224)
    tight = face.square_crop_box(landmarks, shape, scale=2.0, min_scale=1.9)  # 228 > 224: pad
    assert tight.side == 228 and tight.x0 < 0
    huge = np.array([[0.0, 0.0], [200.0, 200.0]])
    assert face.square_crop_box(huge, shape, scale=2.0).side == 300  # never below 1.5 x face
    assert face.square_crop_box(huge, shape, scale=1.2).side == 240  # min_scale capped at scale


def test_track_clip_boxes_fixed_and_smoothed():
    rng = np.random.default_rng(0)
    base = np.array([[40.0, 50.0], [80.0, 100.0]])  # box 40 x 50
    dets = [base + rng.normal(0, 1.0, 2) for _ in range(9)]
    dets[3] = None  # a frame without a face
    boxes = face.track_clip_boxes(dets, (200, 200, 3), scale=2.0)
    assert len(boxes) == 9 and len(set(boxes)) == 1
    assert boxes[0].side == pytest.approx(100, abs=2)
    assert abs(boxes[0].x0 + boxes[0].side / 2 - 60) <= 2 and abs(boxes[0].y0 + boxes[0].side / 2 - 75) <= 2
    moving = [base + np.array([i * 2.0, 0.0]) for i in range(9)]
    smooth = face.track_clip_boxes(moving, (200, 200, 3), window=3)
    assert [b.x0 for b in smooth] == sorted(b.x0 for b in smooth) and smooth[0].x0 < smooth[-1].x0
    with pytest.raises(ValueError, match="no face found in any frame"):
        face.track_clip_boxes([None, None], (10, 10, 3))
    with pytest.raises(ValueError, match="odd positive"):
        face.track_clip_boxes(moving, (200, 200, 3), window=4)


def test_crop_reference_on_shared_portrait(analyzer, shared_data):
    path = shared_data / "portraits" / "sadtalker_people_0.png"
    crop = face.crop_reference(path, 128, analyzer=analyzer)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    faces = analyzer.detect(crop)
    assert len(faces) == 1
    centre = (faces[0].box[:2] + faces[0].box[2:]) / 2
    assert np.all(np.abs(centre - 64) < 16)  # face centred in the crop
    assert 128 / 2.6 < faces[0].size < 128 / 1.5  # about half the crop (scale 2.0)


def test_crop_reference_no_face():
    yy, xx = np.mgrid[0:200, 0:240]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    with pytest.raises(ValueError, match="no face found in gradient.png; use a photo"):
        face.crop_reference(image, 64, name="gradient.png")


def test_crop_reference_several_faces_warns(analyzer, shared_data):
    big = media.read_image(shared_data / "portraits" / "hallo_2.jpg")
    small = media.read_image(shared_data / "portraits" / "hallo_3.jpg")
    import cv2

    h = big.shape[0]
    small = cv2.resize(small, (h // 2 * small.shape[1] // small.shape[0], h // 2))
    canvas = np.full((h, big.shape[1] + small.shape[1], 3), 255, np.uint8)
    canvas[:, : big.shape[1]] = big
    canvas[h // 4 : h // 4 + small.shape[0], big.shape[1] :] = small
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        crop = face.crop_reference(canvas, 64, analyzer=analyzer, name="two.png")
    assert any(issubclass(w.category, face.MultipleFacesWarning) for w in caught)
    assert crop.shape == (64, 64, 3)
    faces = analyzer.detect(canvas)
    assert faces[0].area > faces[1].area  # largest first


def test_missing_weights_error(monkeypatch, tmp_path):
    monkeypatch.setattr(settings, "weights_dirs", lambda: [tmp_path])
    with pytest.raises(ValueError, match="face_landmarker_v2_with_blendshapes.task not found"):
        face.FaceAnalyzer()


def test_detect_rejects_bad_frames(analyzer):
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        analyzer.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        analyzer.detect(np.zeros((10, 10, 3), np.float32))
