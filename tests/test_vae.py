"""Causal video VAE: shapes, causality, streaming == full sequence, checkpoints, normalisation."""

from __future__ import annotations

import json

import pytest
import torch

from hub.models.vae import (
    VAE_PRESETS,
    CausalVideoVAE,
    VAEConfig,
    measure_latent_stats,
    vae_config,
)

torch.set_num_threads(1)


def _randomised(cfg: VAEConfig, seed: int = 0) -> CausalVideoVAE:
    """A test model with every weight random (the zero-initialised residual convs would hide bugs)."""
    torch.manual_seed(seed)
    model = CausalVideoVAE(cfg).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def model() -> CausalVideoVAE:
    return _randomised(VAE_PRESETS["test"])


def _chunks(total: int, generator: torch.Generator, first_min: int = 1) -> list[int]:
    """Random positive chunk sizes summing to ``total``; the first at least ``first_min``."""
    sizes, left = [], total
    while left > 0:
        low = first_min if not sizes else 1
        size = int(torch.randint(low, max(low, min(left, 4)) + 1, (1,), generator=generator))
        size = min(size, left)
        sizes.append(size)
        left -= size
    return sizes


def test_presets_shapes_and_compression():
    for name, cfg in VAE_PRESETS.items():
        assert cfg.num_stages == len(cfg.enc_channels), name
        assert cfg.image_size % cfg.spatial_factor == 0, name
    tiny = VAE_PRESETS["tiny"]
    expected = 3 * tiny.image_size**2 * tiny.temporal_factor / (tiny.latent_channels * tiny.latent_size**2)
    assert tiny.compression() == pytest.approx(expected)
    assert VAE_PRESETS["base"].spatial_factor == 32


