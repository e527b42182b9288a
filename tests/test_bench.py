"""Streaming benchmarks (``python -m hub bench stream|long-stream``) and the inference fast paths."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hub.engine
from hub import SAMPLES_PER_FRAME
from hub.bench import long_stream, stream
from hub.bench.common import StageClock, load_rest, speech_audio
from hub.engine import EngineSettings, StreamingEngine
from hub.fast_paths import FastPaths, apply_fast_paths, inference_context
from hub.io_utils import sha256_file
from tests.tiny_models import tiny_rest_model

torch.set_num_threads(1)

STREAM_KEYS = {"first_chunk_ms", "algorithmic_latency_ms", "end_to_end_ms", "chunk_ms_p50", "chunk_ms_p95", "fps",
               "rtf", "peak_mem_mb", "device", "stages_ms_per_chunk", "flops_per_chunk", "flops_per_video_second",
               "matmul_flops_per_second", "metadata"}
STAGE_KEYS = {"audio_features", "audio_encoder", "denoise", "cache_write", "vae_decode", "colour_convert",
              "chunk_other", "mp4_encode"}


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.uniform(0, 1, n // 1600 + 1), 1600)[:n]
    return np.clip(0.3 * env * rng.standard_normal(n), -1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return tiny_rest_model()


def test_bench_stream_random_init_reports_every_key(tmp_path, capsys):
    out = tmp_path / "stream.json"
    assert stream.main(["--preset", "test", "--random-init", "--seconds", "0.8", "--warmup-seconds", "0.2",
                        "--threads", "1", "--out", str(out), "--json"]) == 0
    result = json.loads(out.read_text())
    assert STREAM_KEYS <= set(result)
    assert set(result["stages_ms_per_chunk"]) == STAGE_KEYS
    assert result["chunks"] == result["frames"] // 2 and result["frames"] == 20  # test preset: 2 frames per chunk
    assert result["first_chunk_ms"] > 0 and result["chunk_ms_p95"] >= result["chunk_ms_p50"] > 0
    assert result["rtf"] > 0 and result["fps"] > 0 and result["peak_mem_mb"] > 0
    assert result["algorithmic_latency_ms"] == pytest.approx(40.0 * (2 + 1))  # 2-frame chunk + 1 look-ahead
    assert (result["end_to_end_ms"] is None) == (result["rtf"] >= 1.0)
    assert result["stages_ms_per_chunk"]["denoise"] > 0 and result["stages_ms_per_chunk"]["mp4_encode"] > 0
    assert result["flops_by_stage_per_chunk"]["denoise"] > 0 and result["flops_by_stage_per_chunk"]["vae_decode"] > 0
    meta = result["metadata"]
    assert meta["checkpoint_sha256"] is None and meta["random_init"] is True
    assert {"git_commit", "device", "torch", "threads", "checkpoint"} <= set(meta)
    assert "random-init" in capsys.readouterr().out


def test_bench_stream_records_the_checkpoint_hash(tmp_path, model):
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "r.json"
    stream.main(["--checkpoint", str(ckpt), "--seconds", "0.4", "--warmup-seconds", "0.1", "--threads", "1",
                 "--no-mp4", "--out", str(out)])
    meta = json.loads(out.read_text())["metadata"]
    assert meta["checkpoint_sha256"] == sha256_file(ckpt / "model.safetensors")


def test_missing_preset_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found; train it with"):
        load_rest(preset=None, checkpoint=tmp_path / "nope", role="student")
    with pytest.raises(ValueError, match="--random-init and --checkpoint"):
        load_rest(preset="test", checkpoint=tmp_path, random_init=True)


def test_probe_times_every_stage_and_restores_the_engine(model):
    engine = StreamingEngine(model)
    size = model.config.image_size
    crop = np.full((size, size, 3), 100, np.uint8)
    clock = StageClock(torch.device("cpu"))
    original = hub.engine.video_to_uint8
    with stream.EngineProbe(engine, clock) as probe:
        run = stream.stream_once(engine, crop, _speech(0.5), EngineSettings(steps=2), probe=probe)
        assert hub.engine.video_to_uint8 is not original
    assert hub.engine.video_to_uint8 is original
    assert "forward_chunk" not in vars(engine.model.dit) and "write_chunk" not in vars(engine.model.dit)
    assert clock.counts["denoise"] == 2 * run.chunks  # two denoiser evaluations per chunk
    assert clock.counts["cache_write"] == run.chunks and clock.counts["vae_decode"] == run.chunks
    assert len(run.frames) == -(-8000 // SAMPLES_PER_FRAME)


def test_flop_counter_counts_cpu_attention():
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    with stream._flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 4 * 1 * 2 * 5 * 7 * 8  # QK^T and PV: 2 flops per multiply-add each


def _frames(model, paths: FastPaths, audio: np.ndarray) -> np.ndarray:
    threads = torch.get_num_threads()
    try:
        fast = apply_fast_paths(model, paths)
        engine = StreamingEngine(fast)
        size = model.config.image_size
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        image = np.stack([ramp[None].repeat(size, 0), ramp[:, None].repeat(size, 1),
                          np.full((size, size), 90.0, np.float32)], -1).astype(np.uint8)
        with inference_context(paths):
            run = stream.stream_once(engine, image, audio, EngineSettings(steps=2, seed=5))
        return run.frames.astype(np.int16)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("paths, max_diff, mean_diff", [
    (FastPaths(threads=2), 1, 0.01),
    (FastPaths(inference_mode=True), 0, 0.0),
    (FastPaths(channels_last=True), 1, 0.01),
    (FastPaths(int8_linear=True), 8, 0.5),
])
def test_fast_paths_match_the_plain_path(model, paths, max_diff, mean_diff):
    audio = _speech(0.6, seed=3)
    plain = _frames(model, FastPaths(), audio)
    fast = _frames(model, paths, audio)
    assert fast.shape == plain.shape
    diff = np.abs(fast - plain)
    assert diff.max() <= max_diff and diff.mean() <= mean_diff, (diff.max(), diff.mean())


def test_fast_paths_refuse_the_wrong_device(model):
    with pytest.raises(ValueError, match="GPU fast path"):
        apply_fast_paths(model, FastPaths(bf16=True), "cpu")
    with pytest.raises(ValueError, match="exclude"):
        FastPaths(bf16=True, int8_linear=True)


def test_apply_fast_paths_leaves_the_given_model_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_fast_paths(model, FastPaths(int8_linear=True, channels_last=True))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert type(model.dit.blocks[0].attn.qkv) is torch.nn.Linear


def test_speech_audio_has_the_requested_length():
    audio, source = speech_audio(0.5)
    assert audio.dtype == np.float32 and len(audio) == 8000
    assert np.abs(audio).max() > 0.01  # speech, not silence
    assert "speech" in source


def test_long_stream_is_flat_and_bounded(tmp_path):
    out = tmp_path / "long.json"
    assert long_stream.main(["--preset", "test", "--random-init", "--minutes", "0.04", "--every-seconds", "0.8",
                             "--steps", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["samples"]) == 3  # 2.4 s of stream, one sample every 0.8 s
    assert result["positions_bounded"] and result["cache_bytes_constant"]
    assert result["max_position_index"] == result["position_bound"] - 1  # the window is full by then
    assert result["samples"][-1]["cache_chunk_index"] > result["position_bound"]  # more chunks than positions
    assert result["memory_flat"] is not None and result["rtf"] > 0


def test_speech_from_a_npy_array_is_looped_and_checked(tmp_path):
    from hub.bench.common import speech_audio

    base = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    np.save(tmp_path / "s.npy", base)
    audio, source = speech_audio(2.5, str(tmp_path / "s.npy"))
    assert audio.shape == (40000,) and np.array_equal(audio[16000:32000], base) and "s.npy" in source
    np.save(tmp_path / "bad.npy", base.astype(np.float64))
    with pytest.raises(ValueError, match="float32"):
        speech_audio(1.0, str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="no such file"):
        speech_audio(1.0, str(tmp_path / "missing.npy"))
