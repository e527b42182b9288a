import threading

import numpy as np
import pytest
import torch

from hub import SAMPLES_PER_FRAME
from hub.engine import EngineSettings, StreamingEngine
from hub.pipeline import decode_stream, encode_reference, generate_student_latents, stream_audio_tokens, \
    video_to_uint8
from tests.tiny_models import tiny_rest_model


def _reference(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (size, size, 3), dtype=np.uint8)


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.uniform(0, 1, n // 1600 + 1), 1600)[:n]
    return np.clip(0.3 * env * rng.standard_normal(n), -1, 1).astype(np.float32)


def _stream(engine, audio, piece):
    chunks = []
    for start in range(0, len(audio), piece):
        chunks += engine.push(audio[start:start + piece])
    chunks += engine.flush()
    return chunks


@pytest.fixture(scope="module")
def model():
    return tiny_rest_model()


def test_engine_equals_offline_rollout(model):
    engine = StreamingEngine(model)
    ref_img = _reference(model.config.image_size)
    audio = _speech(1.3)
    engine.reset(ref_img, EngineSettings(steps=2, seed=7), already_cropped=True)
    chunks = _stream(engine, audio, piece=1234)
    frames = np.concatenate([c.frames for c in chunks])
    assert len(frames) == -(-len(audio) // SAMPLES_PER_FRAME)  # trimmed to the audio length
    assert [c.start_frame for c in chunks] == list(np.cumsum([0] + [len(c.frames) for c in chunks[:-1]]))

    with torch.no_grad():
        ref = encode_reference(model, ref_img)
        tokens = stream_audio_tokens(model, audio)
        latents = generate_student_latents(model, ref, tokens, steps=2, generator=torch.Generator().manual_seed(7))
        offline = video_to_uint8(decode_stream(model, ref, latents))[: len(frames)]
    assert offline.shape == frames.shape
    assert np.abs(offline.astype(int) - frames.astype(int)).max() <= 1


def test_piece_size_does_not_change_output(model):
    audio = _speech(0.9, seed=1)
    outputs = []
    for piece in (160, 640 * 3 + 17, len(audio)):
        engine = StreamingEngine(model)
        engine.reset(_reference(model.config.image_size), EngineSettings(seed=3), already_cropped=True)
        outputs.append(np.concatenate([c.frames for c in _stream(engine, audio, piece)]))
    for other in outputs[1:]:
        assert np.abs(other.astype(int) - outputs[0].astype(int)).max() <= 1


def test_audio_travels_with_frames(model):
    audio = _speech(0.7, seed=2)
    engine = StreamingEngine(model)
    engine.reset(_reference(model.config.image_size), already_cropped=True)
    chunks = _stream(engine, audio, 800)
    joined = np.concatenate([c.audio for c in chunks])
    assert len(joined) == sum(len(c.frames) for c in chunks) * SAMPLES_PER_FRAME
    np.testing.assert_array_equal(joined[: len(audio)], audio)


def test_frames_only_after_their_audio_and_lookahead(model):
    engine = StreamingEngine(model)
    engine.reset(_reference(model.config.image_size), already_cropped=True)
    f_c = model.config.frames_per_chunk
    look = model.config.audio.lookahead_frames
    # Audio for the first chunk minus one sample: nothing yet.
    assert engine.push(np.zeros((f_c + look) * SAMPLES_PER_FRAME - 1, np.float32)) == []
    made = engine.push(np.zeros(1, np.float32))
    assert len(made) == 1 and len(made[0].frames) == f_c
    s = engine.stats()
    assert s["algorithmic_latency_ms"] == pytest.approx(40.0 * (f_c + look))
    assert s["chunks"] == 1 and s["first_chunk_ms"] > 0


def test_bad_input_errors(model):
    engine = StreamingEngine(model)
    with pytest.raises(ValueError, match="reset"):
        engine.push(np.zeros(10, np.float32))
    engine.reset(_reference(model.config.image_size), already_cropped=True)
    with pytest.raises(ValueError, match="16000 Hz"):
        engine.push(np.zeros(10, np.float32), sample_rate=44100)
    with pytest.raises(ValueError, match="int16"):
        engine.push(np.zeros(10, np.int16))
    with pytest.raises(ValueError, match="mono"):
        engine.push(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        engine.push(np.full(10, 300.0, np.float32))
    engine.flush()
    with pytest.raises(ValueError, match="after flush"):
        engine.push(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="steps"):
        EngineSettings(steps=0)
    with pytest.raises(ValueError, match="exceeds"):
        engine.reset(_reference(model.config.image_size), EngineSettings(context_chunks=99), already_cropped=True)


def test_no_face_reference_is_a_clear_error(model):
    engine = StreamingEngine(model)
    with pytest.raises(ValueError, match="no face"):
        engine.reset(np.full((200, 200, 3), 128, np.uint8))


def test_ablation_switches_change_output(model):
    audio = _speech(1.0, seed=4)
    outs = {}
    for name, settings in {"full": EngineSettings(), "no_sink": EngineSettings(use_id_sink=False),
                           "no_context": EngineSettings(context_chunks=0)}.items():
        engine = StreamingEngine(model)
        engine.reset(_reference(model.config.image_size), settings, already_cropped=True)
        outs[name] = np.concatenate([c.frames for c in _stream(engine, audio, 4000)])
    assert not np.array_equal(outs["full"], outs["no_sink"])
    assert not np.array_equal(outs["full"], outs["no_context"])


def test_context_noise_writes_a_renoised_chunk_labelled_t_c(model):
    from hub.pipeline import write_context

    dit = model.dit
    cfg = dit.config
    x0 = torch.randn(1, cfg.latent_channels, cfg.chunk_latent_frames, cfg.latent_size, cfg.latent_size)
    audio = torch.randn(1, cfg.chunk_latent_frames, cfg.audio_tokens_per_frame, cfg.audio_dim)
    ref = torch.randn(1, cfg.latent_channels, 1, cfg.latent_size, cfg.latent_size)

    def cache_after(write):
        cache = dit.new_cache(1)
        dit.prefill_sink(cache, ref)
        with torch.no_grad():
            write(cache)
        return cache.context(0)[0].clone()  # (1, H, Tc, hd) keys of layer 0

    clean = cache_after(lambda c: dit.write_chunk(c, x0, torch.zeros(1, 1), audio))
    assert torch.equal(cache_after(lambda c: write_context(dit, c, x0, audio, 0.0)), clean)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    expected = cache_after(lambda c: dit.write_chunk(c, 0.7 * x0 + 0.3 * eps, torch.full((1, 1), 0.3), audio))
    got = cache_after(lambda c: write_context(dit, c, x0, audio, 0.3, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, clean)
    with pytest.raises(ValueError, match="context_noise"):
        write_context(dit, dit.new_cache(1), x0, audio, 1.0)


def test_context_noise_setting_streams_deterministically(model):
    audio = _speech(1.0, seed=5)
    outs = []
    for settings in (EngineSettings(seed=2), EngineSettings(seed=2, context_noise=0.2),
                     EngineSettings(seed=2, context_noise=0.2)):
        engine = StreamingEngine(model)
        engine.reset(_reference(model.config.image_size), settings, already_cropped=True)
        outs.append(np.concatenate([c.frames for c in _stream(engine, audio, 4000)]))
    assert not np.array_equal(outs[0], outs[1])
    assert np.array_equal(outs[1], outs[2])
    with pytest.raises(ValueError, match="context_noise"):
        EngineSettings(context_noise=1.0)


def test_long_stream_memory_is_flat(model):
    engine = StreamingEngine(model)
    engine.reset(_reference(model.config.image_size), EngineSettings(steps=1), already_cropped=True)
    sizes = []
    piece = np.zeros(SAMPLES_PER_FRAME * model.config.frames_per_chunk, np.float32)
    for i in range(200):
        engine.push(piece)
        if i % 50 == 49:
            sizes.append(engine.stats()["cache_bytes"])
            list(engine.frames())  # a consumer drains the queue
    assert len(set(sizes)) == 1


def test_producer_thread(model):
    engine = StreamingEngine(model)
    engine.reset(_reference(model.config.image_size), already_cropped=True)
    audio = _speech(0.8, seed=5)
    made = []
    thread = threading.Thread(target=lambda: made.extend(_stream(engine, audio, 2000)))
    thread.start()
    thread.join(timeout=60)
    assert sum(len(c.frames) for c in made) == -(-len(audio) // SAMPLES_PER_FRAME)
