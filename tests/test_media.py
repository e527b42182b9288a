import csv
import json
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from helpers_media import decode_index, encode_audio, encode_video, index_frames, sine

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, media
from hub.settings import InputLimits


def smooth_frames(t: int, h: int = 48, w: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3): a moving colour gradient (compresses well, so round trips are tight)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (xx * 3 + i * 4) % 256
        out[i, ..., 1] = (yy * 4) % 256
        out[i, ..., 2] = 128
    return out


# ---------------------------------------------------------------------------------- round trips


def test_write_read_round_trip(tmp_path):
    frames = smooth_frames(30)
    audio = sine(30 / FPS, SAMPLE_RATE)[0]  # (19200,)
    path = media.write_video(tmp_path / "clip.mp4", frames, audio)
    info = media.probe(path)
    assert (info.video_codec, info.audio_codec, info.width, info.height) == ("h264", "aac", 64, 48)
    assert info.fps == pytest.approx(FPS)
    clip = media.read_video(path)
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    assert np.abs(clip.frames.astype(int) - frames).mean() < 3.0
    assert clip.audio.shape == (30 * SAMPLES_PER_FRAME,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio - audio).max() < 0.03  # AAC, aligned (priming removed)
    assert not clip.silent
    assert not list(tmp_path.glob(".*")), "atomic writer left a temporary file"


def test_odd_size_is_padded_to_even(tmp_path):
    frames = smooth_frames(5, 33, 47)
    clip = media.read_video(media.write_video(tmp_path / "odd.mp4", frames), with_audio=False)
    assert clip.frames.shape == (5, 34, 48, 3)
    assert np.abs(clip.frames[:, :33, :47].astype(int) - frames).mean() < 3.0


@pytest.mark.parametrize(
    "fps, codec, suffix",
    [
        (30, "libx264", ".mp4"),
        (Fraction(30000, 1001), "libx264", ".mov"),
        (25, "mpeg4", ".avi"),
        (30, "libvpx-vp9", ".webm"),
        (30, "hevc", ".mkv"),
    ],
)
def test_resampling_to_25_fps_by_timestamps(tmp_path, fps, codec, suffix):
    n = 30
    path = encode_video(tmp_path / f"src{suffix}", index_frames(n), fps, codec)
    clip = media.read_video(path, with_audio=False)
    duration = n / float(fps)
    assert clip.num_frames == round(duration * FPS)
    assert clip.source_fps == pytest.approx(float(fps), rel=1e-3)
    for k, frame in enumerate(clip.frames):
        expected = int(np.floor(k * float(fps) / FPS + 1e-6))  # latest source frame <= k / 25
        assert decode_index(frame) == expected, (k, expected)
    streamed = list(media.iter_video_frames(path))
    assert [k for k, _ in streamed] == list(range(clip.num_frames))
    assert all(np.array_equal(f, clip.frames[k]) for k, f in streamed)


def test_max_seconds_and_audio_alignment(tmp_path):
    audio = sine(2.0, 44_100, channels=2)  # (2, N) stereo 44.1 kHz
    path = encode_video(tmp_path / "a.mp4", index_frames(30), 15, audio=audio)
    clip = media.read_video(path, max_seconds=1.0)
    assert clip.num_frames == 25
    assert clip.audio.shape == (25 * SAMPLES_PER_FRAME,)
    full = media.read_video(path)
    assert full.num_frames == 50  # 30 frames at 15 fps = 2 s
    assert full.audio.shape == (50 * SAMPLES_PER_FRAME,)
    reference = sine(2.0, SAMPLE_RATE)[0]
    assert np.abs(full.audio[2000:30000] - reference[2000:30000]).max() < 0.05


# ---------------------------------------------------------------------------------- audio


@pytest.mark.parametrize(
    "codec, suffix, fmt, tol",
    [
        ("pcm_s24le", ".wav", "wav", 1e-3),
        ("pcm_f32le", ".wav", "wav", 1e-3),
        ("pcm_s16le", ".wav", "wav", 1e-3),
        ("pcm_u8", ".wav", "wav", 3e-2),
        ("flac", ".flac", "flac", 1e-3),
        ("libmp3lame", ".mp3", "mp3", 0.1),
        ("aac", ".m4a", "ipod", 0.1),
        ("libopus", ".ogg", "ogg", 0.1),
    ],
)
def test_read_audio_formats(tmp_path, codec, suffix, fmt, tol):
    rate = 48_000 if codec in ("libopus",) else 44_100
    stereo = sine(1.0, rate, channels=2)
    stereo[1] *= 0.5  # different channels: the mono mix is their mean
    path = encode_audio(tmp_path / f"a{suffix}", stereo, rate, codec, fmt)
    audio = media.read_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - SAMPLE_RATE) <= 1200  # codec padding / frame granularity
    expected = 0.75 * sine(1.0, SAMPLE_RATE)[0]  # mean of 1.0x and 0.5x
    # relative RMS error over the middle, at the best shift (lossy codecs delay the start a little)
    ref = expected[4000:12000]
    best = min(
        np.sqrt(np.mean((audio[4000 + d : 12000 + d] - ref) ** 2) / np.mean(ref**2))
        for d in range(-600, 601)
        if 12000 + d <= audio.shape[0]
    )
    assert best < tol


