import dataclasses

import numpy as np
import pytest
import torch

from hub.train.config import RunConfig
from hub.train.stages.teacher import (TeacherStage, build_corpus, flow_loss, load_vae, sample_chunk_levels)
from tests.synthetic_prepared import write_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared"), size=32)


def _cfg(prepared, **data) -> RunConfig:
    cfg = dataclasses.replace(TeacherStage.presets["test"])
    cfg.data = dataclasses.replace(cfg.data, prepared_dir=str(prepared), **data)
    return cfg


def test_window_alignment_and_shapes(prepared):
    torch.manual_seed(0)
    stage = TeacherStage()
    cfg = _cfg(prepared)
    model = stage.build_model(cfg)
    dataset = stage.build_dataset(cfg, "train")
    item = dataset[0]
    m = model.rest.config
    n = cfg.data.chunks * m.dit.chunk_latent_frames
    assert item["latents"].shape == (m.dit.latent_channels, n, m.dit.latent_size, m.dit.latent_size)
    frames = (n + cfg.data.context_latents) * m.audio.frames_per_token + m.audio.lookahead_frames + 1
    assert item["features"].shape == (frames * m.audio.rows_per_frame, m.audio.n_features)
    tokens = model.rest.audio_encoder(item["features"][None])
    assert tokens.shape[1] == 1 + cfg.data.context_latents + n  # the window's tokens are the last n
    # Same (seed, epoch, index) -> same window; another epoch -> another window.
    assert torch.equal(dataset[3]["latents"], dataset[3]["latents"])
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i]["latents"], _item0) for i, _item0 in [(0, item["latents"])])


def test_val_clips_never_in_training_corpus(prepared):
    stage = TeacherStage()
    cfg = _cfg(prepared)
    preset = cfg.model.audio.feature_preset
    corpus = build_corpus(cfg.data, preset, load_vae(cfg.model), cfg.data.splits)
    assert sorted(c.clip_id for c in corpus) == ["syn_a", "syn_b"]
    with pytest.raises(ValueError, match="never trained on"):
        build_corpus(cfg.data, preset, load_vae(cfg.model), ("train", "val"))


def test_clean_prefix_schedule():
    cfg = TeacherStage.presets["test"].model
    cfg = dataclasses.replace(cfg, clean_prefix_prob=1.0, schedule="monotone")
    torch.manual_seed(0)
    t = sample_chunk_levels(cfg, 64, 5, torch.device("cpu"))
    assert t.shape == (64, 5)
    assert (t[:, 0] == 0).all() and (t[:, -1] > 0).all()
    # A clean chunk is never after a noisy one (clean prefix + monotone rest).
    assert ((t[:, 1:] == 0) <= (t[:, :-1] == 0)).all()


def test_loss_falls_when_overfitting_one_batch(prepared):
    torch.manual_seed(0)
    stage = TeacherStage()
    cfg = _cfg(prepared)
    model = stage.build_model(cfg)
    dataset = stage.build_dataset(cfg, "train")
    batch = {k: torch.stack([dataset[i][k] for i in range(2)]) for k in dataset[0]}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    t = torch.full((2, cfg.data.chunks), 0.5)
    losses = []
    for _ in range(60):
        torch.manual_seed(1)  # same noise every step: a fixed regression problem
        loss, _ = flow_loss(model.rest, batch, cfg.model, cfg.data.context_latents, t=t, drop_audio=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


def test_train_and_export_roundtrip(prepared, tmp_path):
    from hub.models.rest import RestModel
    from hub.train.__main__ import main

    out = tmp_path / "run"
    assert main(["teacher", "--preset", "test", "--out", str(out), f"data.prepared_dir={prepared}"]) == 0
    export = out / "export"
    model = RestModel.from_pretrained(export)
    assert model.config.role == "teacher"
    assert np.isfinite(sum(float(p.abs().sum()) for p in model.parameters()))


@pytest.mark.slow
def test_overfitted_clip_is_regenerated(prepared):
    """A teacher trained on one window regenerates it from fresh noise (flow matching on a single
    example memorises it). Stated PSNR, in latent space (peak = the window's value range): -20.6 dB
    before training, >= 13 dB after 400 steps (15.4 dB measured; 8 Euler steps from fresh noise)."""
    from hub.pipeline import generate_teacher_latents
    from hub.train.stages.teacher import audio_tokens_for_window

    torch.manual_seed(0)
    stage = TeacherStage()
    cfg = _cfg(prepared)
    model = stage.build_model(cfg)
    rest = model.rest
    sample = stage.build_dataset(cfg, "train")[0]
    batch = {k: v[None] for k, v in sample.items()}
    target = batch["latents"]  # (1, C, T, h, w)

    def regenerate_psnr() -> float:
        """PSNR of the regenerated latents against the window's, peak = the target's value range
        (the test autoencoder is untrained, so pixel PSNR would say nothing)."""
        rest.eval()
        with torch.no_grad():
            tokens = audio_tokens_for_window(rest, batch["features"], target.shape[2], cfg.data.context_latents)
            out = generate_teacher_latents(rest, batch["ref"], tokens, steps=8,
                                           generator=torch.Generator().manual_seed(123))
        rest.train()
        mse = (out - target).pow(2).mean().item()
        peak = (target.max() - target.min()).item()
        return 10 * np.log10(peak**2 / max(mse, 1e-12))

    before = regenerate_psnr()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)
    for step in range(400):
        torch.manual_seed(step)  # fresh noise and noise levels: the model must map any noise to the window
        loss, _ = flow_loss(rest, batch, cfg.model, cfg.data.context_latents, drop_audio=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    after = regenerate_psnr()
    print(f"latent PSNR before {before:.1f} dB, after {after:.1f} dB")
    assert before < 0.0 and after >= 13.0, (before, after)


def test_evaluate_reports_fixed_levels_and_clean_past(prepared):
    torch.manual_seed(0)
    stage = TeacherStage()
    cfg = _cfg(prepared)
    model = stage.build_model(cfg).eval()  # as the trainer calls it
    # The test preset builds a fresh random autoencoder for its val corpus: seed it the same way.
    torch.manual_seed(1)
    out = stage.evaluate(model, cfg)
    assert {"val_v_mse_t0.25", "val_v_mse_t0.5", "val_v_mse_t0.75", "val_v_mse", "val_v_mse_clean_past"} <= set(out)
    assert all(np.isfinite(v) and v > 0 for v in out.values())
    torch.manual_seed(1)
    assert out == stage.evaluate(model, cfg)  # deterministic: the evaluation's own seeds are fixed
