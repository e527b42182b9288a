"""Training datasets over a tiny prepared folder written here: shapes, alignment, determinism, errors."""

from __future__ import annotations

import csv
import wave

import numpy as np
import pytest
import torch

from hub import SAMPLES_PER_FRAME
from hub.data.datasets import AudioVideoWindowDataset, ClipIndex, SyntheticAVDataset, VideoWindowDataset
from hub.media import write_video

SIZE = 32
CLIPS = {"a": ("train", 30), "b": ("train", 40), "v": ("val", 30), "m": ("motion", 20)}


def level(k: int) -> int:
    """Grey level of frame k (frames are flat, so H.264 keeps them to about +-1)."""
    return 20 + 5 * k


def write_wav(path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16_000)
        handle.writeframes((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    for sub in ("clips", "audio", "landmarks"):
        (root / sub).mkdir()
    rows = []
    for cid, (split, n) in CLIPS.items():
        frames = np.stack([np.full((SIZE, SIZE, 3), level(k), np.uint8) for k in range(n)])  # (T, S, S, 3)
        write_video(root / "clips" / f"{cid}.mp4", frames, crf=0, preset="ultrafast")
        audio = np.repeat(np.arange(n, dtype=np.float32) / 100.0, SAMPLES_PER_FRAME)  # frame k -> k / 100
        write_wav(root / "audio" / f"{cid}.wav", audio)
        marks = np.tile(np.arange(n, dtype=np.float32)[:, None, None], (1, 5, 2))  # (T, 5, 2)
        np.save(root / "landmarks" / f"{cid}.npy", marks)
        rows.append({"id": cid, "split": split, "identity": cid, "frames": n, "fps": 25, "seconds": n / 25,
                     "path": f"clips/{cid}.mp4", "audio_path": f"audio/{cid}.wav",
                     "landmarks_path": f"landmarks/{cid}.npy", "size": SIZE, "source": "test", "has_audio": 1})
    with open(root / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_clip_index_filters_and_refuses_val(prepared, tmp_path):
    assert [r.id for r in ClipIndex.load(prepared)] == ["a", "b"]
    assert [r.id for r in ClipIndex.load(prepared, ["train", "motion"], min_frames=25)] == ["a", "b"]
    with pytest.raises(ValueError, match="held out for evaluation"):
        ClipIndex.load(prepared, ["train", "val"])
    assert [r.id for r in ClipIndex.load(prepared, "val", allow_val=True)] == ["v"]
    with pytest.raises(ValueError, match=r"no prepared clips in .*index.csv; run `python -m hub.data prepare"):
        ClipIndex.load(tmp_path)
    with pytest.raises(ValueError, match="prepared data folder .* not found; run `python -m hub.data prepare"):
        ClipIndex.load(tmp_path / "missing")
    (tmp_path / "index.csv").write_text("id,split,identity,frames,fps,seconds,path,audio_path,landmarks_path\n")
    with pytest.raises(ValueError, match="it is empty"):
        ClipIndex.load(tmp_path)
    with pytest.raises(ValueError, match=r"no clips of split \['nope'\].*splits present: \['motion', 'train', 'val'\]"):
        ClipIndex.load(prepared, "nope")


def test_video_windows_shapes_order_and_stills(prepared):
    index = ClipIndex.load(prepared)
    stills = np.full((2, 48, 48, 3), 200, np.uint8)
    data = VideoWindowDataset(index, num_frames=5, size=16, samples_per_epoch=12, seed=3, stills=stills,
                              still_prob=0.3)
    items = [data[i] for i in range(12)]
    assert len(data) == 12 and all(it["video"].shape == (3, 5, 16, 16) for it in items)
    assert any(it["still"] for it in items) and not all(it["still"] for it in items)
    for it in items:
        grey = ((it["video"].mean(dim=(0, 2, 3)) + 1) * 127.5).numpy()  # (T,) mean level per frame
        if it["still"]:
            assert np.allclose(grey, 200, atol=1)
        else:  # consecutive frames of one clip
            assert np.allclose(np.diff(grey), 5, atol=1.5), grey
    assert float(items[0]["video"].min()) >= -1 and float(items[0]["video"].max()) <= 1


def test_windows_are_deterministic_per_seed_epoch_index(prepared):
    index = ClipIndex.load(prepared)
    a = VideoWindowDataset(index, num_frames=3, samples_per_epoch=8, seed=1)
    b = VideoWindowDataset(index, num_frames=3, samples_per_epoch=8, seed=1)
    assert all(torch.equal(a[i]["video"], b[i]["video"]) for i in (0, 5, 7))
    first = [a[i]["video"] for i in range(8)]
    a.set_epoch(1)
    assert not all(torch.equal(x, a[i]["video"]) for i, x in enumerate(first))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i]["video"]) for i, x in enumerate(first))