def test_read_audio_shared_24bit_wav_and_video(shared_data):
    audio = media.read_audio(shared_data / "speech" / "sadtalker_deyu.wav")  # pcm_s24le 48k stereo
    assert abs(audio.shape[0] / SAMPLE_RATE - 9.34) < 0.05
    assert 0.05 < np.abs(audio).max() <= 1.0
    from_video = media.read_audio(shared_data / "clips" / "hdtf_radio10_clip0.mp4")
    assert abs(from_video.shape[0] / SAMPLE_RATE - 2.11) < 0.1


def test_is_silent():
    assert media.is_silent(None)
    assert media.is_silent(np.zeros(16000, np.float32))
    assert media.is_silent(np.full(16000, 1e-4, np.float32))
    assert not media.is_silent(sine(1.0, SAMPLE_RATE)[0])


def test_video_without_audio_track(shared_data):
    clip = media.read_video(shared_data / "clips" / "liveportrait_d0.mp4")
    assert clip.audio is None and clip.silent
    with pytest.raises(ValueError, match="no audio stream"):
        media.read_audio(shared_data / "clips" / "liveportrait_d0.mp4")


# ---------------------------------------------------------------------------------- images


def test_read_image_respects_exif_orientation(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    out = media.read_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 20, 3) and out.dtype == np.uint8
    rgba = Image.new("RGBA", (8, 6), (0, 0, 0, 0))
    rgba.save(tmp_path / "alpha.png")
    assert media.read_image(tmp_path / "alpha.png").shape == (6, 8, 3)


# ---------------------------------------------------------------------------------- errors


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        media.read_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    for reader in (media.read_video, media.read_audio, media.read_image, media.probe):
        with pytest.raises(ValueError, match="empty.mp4: file is empty"):
            reader(tmp_path / "empty.mp4")


def test_text_file_as_video_and_image(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(ValueError, match="notes.mp4: not a readable media file"):
        media.read_video(path)
    with pytest.raises(ValueError, match="notes.mp4: not a readable image"):
        media.read_image(path)


def test_truncated_shared_clip(shared_data, tmp_path):
    data = (shared_data / "clips" / "hdtf_aoc_wda.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.mp4: .*(truncated|corrupt)"):
        media.read_video(cut)
    with pytest.raises(ValueError, match="cut.mp4: .*(truncated|corrupt)"):
        list(media.iter_video_frames(cut))


def test_truncated_wav(shared_data, tmp_path):
    data = (shared_data / "speech" / "hallo_1.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.wav: truncated or corrupt audio"):
        media.read_audio(cut)


def test_image_as_audio_and_audio_as_video(shared_data):
    with pytest.raises(ValueError, match="hallo_1.jpg: no audio stream"):
        media.read_audio(shared_data / "portraits" / "hallo_1.jpg")
    with pytest.raises(ValueError, match="hallo_1.wav: no video stream"):
        media.read_video(shared_data / "speech" / "hallo_1.wav")


def test_limits(shared_data):
    clip = shared_data / "clips" / "hdtf_radio10_clip0.mp4"  # 512x512, 2.1 s
    with pytest.raises(ValueError, match="512x512, over the limit of 256"):
        media.read_video(clip, limits=InputLimits(max_video_side=256))
    with pytest.raises(ValueError, match="over the limit of 1 s"):
        media.read_video(clip, limits=InputLimits(max_video_seconds=1.0))
    assert media.read_video(clip, max_seconds=0.8, limits=InputLimits(max_video_seconds=1.0)).num_frames == 20
    with pytest.raises(ValueError, match="over the limit of 0 MB"):
        media.probe(clip, limits=InputLimits(max_file_mb=0.01))
    with pytest.raises(ValueError, match="over the limit of 1 s"):
        media.read_audio(shared_data / "speech" / "hallo_1.wav", limits=InputLimits(max_audio_seconds=1.0))
    with pytest.raises(ValueError, match="megapixels"):
        media.read_image(shared_data / "portraits" / "hallo_1.jpg", limits=InputLimits(max_image_pixels=1000))


def test_writer_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        media.write_video(tmp_path / "x.mp4", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        media.write_video(tmp_path / "x.mp4", np.zeros((2, 4, 4, 3), np.float32))
    assert not (tmp_path / "x.mp4").exists()


# ---------------------------------------------------------------------------------- shared clips


REPRESENTATIVE = [
    "hdtf_aoc_wda.mp4",  # MPEG-4 Part 2, 25 fps
    "hdtf_radio10_clip0.mp4",  # H.264 29.97 fps
    "retalk_face1.mp4",  # H.264 30 fps (variable frame timing)
    "eamm_M030_sad_3_001.mp4",  # 1920x1080, 1000000/33333 fps
]


def _manifest_clips(shared_data, names=None):
    with open(shared_data / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == "clip"]
    return [r for r in rows if names is None or r["file"].split("/")[-1] in names]


def _check_count(shared_data, row):
    import av

    path = shared_data / row["file"]
    count = sum(1 for _ in media.iter_video_frames(path))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        video_seconds = float(stream.duration * stream.time_base)
    # the manifest's duration is the container's (longest stream, audio included): +-2 frames;
    # the video stream's own duration: +-1 frame
    assert abs(count - float(row["duration_s"]) * FPS) <= 2, (row["file"], count)
    assert abs(count - video_seconds * FPS) <= 1, (row["file"], count, video_seconds)


def test_representative_shared_clips_frame_count(shared_data):
    for row in _manifest_clips(shared_data, REPRESENTATIVE):
        _check_count(shared_data, row)


@pytest.mark.slow
def test_every_shared_clip_frame_count(shared_data):
    rows = _manifest_clips(shared_data)
    assert len(rows) >= 50
    for row in rows:
        _check_count(shared_data, row)


# ---------------------------------------------------------------------------------- chunks


def _ffprobe_streams(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)],
        capture_output=True, check=True, text=True,
    ).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not on PATH")
