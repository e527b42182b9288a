"""A2V-DiT: shapes, adaLN-Zero init, attention masks per mode, and stream == full-forward exactness."""

from __future__ import annotations

import pytest
import torch

from hub.models.dit import DIT_PRESETS, A2VDiT, DiTConfig, dit_config

torch.set_num_threads(1)
TOL = 1e-4


def make_model(seed: int = 0, **overrides) -> A2VDiT:
    """A "test"-preset model whose zero-initialised layers are filled with random weights."""
    torch.manual_seed(seed)
    model = A2VDiT(dit_config("test", **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def make_inputs(cfg: DiTConfig, n_chunks: int, batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    T = n_chunks * cfg.chunk_latent_frames
    s = cfg.latent_size
    x = torch.randn(batch, cfg.latent_channels, T, s, s, generator=g)  # (B, C, T, h, w)
    t = torch.rand(batch, n_chunks, generator=g)  # (B, n)
    audio = torch.randn(batch, T, cfg.audio_tokens_per_frame, cfg.audio_dim, generator=g)  # (B, T, A, Da)
    ref = torch.randn(batch, cfg.latent_channels, 1, s, s, generator=g) if cfg.use_id_sink else None
    return x, t, audio, ref


def chunk(tensor: torch.Tensor, k: int, frames: int, dim: int = 2) -> torch.Tensor:
    return tensor.narrow(dim, k * frames, frames)


def stream(model: A2VDiT, x, t, audio, ref, window=None, clean=None) -> list[torch.Tensor]:
    """Per-chunk velocities from the cached path; writes ``clean`` chunks at t=0 if given, else ``x``."""
    cfg = model.config
    Fc = cfg.chunk_latent_frames
    cache = model.new_cache(x.shape[0], window=window)
    if cfg.use_id_sink:
        model.prefill_sink(cache, ref)
    outs = []
    for k in range(t.shape[1]):
        xk, tk, ak = chunk(x, k, Fc), t[:, k:k + 1], chunk(audio, k, Fc, dim=1)
        outs.append(model.forward_chunk(xk, tk, ak, cache))
        if clean is None:
            model.write_chunk(cache, xk, tk, ak)
        else:
            model.write_chunk(cache, chunk(clean, k, Fc), torch.zeros_like(tk), ak)
    return outs


def chunk_changed(a: torch.Tensor, b: torch.Tensor, frames: int) -> list[bool]:
    """Per chunk: whether the outputs differ beyond float noise."""
    n = a.shape[2] // frames
    return [bool((chunk(a, k, frames) - chunk(b, k, frames)).abs().max() > TOL) for k in range(n)]


# ----------------------------------------------------------------------------- config and shapes
def test_presets_are_valid_and_tiny_builds():
    assert set(DIT_PRESETS) == {"test", "tiny", "base"}
    tiny = A2VDiT(DIT_PRESETS["tiny"])
    assert tiny.config.tokens_per_chunk == 16
    assert 1e6 < sum(p.numel() for p in tiny.parameters()) < 2e7


@pytest.mark.parametrize("bad", [dict(patch_size=3), dict(latent_size=5, patch_size=2), dict(dim=30, heads=4),
                                 dict(dim=12, heads=2), dict(context_chunks=-1), dict(depth=0)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        dit_config("test", **bad)
    with pytest.raises(ValueError, match="unknown DiT preset"):
        dit_config("huge")
    with pytest.raises(ValueError, match="unknown DiTConfig fields"):
        dit_config("test", width=3)


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("frames", [1, 2])
@pytest.mark.parametrize("mode", ["bidirectional", "block_causal", "teacher_forcing"])
def test_output_shapes(patch_size, frames, mode):
    model = make_model(patch_size=patch_size, chunk_latent_frames=frames)
    x, t, audio, ref = make_inputs(model.config, n_chunks=3)
    clean = torch.randn_like(x) if mode == "teacher_forcing" else None
    v = model(x, t, audio, ref, mode=mode, clean_context=clean)
    assert v.shape == x.shape and torch.isfinite(v).all()


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("frames", [1, 2])
def test_zero_init_output_is_zero(patch_size, frames):
    torch.manual_seed(0)
    model = A2VDiT(dit_config("test", patch_size=patch_size, chunk_latent_frames=frames))
    x, t, audio, ref = make_inputs(model.config, n_chunks=2)
    assert torch.count_nonzero(model(x, t, audio, ref)) == 0
    cache = model.new_cache(2)
    model.prefill_sink(cache, ref)
    F = model.config.chunk_latent_frames
    assert torch.count_nonzero(model.forward_chunk(chunk(x, 0, F), t[:, :1], chunk(audio, 0, F, 1), cache)) == 0


# ----------------------------------------------------------------------------- stream == full forward
@pytest.mark.parametrize("patch_size,frames", [(1, 1), (2, 2)])
def test_stream_equals_block_causal_when_window_covers_all(patch_size, frames):
    n = 5
    model = make_model(patch_size=patch_size, chunk_latent_frames=frames, context_chunks=n)
    x, t, audio, ref = make_inputs(model.config, n_chunks=n)
    with torch.no_grad():
        full = model(x, t, audio, ref, mode="block_causal")
        outs = stream(model, x, t, audio, ref)
    for k, v in enumerate(outs):
        assert (v - chunk(full, k, frames)).abs().max() < TOL, k
    assert full.abs().mean() > 0.01  # the comparison is not between zeros


@pytest.mark.parametrize("window", [1, 2, 3])
def test_stream_equals_windowed_block_causal(window):
    n = 7  # several ring-buffer wrap-arounds
    model = make_model(context_chunks=window)
    x, t, audio, ref = make_inputs(model.config, n_chunks=n)
    with torch.no_grad():
        full = model(x, t, audio, ref, mode="block_causal")
        outs = stream(model, x, t, audio, ref)
        wider = model(x, t, audio, ref, mode="block_causal", window=n)
    for k, v in enumerate(outs):
        assert (v - chunk(full, k, 1)).abs().max() < TOL, k
    # Chunks that would see more than W chunks with a wider window really differ: the window is applied.
    assert chunk_changed(full, wider, 1) == [k > window for k in range(n)]


def test_stream_window_override_matches_forward_window():
    model = make_model(context_chunks=3)
    x, t, audio, ref = make_inputs(model.config, n_chunks=5)
    with torch.no_grad():
        full = model(x, t, audio, ref, mode="block_causal", window=1)
        outs = stream(model, x, t, audio, ref, window=1)
    assert (torch.cat(outs, dim=2) - full).abs().max() < TOL


def test_stream_with_clean_writes_equals_teacher_forcing():
    n = 5
    model = make_model(context_chunks=2)
    x, t, audio, ref = make_inputs(model.config, n_chunks=n)
    clean = torch.randn_like(x)
    with torch.no_grad():
        full = model(x, t, audio, ref, mode="teacher_forcing", clean_context=clean)
        outs = stream(model, x, t, audio, ref, clean=clean)
    assert (torch.cat(outs, dim=2) - full).abs().max() < TOL


@pytest.mark.parametrize("switch", [dict(use_id_sink=False), dict(context_chunks=0),
                                    dict(use_id_sink=False, context_chunks=0)])
def test_ablation_switches_change_output_and_stream_exactly(switch):
    n = 4
    base = make_model(context_chunks=2)
    ablated = make_model(**({"context_chunks": 2} | switch))  # same seed: same weights (no parameter depends on the switches)
    x, t, audio, ref = make_inputs(base.config, n_chunks=n)
    ref_ablated = ref if ablated.config.use_id_sink else None
    with torch.no_grad():
        full = base(x, t, audio, ref, mode="block_causal")
        full_ablated = ablated(x, t, audio, ref_ablated, mode="block_causal")
        outs = stream(ablated, x, t, audio, ref_ablated)
    assert (torch.cat(outs, dim=2) - full_ablated).abs().max() < TOL
    changed = chunk_changed(full, full_ablated, 1)
    if switch.get("use_id_sink") is False:
        assert all(changed)
    else:  # W=0 leaves chunk 0 (which has no past) unchanged and changes every later chunk
        assert changed == [False] + [True] * (n - 1)
    if ablated.config.context_chunks == 0:
        assert ablated.new_cache(1).ctx_k.numel() == 0
    if not ablated.config.use_id_sink:
        assert ablated.new_cache(1).sink_k.numel() == 0


def test_sink_attention_does_not_depend_on_time_position():
    """With W=0 a chunk sees only itself and the sink: identical chunks at any index give identical outputs."""
    model = make_model(context_chunks=0)
    x, t, audio, ref = make_inputs(model.config, n_chunks=1)
    n = 6
    xs, ts, auds = x.repeat(1, 1, n, 1, 1), t.repeat(1, n), audio.repeat(1, n, 1, 1)
    with torch.no_grad():
        v = model(xs, ts, auds, ref, mode="block_causal")
    for k in range(1, n):
        assert (v[:, :, k] - v[:, :, 0]).abs().max() < TOL


def test_positions_are_relative_block_causal_is_shift_invariant():
    """The last chunk's output depends on its receptive field only (depth * W chunks back), not on
    where that field starts: the same chunks starting at index 0 or at index 3 give the same result."""
    model = make_model(context_chunks=2)
    field = model.config.depth * model.config.context_chunks + 1  # chunks that reach the last one
    start = 3
    x, t, audio, ref = make_inputs(model.config, n_chunks=start + field)
    with torch.no_grad():
        full = model(x, t, audio, ref, mode="block_causal")
        tail = model(x[:, :, start:], t[:, start:], audio[:, start:], ref, mode="block_causal")
        short = model(x[:, :, start + 1:], t[:, start + 1:], audio[:, start + 1:], ref, mode="block_causal")
    assert (full[:, :, -1] - tail[:, :, -1]).abs().max() < TOL
    assert (full[:, :, -1] - short[:, :, -1]).abs().max() > TOL  # one chunk less of field does change it


# ----------------------------------------------------------------------------- masks
def perturb_chunk(x: torch.Tensor, k: int, frames: int = 1) -> torch.Tensor:
    y = x.clone()
    y[:, :, k * frames:(k + 1) * frames] += torch.randn_like(y[:, :, k * frames:(k + 1) * frames])
    return y


def test_bidirectional_sees_future_block_causal_does_not():
    model = make_model(context_chunks=4)
    x, t, audio, ref = make_inputs(model.config, n_chunks=4)
    x2 = perturb_chunk(x, 3)
    with torch.no_grad():
        bi = chunk_changed(model(x, t, audio, ref), model(x2, t, audio, ref), 1)
        bc = chunk_changed(model(x, t, audio, ref, mode="block_causal"), model(x2, t, audio, ref, mode="block_causal"), 1)
    assert bi == [True] * 4
    assert bc == [False, False, False, True]


def test_teacher_forcing_mask():
    n, W = 8, 2
    model = make_model(context_chunks=W)
    reach = W * model.config.depth  # clean chunk j reaches noisy chunks j+1 .. j+reach through the layers
    x, t, audio, ref = make_inputs(model.config, n_chunks=n)
    clean = torch.randn_like(x)

    def run(xx, cc):
        with torch.no_grad():
            return model(xx, t, audio, ref, mode="teacher_forcing", clean_context=cc)

    base = run(x, clean)
    # Changing noisy chunk 2 changes only noisy chunk 2 (noisy chunks never see each other).
    assert chunk_changed(base, run(perturb_chunk(x, 2), clean), 1) == [k == 2 for k in range(n)]
    # Changing clean chunk 2 changes later noisy chunks within reach, never noisy chunk 2 or earlier.
    assert chunk_changed(base, run(x, perturb_chunk(clean, 2)), 1) == [2 < k <= 2 + reach for k in range(n)]


def test_clean_context_only_in_teacher_forcing():
    model = make_model()
    x, t, audio, ref = make_inputs(model.config, n_chunks=2)
    with pytest.raises(ValueError, match="clean_context"):
        model(x, t, audio, ref, mode="teacher_forcing")
    with pytest.raises(ValueError, match="clean_context"):
        model(x, t, audio, ref, mode="block_causal", clean_context=x)


@pytest.mark.parametrize("mode", ["bidirectional", "block_causal", "teacher_forcing"])
def test_per_chunk_timestep_reaches_only_attending_chunks(mode):
    n, j, W = 6, 1, 1
    model = make_model(context_chunks=W)
    reach = W * model.config.depth  # block-causal: chunk j reaches chunks j .. j + reach through the layers
    x, t, audio, ref = make_inputs(model.config, n_chunks=n)
    t2 = t.clone()
    t2[:, j] = 1.0 - t2[:, j]
    clean = torch.randn_like(x) if mode == "teacher_forcing" else None
    with torch.no_grad():
        a = model(x, t, audio, ref, mode=mode, clean_context=clean)
        b = model(x, t2, audio, ref, mode=mode, clean_context=clean)
    expected = {
        "bidirectional": [True] * n,
        "block_causal": [j <= k <= j + reach for k in range(n)],
        "teacher_forcing": [k == j for k in range(n)],  # a noisy chunk's t reaches only itself
    }[mode]
    assert chunk_changed(a, b, 1) == expected


def test_audio_reaches_only_its_own_frame_directly():
    """With W=0 and no sink, each frame's output depends only on its own audio tokens."""
    model = make_model(context_chunks=0, use_id_sink=False, chunk_latent_frames=2)
    x, t, audio, _ = make_inputs(model.config, n_chunks=2)
    audio2 = audio.clone()
    audio2[:, 3] += 1.0
    with torch.no_grad():
        a = model(x, t, audio, None, mode="block_causal")
        b = model(x, t, audio2, None, mode="block_causal")
    # Frame 3 belongs to chunk 1 (frames 2, 3): chunk 1's frames change, chunk 0's do not.
    assert chunk_changed(a, b, 1) == [False, False, True, True]


# ----------------------------------------------------------------------------- errors and checkpoints
def test_input_errors_are_value_errors():
    model = make_model()
    x, t, audio, ref = make_inputs(model.config, n_chunks=2)
    cases = [
        dict(x=x[:, :2]), dict(t=t[:, :1]), dict(audio=audio[..., :3]), dict(ref=None), dict(mode="causal"),
        dict(mode="bidirectional", window=1), dict(x=torch.randn(2, 4, 9, 4, 4), t=torch.rand(2, 9),
                                                   audio=torch.randn(2, 9, 2, 16)),  # > max_chunks
    ]
    for case in cases:
        kwargs = dict(x=x, t=t, audio=audio, ref=ref, mode="bidirectional") | case
        with pytest.raises(ValueError):
            model(**kwargs)
    no_sink = make_model(use_id_sink=False)
    with pytest.raises(ValueError, match="use_id_sink"):
        no_sink(x, t, audio, ref)


def test_save_and_load_round_trip(tmp_path):
    model = make_model(patch_size=2, context_chunks=3)
    model.save_pretrained(tmp_path / "dit")
    loaded = A2VDiT.from_pretrained(tmp_path / "dit").eval()
    assert loaded.config == model.config
    x, t, audio, ref = make_inputs(model.config, n_chunks=2)
    with torch.no_grad():
        assert torch.equal(model(x, t, audio, ref), loaded(x, t, audio, ref))
    with pytest.raises(ValueError, match="kind"):
        import json
        cfg_file = tmp_path / "dit" / "config.json"
        cfg_file.write_text(json.dumps(json.loads(cfg_file.read_text()) | {"kind": "vae"}))
        A2VDiT.from_pretrained(tmp_path / "dit")


def test_gradients_flow_through_cache_for_self_forcing():
    """Self-Forcing: a loss on a later chunk back-propagates into the chunk written earlier."""
    model = make_model(context_chunks=2).train()
    x, t, audio, ref = make_inputs(model.config, n_chunks=2, batch=1)
    x0 = x[:, :, :1].clone().requires_grad_(True)
    cache = model.new_cache(1)
    model.prefill_sink(cache, ref)
    model.write_chunk(cache, x0, torch.zeros(1, 1), audio[:, :1])
    v = model.forward_chunk(x[:, :, 1:2], t[:, 1:2], audio[:, 1:2], cache)
    v.square().mean().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    # After detach_ the cached context no longer carries the graph.
    cache.detach_()
    assert not cache.ctx_k.requires_grad and not cache.sink_k.requires_grad
