import numpy as np
import pytest
import torch

from hub import SAMPLES_PER_FRAME
from hub.pipeline import (decode_stream, encode_reference, generate_student_latents, generate_teacher_latents,
                          stream_audio_tokens)
from tests.tiny_models import tiny_rest_model


@pytest.fixture(scope="module")
def teacher():
    return tiny_rest_model(role="teacher")


def _inputs(model, seconds=1.2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (model.config.image_size,) * 2 + (3,), dtype=np.uint8)
    audio = np.clip(0.3 * rng.standard_normal(int(seconds * 16000)), -1, 1).astype(np.float32)
    return encode_reference(model, image), stream_audio_tokens(model, audio), audio


def test_audio_tokens_cover_the_audio(teacher):
    _, tokens, audio = _inputs(teacher)
    f_t = teacher.config.vae.temporal_factor
    frames = -(-len(audio) // SAMPLES_PER_FRAME)
    assert tokens.shape[1] == -(-frames // f_t)


def test_teacher_same_seed_same_output_and_windows_roll(teacher):
    ref, tokens, _ = _inputs(teacher, seconds=3.0)
    n = tokens.shape[1]
    assert n > teacher.config.dit.max_chunks  # several windows are needed
    runs = [generate_teacher_latents(teacher, ref, tokens, steps=3, window=4, overlap=1,
                                     generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)]
    assert runs[0].shape == (1, teacher.config.dit.latent_channels, n, *(teacher.config.dit.latent_size,) * 2)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_teacher_overlap_chunks_are_kept(teacher):
    ref, tokens, _ = _inputs(teacher, seconds=2.0)
    # With overlap, the first window's chunks are exactly those of a single-window run over them.
    full = generate_teacher_latents(teacher, ref, tokens, steps=2, window=4, overlap=2,
                                    generator=torch.Generator().manual_seed(0))
    first = generate_teacher_latents(teacher, ref, tokens[:, :4], steps=2, window=4, overlap=2,
                                     generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(full[:, :, :4], first, rtol=0, atol=1e-5)


def test_guidance_changes_output(teacher):
    ref, tokens, _ = _inputs(teacher)
    a = generate_teacher_latents(teacher, ref, tokens, steps=2, guidance=1.0, generator=torch.Generator().manual_seed(0))
    b = generate_teacher_latents(teacher, ref, tokens, steps=2, guidance=3.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)


def test_decode_stream_frame_count(teacher):
    ref, tokens, _ = _inputs(teacher)
    latents = generate_student_latents(teacher, ref, tokens, steps=1, generator=torch.Generator().manual_seed(0))
    video = decode_stream(teacher, ref, latents)
    assert video.shape[2] == tokens.shape[1] * teacher.config.vae.temporal_factor


def test_bad_settings(teacher):
    ref, tokens, _ = _inputs(teacher)
    with pytest.raises(ValueError, match="steps"):
        generate_teacher_latents(teacher, ref, tokens, steps=0)
    with pytest.raises(ValueError, match="overlap"):
        generate_teacher_latents(teacher, ref, tokens, window=3, overlap=3)