def test_audio_video_windows_align_audio_to_frames(prepared):
    index = ClipIndex.load(prepared, require_audio=True)
    context = 12  # longer than many start offsets: exercises the zero padding
    data = AudioVideoWindowDataset(index, num_latent_frames=2, frames_per_latent=4, audio_context_frames=context,
                                   samples_per_epoch=16, seed=0, ref_min_distance=5, with_landmarks=True)
    t = 1 + 2 * 4
    saw_pad = False
    for i in range(16):
        item = data[i]
        assert item["video"].shape == (3, t, SIZE, SIZE) and item["reference"].shape == (3, SIZE, SIZE)
        assert item["audio"].shape == ((context + t) * SAMPLES_PER_FRAME,) and item["audio"].dtype == torch.float32
        start, ref = item["start"], item["ref_index"]
        assert ref < start or ref >= start + t
        per_frame = item["audio"].view(context + t, SAMPLES_PER_FRAME)[:, SAMPLES_PER_FRAME // 2]  # (C + T,)
        expected = np.arange(start - context, start + t) / 100.0
        expected[expected < 0] = 0.0  # context before the clip start is zeros
        assert np.allclose(per_frame.numpy(), expected, atol=1e-3), (start, per_frame)
        assert item["audio_pad"] == max(0, context - start) * SAMPLES_PER_FRAME
        saw_pad |= item["audio_pad"] > 0
        grey = ((item["video"].mean(dim=(0, 2, 3)) + 1) * 127.5).numpy()
        assert np.allclose(grey, [level(start + k) for k in range(t)], atol=1.5)
        assert np.allclose(item["landmarks"][:, 0, 0].numpy(), np.arange(start, start + t))
    assert saw_pad  # deterministic draws (seed 0) include windows near the clip start


def test_audio_video_batches_collate(prepared):
    data = AudioVideoWindowDataset(ClipIndex.load(prepared), num_latent_frames=1, frames_per_latent=4, size=16,
                                   audio_context_frames=2, samples_per_epoch=4)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["video"].shape == (4, 3, 5, 16, 16) and batch["audio"].shape == (4, 7 * SAMPLES_PER_FRAME)


def test_synthetic_av_mouth_follows_amplitude():
    data = SyntheticAVDataset(num_samples=4, num_frames=9, size=32, audio_context_frames=3, seed=0)
    item = data[2]
    assert item["video"].shape == (3, 9, 32, 32) and item["audio"].shape == (12 * SAMPLES_PER_FRAME,)
    assert torch.equal(item["video"], SyntheticAVDataset(4, 9, 32, 3, seed=0)[2]["video"])
    amp = item["audio"].view(12, SAMPLES_PER_FRAME).abs().amax(dim=1)[3:]  # (T,) loudness per frame
    dark = (item["video"].mean(dim=0) < -0.8).flatten(1).sum(dim=1).float()  # (T,) mouth pixels per frame
    assert torch.corrcoef(torch.stack([amp, dark]))[0, 1] > 0.8


@pytest.mark.parametrize("decoder", ["pyav", "opencv"])
def test_decoded_cache_matches_the_sources_and_is_used(prepared, tmp_path, decoder):
    import shutil

    from hub.data.__main__ import main as data_main
    from hub.data.decoded import read_clip_audio, read_clip_frames
    from hub.media import read_audio, read_video

    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    assert data_main(["decode", "--root", str(root), "--splits", "train", "--decoder", decoder]) == 0
    index = ClipIndex.load(root, "train")
    for record in index:
        frames = np.load(root / "decoded" / f"{record.id}.frames.npy")
        reference = read_video(record.path, with_audio=False).frames[: record.frames]
        assert frames.shape == reference.shape and frames.dtype == np.uint8
        assert np.abs(frames.astype(int) - reference.astype(int)).max() <= 3  # decoders' YUV->RGB
        audio = np.load(root / "decoded" / f"{record.id}.audio.npy")
        np.testing.assert_allclose(audio, read_audio(record.audio_path), atol=1e-4)
    # A second run finds everything current; the readers use the cache.
    assert data_main(["decode", "--root", str(root), "--splits", "train", "--decoder", decoder]) == 0
    record = next(iter(index))
    marker = np.full((record.frames, SIZE, SIZE, 3), 7, np.uint8)
    np.save(root / "decoded" / f"{record.id}.frames.npy", marker)
    assert (read_clip_frames(record.path) == 7).all()
    assert read_clip_audio(record.audio_path).dtype == np.float32


def test_decoded_cache_is_ignored_when_the_source_changed(prepared, tmp_path):
    import shutil

    from hub.data.decoded import decode_prepared, read_clip_frames

    root = tmp_path / "copy"
    shutil.copytree(prepared, root)
    decode_prepared(root, ("train",))
    record = next(iter(ClipIndex.load(root, "train")))
    np.save(root / "decoded" / f"{record.id}.frames.npy", np.zeros((record.frames, SIZE, SIZE, 3), np.uint8))
    with open(record.path, "ab") as handle:  # the source grew: the cached array is stale
        handle.write(b"\0")
    assert read_clip_frames(record.path).max() > 0


def test_decode_refuses_val_and_unknown_decoder(prepared):
    from hub.data.decoded import decode_prepared

    with pytest.raises(ValueError, match="val"):
        decode_prepared(prepared, ("val",))
    with pytest.raises(ValueError, match="accepted: pyav, opencv"):
        decode_prepared(prepared, ("train",), decoder="ffmpeg")