def test_encode_decode_shapes(model):
    cfg = model.config
    f_t, f_s = cfg.temporal_factor, cfg.spatial_factor
    video = torch.rand(2, 3, 1 + 3 * f_t, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        latents = model.encode(video)
        assert latents.shape == (2, cfg.latent_channels, 4, cfg.image_size // f_s, cfg.image_size // f_s)
        frames = model.decode(latents)
        assert frames.shape == video.shape
        assert frames.min() >= -1 and frames.max() <= 1
        image = model.encode_image(video[:, :, 0])
        assert image.shape == (2, cfg.latent_channels, 1, cfg.image_size // f_s, cfg.image_size // f_s)
        torch.testing.assert_close(image[:, :, 0], latents[:, :, 0], atol=1e-5, rtol=0)
        # Non-square inputs work as long as both sides are divisible by f_s.
        wide = model.encode(torch.zeros(1, 3, 1, f_s * 2, f_s * 3))
        assert wide.shape[-2:] == (2, 3)


def test_sampling_differs_from_mean(model):
    cfg = model.config
    video = torch.rand(1, 3, 1 + cfg.temporal_factor, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        mean = model.encode(video)
        torch.manual_seed(1)
        sample = model.encode(video, sample=True)
    assert sample.shape == mean.shape
    assert not torch.allclose(sample, mean)


def test_invalid_inputs_raise(model):
    cfg = model.config
    with pytest.raises(ValueError, match="1 \\+ n"):
        model.encode(torch.zeros(1, 3, 1 + cfg.temporal_factor + 1, cfg.image_size, cfg.image_size))
    with pytest.raises(ValueError, match="divisible"):
        model.encode(torch.zeros(1, 3, 1, cfg.image_size + 1, cfg.image_size))
    with pytest.raises(ValueError, match="latents"):
        model.decode(torch.zeros(1, cfg.latent_channels + 1, 2, 4, 4))
    with pytest.raises(ValueError, match="spatial_factor"):
        VAEConfig(spatial_factor=12)
    with pytest.raises(ValueError, match="enc_channels"):
        VAEConfig(enc_channels=(8, 8))
    with pytest.raises(ValueError, match="unknown VAE preset"):
        vae_config("huge")


def test_causality_in_time(model):
    """Changing frames after group k leaves latents 0..k unchanged; latent 0 sees only frame 0."""
    cfg = model.config
    f_t = cfg.temporal_factor
    torch.manual_seed(0)
    video = torch.rand(1, 3, 1 + 3 * f_t, cfg.image_size, cfg.image_size) * 2 - 1
    edited = video.clone()
    edited[:, :, 1 + f_t:] = torch.rand_like(edited[:, :, 1 + f_t:])  # frames of latent 2 onwards
    with torch.no_grad():
        a, b = model.encode(video), model.encode(edited)
        torch.testing.assert_close(a[:, :, :2], b[:, :, :2], atol=1e-5, rtol=1e-4)
        assert (a[:, :, 2:] - b[:, :, 2:]).abs().max() > 1e-3
        only_first = model.encode(video[:, :, :1])
        torch.testing.assert_close(only_first[:, :, 0], a[:, :, 0], atol=1e-5, rtol=1e-4)
        # Decoder: frames of latent k depend on latents 0..k only.
        z = torch.randn_like(a)
        z2 = z.clone()
        z2[:, :, 2:] = torch.randn_like(z2[:, :, 2:])
        da, db = model.decode(z), model.decode(z2)
        torch.testing.assert_close(da[:, :, : 1 + f_t], db[:, :, : 1 + f_t], atol=1e-5, rtol=1e-4)
        assert (da[:, :, 1 + f_t:] - db[:, :, 1 + f_t:]).abs().max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_decode_matches_full(seed):
    model = _randomised(VAE_PRESETS["test"], seed)
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    num_latent = 7
    latents = torch.randn(2, cfg.latent_channels, num_latent, 4, 5, generator=gen)
    with torch.no_grad():
        full = model.decode(latents)
    for _ in range(3):
        stream = model.start_decode()
        pieces, start = [], 0
        for size in _chunks(num_latent, gen):
            pieces.append(stream.decode(latents[:, :, start:start + size]))
            start += size
        chunked = torch.cat(pieces, dim=2)
        assert chunked.shape == full.shape
        assert (chunked - full).abs().max() <= 1e-4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_encode_matches_full(seed):
    model = _randomised(VAE_PRESETS["test"], seed)
    cfg = model.config
    gen = torch.Generator().manual_seed(100 + seed)
    num_frames = 1 + 5 * cfg.temporal_factor
    video = torch.rand(2, 3, num_frames, 16, 24, generator=gen) * 2 - 1
    with torch.no_grad():
        full = model.encode(video)
    for _ in range(3):
        stream = model.start_encode()
        pieces, start = [], 0
        for size in _chunks(num_frames, gen):
            pieces.append(stream.encode(video[:, :, start:start + size]))
            start += size
        assert stream.pending_frames == 0
        chunked = torch.cat(pieces, dim=2)
        assert chunked.shape == full.shape
        assert (chunked - full).abs().max() <= 1e-4


def test_streaming_tiny_preset_matches_full():
    """The shipped architecture (tiny preset, random weights) streams exactly too."""
    model = _randomised(vae_config("tiny"), 3)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0.25)  # keep activations bounded through the deeper net
    cfg = model.config
    latents = torch.randn(1, cfg.latent_channels, 4, 2, 2)
    with torch.no_grad():
        full = model.decode(latents)
        stream = model.start_decode()
        chunked = torch.cat([stream.decode(latents[:, :, :1]), stream.decode(latents[:, :, 1:3]),
                             stream.decode(latents[:, :, 3:])], dim=2)
    assert (chunked - full).abs().max() <= 1e-4


def test_streaming_reset_restarts_sequence(model):
    cfg = model.config
    latents = torch.randn(1, cfg.latent_channels, 3, 4, 4)
    stream = model.start_decode()
    first = stream.decode(latents)
    stream.reset()
    again = stream.decode(latents)
    torch.testing.assert_close(first, again)


def test_forward_backward_and_training_reduces_loss():
    torch.manual_seed(0)
    cfg = VAE_PRESETS["test"]
    model = CausalVideoVAE(cfg)
    coarse = torch.rand(2, 3, 1 + 2 * cfg.temporal_factor, 4, 4) * 2 - 1  # smooth, learnable content
    video = torch.nn.functional.interpolate(coarse, size=(coarse.shape[2], cfg.image_size, cfg.image_size),
                                            mode="trilinear")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        recon, mean, logvar = model(video, sample=False)
        assert recon.shape == video.shape
        loss = (recon - video).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


def test_save_load_roundtrip(tmp_path, model):
    mean = torch.linspace(-1, 1, model.config.latent_channels)
    std = torch.linspace(0.5, 2, model.config.latent_channels)
    model.set_latent_stats(mean, std)
    model.save_pretrained(tmp_path / "ckpt")
    payload = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert payload["kind"] == "vae"
    loaded = CausalVideoVAE.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    latents = torch.randn(1, model.config.latent_channels, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(latents), model.decode(latents))
    torch.testing.assert_close(loaded.latent_std, std)
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        CausalVideoVAE.from_pretrained(tmp_path)


def test_normalize_roundtrip_and_stats():
    cfg = vae_config("test", latent_mean=None, latent_std=None)
    model = CausalVideoVAE(cfg)
    latents = torch.randn(3, cfg.latent_channels, 2, 4, 4) * 3 + 2
    with pytest.raises(ValueError, match="latent statistics"):
        model.normalize(latents)
    mean, std = measure_latent_stats([latents[:1], latents[1:]])
    model.set_latent_stats(mean, std)
    normed = model.normalize(latents)
    per_channel = normed.transpose(0, 1).reshape(cfg.latent_channels, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(cfg.latent_channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1, unbiased=False), torch.ones(cfg.latent_channels),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(model.denormalize(normed), latents, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Training stage (hub/train/stages/vae.py) on a tiny synthetic prepared folder.


def _fake_prepared(root, size: int = 32, frames: int = 12):
    """A prepared folder with one train, one motion and one val clip (moving colour gradients)."""
    import csv

    from hub.media import write_video

    rows = []
    (root / "clips").mkdir(parents=True)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for k, split in enumerate(["train", "motion", "val"]):
        video = torch.stack([torch.stack([(xx + 3 * t + 10 * k) % size, yy, (xx + yy + t) % size], -1)
                             for t in range(frames)]).float() * (255 / size)  # (T, S, S, 3)
        rel = f"clips/{split}.mp4"
        write_video(root / rel, video.to(torch.uint8).numpy(), preset="ultrafast")
        rows.append({"id": split, "split": split, "identity": split, "frames": frames, "fps": 25,
                     "seconds": frames / 25, "path": rel, "audio_path": "", "landmarks_path": "", "size": size,
                     "source": "synthetic", "has_audio": 0})
    with open(root / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def stage_cfg(tmp_path_factory):
    from hub.train.config import apply_overrides
    from hub.train.stages.vae import VAEStage

    root = _fake_prepared(tmp_path_factory.mktemp("prepared"))
    return VAEStage(), apply_overrides(VAEStage.presets["test"], [f"data.prepared_dir={root}"])


def test_stage_dataset_never_uses_val(stage_cfg):
    stage, cfg = stage_cfg
    train = stage.build_dataset(cfg, "train")
    val = stage.build_dataset(cfg, "val")
    assert len(train.clips) == 2 and len(val.clips) == 1  # train + motion vs val
    item = train[0]["video"]
    assert item.shape == (3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size)
    assert -1 <= item.min() and item.max() <= 1
    train.set_epoch(0)
    a = train[1]["video"]
    train.set_epoch(1)
    b = train[1]["video"]
    train.set_epoch(0)
    torch.testing.assert_close(train[1]["video"], a)  # pure function of (seed, epoch, index)
    assert a.shape == b.shape
    from hub.train.config import apply_overrides

    bad = apply_overrides(cfg, ["data.splits=train,val"])
    with pytest.raises(ValueError, match="val"):
        stage.build_dataset(bad, "train")


def test_stage_missing_data_is_a_clear_error(tmp_path, stage_cfg):
    from hub.train.config import apply_overrides

    stage, cfg = stage_cfg
    with pytest.raises(ValueError, match="hub.data prepare"):
        stage.build_dataset(apply_overrides(cfg, [f"data.prepared_dir={tmp_path}"]), "train")


@pytest.mark.parametrize("adversarial", [0.0, 0.1])
def test_stage_training_step_and_export(tmp_path, stage_cfg, adversarial):
    from hub.train.config import apply_overrides

    stage, cfg = stage_cfg
    cfg = apply_overrides(cfg, [f"model.adversarial_weight={adversarial}"])
    torch.manual_seed(0)
    model = stage.build_model(cfg)
    groups = stage.optimizer_groups(model, cfg)
    assert set(groups) == ({"main", "critic"} if adversarial else {"main"})
    dataset = stage.build_dataset(cfg, "train")
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    out = stage.training_step(model, batch, 0)
    for group, params in groups.items():
        loss = out[f"loss/{group}"]
        assert loss.ndim == 0 and torch.isfinite(loss)
        torch.autograd.backward(loss, inputs=params)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    if adversarial:  # the generator loss must not leave gradients on the critic
        assert "loss/adversarial" in out
    metrics = stage.evaluate(model.eval(), cfg)
    assert metrics["psnr_db"] > 0
    stage.export(model, cfg, tmp_path / "export")
    loaded = CausalVideoVAE.from_pretrained(tmp_path / "export")
    assert loaded.has_latent_stats
    assert len(loaded.config.latent_std) == loaded.config.latent_channels


def test_bench_writes_result_json(tmp_path, stage_cfg):
    from hub.bench.vae import main as bench_main

    stage, cfg = stage_cfg
    torch.manual_seed(0)
    model = stage.build_model(cfg)
    stage.export(model, cfg, tmp_path / "ckpt")
    out = tmp_path / "bench.json"
    assert bench_main(["--preset", "test", "--checkpoint", str(tmp_path / "ckpt"), "--prepared",
                       cfg.data.prepared_dir, "--out", str(out), "--max-frames", "9"]) == 0
    result = json.loads(out.read_text())
    for key in ("psnr_db", "ssim", "compression", "encode_ms_per_frame", "decode_ms_per_frame", "peak_mem_mb",
                "device", "taef2_distance"):
        assert result[key] is not None, key
    assert result["lpips"] is not None or result["lpips_reason"]
    assert result["val_frames"] == 9  # 1 + n * f_t <= 9 frames of the single val clip
    assert result["compression"] == pytest.approx(cfg.model.compression())
    assert len(result["metadata"]["checkpoint_sha256"]) == 64
    with pytest.raises(ValueError, match="not found"):
        bench_main(["--preset", "test", "--checkpoint", str(tmp_path / "missing"), "--out", str(out)])


def test_half_precision_checkpoint_loads_as_float32(tmp_path, model):
    model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    loaded = CausalVideoVAE.from_pretrained(tmp_path / "half")
    assert next(loaded.parameters()).dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32  # the original is untouched
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(b, a.half().float(), atol=0, rtol=0, msg=name)
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * sum(
        p.numel() * 4 for p in model.parameters())
