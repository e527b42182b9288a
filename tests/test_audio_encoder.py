"""Audio encoder: latent-frame layout, look-ahead, streaming == offline, null tokens, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hub.audio import FeatureStream, features_for
from hub.models.audio_encoder import AUDIO_ENCODER_PRESETS, AudioEncoder, AudioEncoderConfig

torch.set_num_threads(1)

TINY = AUDIO_ENCODER_PRESETS["tiny"]


def _model(config: AudioEncoderConfig = TINY, seed: int = 0) -> AudioEncoder:
    """A tiny encoder with every parameter randomised (the zero-initialised residual branches too),
    so that the causal blocks really mix frames."""
    torch.manual_seed(seed)
    model = AudioEncoder(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


def _rows(batch: int, n_frames: int, config: AudioEncoderConfig = TINY, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_frames * config.rows_per_frame, config.n_features, generator=g)


@pytest.mark.parametrize("n_frames,expected", [(1, 1), (4, 1), (5, 2), (9, 3), (12, 3), (13, 4)])
def test_offline_shapes_follow_causal_latent_layout(n_frames, expected):
    model = _model()
    tokens = model(_rows(2, n_frames))
    assert tokens.shape == (2, expected, TINY.tokens_per_latent_frame, TINY.out_dim)
    assert model.num_latent_frames(n_frames) == expected
    assert torch.isfinite(tokens).all()


def test_lookahead_is_exact_and_causal():
    model = _model()
    cfg = model.config
    n_frames = 1 + 4 * cfg.frames_per_token
    rows = _rows(1, n_frames)
    base = model(rows)
    for k in range(base.shape[1]):
        last = k * cfg.frames_per_token + cfg.lookahead_frames  # last video frame latent k may see
        for frame, changes in ((last, True), (last + 1, False)):
            if frame >= n_frames:
                continue
            bumped = rows.clone()
            bumped[:, frame * cfg.rows_per_frame:(frame + 1) * cfg.rows_per_frame] += 1.0
            out = model(bumped)
            torch.testing.assert_close(out[:, :k], base[:, :k], atol=0, rtol=0)  # earlier latents untouched
            assert (not torch.allclose(out[:, k], base[:, k])) == changes, (k, frame)
    assert model.lookahead_ms == pytest.approx(80.0)


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        dataclasses.replace(TINY, lookahead_frames=0, frames_per_token=1, tokens_per_latent_frame=1),
        dataclasses.replace(TINY, lookahead_frames=5, kernel_size=2, layers=3, max_dilation=4),
    ],
    ids=["tiny", "no-lookahead-ft1", "long-lookahead"],
)
def test_streaming_equals_offline(config):
    model = _model(config)
    n_frames = 23
    rows = _rows(2, n_frames, config)
    offline = model(rows)  # (B, T_lat, A, D)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        stream = model.start()
        outs, pos = [], 0
        while pos < rows.shape[1]:
            size = int(rng.choice([0, 1, 3, config.rows_per_frame, 11, 29]))
            out = stream.push(rows[:, pos:pos + size])
            pos = min(pos + size, rows.shape[1])
            outs.append(out)
            # emitted exactly the latent frames whose rows + look-ahead have arrived
            emitted = stream.latent_emitted
            assert model.rows_needed(emitted) <= pos
            if emitted < offline.shape[1]:
                assert model.rows_needed(emitted + 1) > pos
        before_flush = torch.cat(outs, dim=1)
        torch.testing.assert_close(before_flush, offline[:, : before_flush.shape[1]], atol=1e-5, rtol=0)
        streamed = torch.cat((before_flush, stream.flush()), dim=1)
        assert streamed.shape == offline.shape
        torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_rows_needed_accounting():
    model = AudioEncoder(TINY)
    r, f_t, lookahead = TINY.rows_per_frame, TINY.frames_per_token, TINY.lookahead_frames
    assert model.rows_needed(0) == 0
    assert model.rows_needed(1) == r * (1 + lookahead)  # frame 0 plus its look-ahead
    assert model.rows_needed(3) == r * (2 * f_t + lookahead + 1)


def test_real_speech_end_to_end_streaming(shared_data):
    """Audio pieces -> FeatureStream -> AudioEncoderStream equals features_for -> forward."""
    from scipy.io import wavfile

    _, pcm = wavfile.read(shared_data / "speech/joyvasa_001.wav")
    pcm = pcm[16_000:16_000 + 21 * 640]  # 21 video frames of speech
    model = _model()
    feats = torch.from_numpy(features_for(pcm))[None]  # (1, 84, F)
    offline = model(feats)
    features, encoder = FeatureStream(model.config.feature_config), model.start()
    outs = [encoder.push(torch.from_numpy(features.push(pcm[i:i + 533]))[None]) for i in range(0, pcm.size, 533)]
    outs.append(encoder.flush())
    torch.testing.assert_close(torch.cat(outs, dim=1), offline, atol=1e-5, rtol=0)


def test_null_tokens_and_dropout_mask():
    model = _model()
    tokens = model(_rows(4, 9))  # (4, 3, A, D)
    assert model.null_tokens(4, 3).shape == tokens.shape
    drop = torch.tensor([True, False, True, False])
    mixed = model.mask_with_null(tokens, drop)
    torch.testing.assert_close(mixed[0], model.null_tokens(1, 3)[0])
    torch.testing.assert_close(mixed[1], tokens[1])
    per_frame = torch.zeros(4, 3, dtype=torch.bool)
    per_frame[2, 1] = True
    mixed = model.mask_with_null(tokens, per_frame)
    torch.testing.assert_close(mixed[2, 1], model.null_embedding)
    torch.testing.assert_close(mixed[2, 0], tokens[2, 0])
    mixed.sum().backward()
    assert model.null_embedding.grad is not None and model.null_embedding.grad.abs().sum() > 0
    assert not AudioEncoder.drop_mask(64, 0.0).any() and AudioEncoder.drop_mask(64, 1.0).all()
    g = torch.Generator().manual_seed
    assert torch.equal(AudioEncoder.drop_mask(64, 0.3, g(5)), AudioEncoder.drop_mask(64, 0.3, g(5)))
    assert 5 < int(AudioEncoder.drop_mask(64, 0.3, g(5)).sum()) < 35
    with pytest.raises(ValueError, match="T_lat"):
        model.mask_with_null(tokens, torch.zeros(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="probability"):
        AudioEncoder.drop_mask(4, 1.5)


def test_save_and_from_pretrained_roundtrip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "enc")
    loaded = AudioEncoder.from_pretrained(tmp_path / "enc")
    assert loaded.config == model.config
    rows = _rows(1, 5)
    torch.testing.assert_close(loaded(rows), model(rows), atol=0, rtol=0)


def test_user_errors():
    model = _model()
    with pytest.raises(ValueError, match="multiple of rows_per_frame"):
        model(torch.zeros(1, 6, TINY.n_features))
    with pytest.raises(ValueError, match=r"\(B, N, 80\)"):
        model(torch.zeros(1, 8, 40))
    stream = model.start()
    stream.push(_rows(2, 1))
    with pytest.raises(ValueError, match="batch"):
        stream.push(_rows(1, 1))
    stream.flush()
    with pytest.raises(ValueError, match="after flush"):
        stream.push(_rows(2, 1))
    with pytest.raises(ValueError, match="do not match"):
        AudioEncoderConfig(n_features=40)
    with pytest.raises(ValueError, match="feature_preset"):
        AudioEncoderConfig(feature_preset="mfcc13")
    with pytest.raises(ValueError, match="lookahead_frames"):
        AudioEncoderConfig(lookahead_frames=-1)