def test_chunk_writer_exact_durations(tmp_path):
    frames = smooth_frames(24, 64, 64)
    audio = sine(24 / FPS, SAMPLE_RATE)[0]
    with media.ChunkWriter(tmp_path / "out") as writer:
        for start in (0, 8, 16):  # three chunks of 8 frames = 0.32 s
            writer.write(frames[start : start + 8], audio[start * 640 : (start + 8) * 640])
    full = writer.close()
    assert len(writer.chunk_paths) == 3
    for path in writer.chunk_paths:
        streams = _ffprobe_streams(path)
        assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "alac"
        assert float(streams["video"]["duration"]) == pytest.approx(0.32, abs=1e-6)
        assert float(streams["audio"]["duration"]) == pytest.approx(0.32, abs=1e-6)
        assert float(streams["video"].get("start_time", 0)) == 0.0
    back = media.read_video(writer.chunk_paths[1])
    assert back.num_frames == 8
    assert np.abs(back.audio - audio[8 * 640 : 16 * 640]).max() < 1e-3  # ALAC is lossless (16-bit)
    streams = _ffprobe_streams(full)
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    whole = media.read_video(full)
    assert whole.num_frames == 24
    assert np.abs(whole.frames.astype(int) - frames).mean() < 3.0
    assert np.abs(whole.audio - audio).max() < 0.03


def test_chunk_writer_rejects_mismatched_audio(tmp_path):
    writer = media.ChunkWriter(tmp_path / "out", keep_full=False)
    with pytest.raises(ValueError, match="need exactly 3200"):
        writer.write(smooth_frames(5), np.zeros(3000, np.float32))
    writer.write(smooth_frames(5), np.zeros(3200, np.float32))
    with pytest.raises(ValueError, match="differs from the first"):
        writer.write(smooth_frames(5, 32, 32), np.zeros(3200, np.float32))
    with pytest.raises(ValueError, match="every chunk must have audio"):
        writer.write(smooth_frames(5), None)
    assert writer.close() is None
    assert [p.name for p in writer.chunk_paths] == ["chunk_00000.mp4"]


def test_without_pyav_images_work_and_audio_video_say_what_is_missing(tmp_path, monkeypatch):
    import hub.media as media
    from PIL import Image

    image = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF" + b"\0" * 64)
    monkeypatch.setattr(media, "av", None)
    assert media.read_image(tmp_path / "a.png").shape == (8, 8, 3)
    with pytest.raises(ValueError, match="PyAV"):
        media._open(wav)
    with pytest.raises(ValueError, match="PyAV"):
        media.write_video(tmp_path / "out.mp4", np.zeros((2, 16, 16, 3), np.uint8))
    assert not (tmp_path / "out.mp4").exists()


def test_wav_missing_a_few_trailing_bytes_still_decodes(tmp_path):
    import wave

    path = tmp_path / "short.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(np.zeros((16000, 2), "<i2").tobytes())  # 1 s
    data = path.read_bytes()
    (tmp_path / "minus4.wav").write_bytes(data[:-4])  # the last sample frame is missing
    assert abs(media.read_audio(tmp_path / "minus4.wav").shape[0] - 16000) <= 1
    (tmp_path / "minus10pc.wav").write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(ValueError, match="minus10pc.wav: truncated or corrupt audio"):
        media.read_audio(tmp_path / "minus10pc.wav")
