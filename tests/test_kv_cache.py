"""ID-Context Cache: ring buffer, bounded positions, constant memory, autograd and model-driven streams."""

from __future__ import annotations

import pytest
import torch

from hub.models.dit import A2VDiT, dit_config
from hub.models.kv_cache import IDContextCache

torch.set_num_threads(1)


def make_cache(window: int = 3, frames: int = 2, sink_tokens: int = 4) -> IDContextCache:
    return IDContextCache(depth=2, batch_size=1, heads=2, head_dim=8, sink_tokens=sink_tokens, chunk_tokens=5,
                          chunk_latent_frames=frames, window=window)


def chunk_kv(cache: IDContextCache, value: float) -> torch.Tensor:
    return torch.full((cache.depth, cache.batch_size, 2, cache.chunk_tokens, 8), value)  # (D, B, H, Tc, hd)


def test_ring_buffer_keeps_the_last_window_chunks_with_relative_positions():
    cache = make_cache(window=3, frames=2)
    for c in range(7):
        ctx, cur = cache.time_positions()
        n = min(c, 3)
        assert cache.num_cached_chunks == n
        assert cur.tolist() == [2 * n, 2 * n + 1]
        k, _ = cache.context(layer=0)  # (B, H, n * Tc, hd)
        # The chunk stored with value v = chunk number must sit at relative chunk position n - (c - v).
        stored = k[0, 0, :, 0].view(n, cache.chunk_tokens)[:, 0].tolist() if n else []
        expected = {chunk: n - (c - chunk) for chunk in range(c - n, c)}
        assert {int(v): int(p) for v, p in zip(stored, (ctx[:, 0] // 2).tolist())} == expected
        cache.store_chunk(chunk_kv(cache, c), chunk_kv(cache, -c))
        cache.advance()
    assert cache.chunk_index == 7


def test_memory_and_positions_stay_flat_for_10000_chunks():
    cache = make_cache(window=3, frames=2)
    nbytes = cache.nbytes()
    kv = chunk_kv(cache, 1.0)
    bound = (cache.window + 1) * cache.chunk_latent_frames
    with torch.no_grad():
        for _ in range(10_000):
            cache.store_chunk(kv, kv)
            cache.advance()
            ctx, cur = cache.time_positions()
            assert int(cur.max()) < bound and (ctx.numel() == 0 or int(ctx.max()) < bound)
            assert cache.nbytes() == nbytes
    assert cache.chunk_index == 10_000


def test_no_grad_writes_are_in_place_and_grad_writes_keep_the_graph():
    cache = make_cache()
    ptr = cache.ctx_k.data_ptr()
    with torch.no_grad():
        cache.store_chunk(chunk_kv(cache, 1.0), chunk_kv(cache, 1.0))
    assert cache.ctx_k.data_ptr() == ptr
    cache.advance()
    w = torch.tensor(2.0, requires_grad=True)
    cache.store_chunk(chunk_kv(cache, 1.0) * w, chunk_kv(cache, 1.0))
    cache.advance()
    k, _ = cache.context(0)
    k.sum().backward()
    assert w.grad == cache.chunk_tokens * 2 * 8 * cache.batch_size  # only slot 1 depends on w: H * Tc * hd
    assert cache.detach_().ctx_k.requires_grad is False


def test_reset_and_window_zero():
    cache = make_cache(window=0, sink_tokens=0)
    assert cache.nbytes() == 0 and not cache.has_sink
    cache.store_chunk(chunk_kv(cache, 1.0), chunk_kv(cache, 1.0))
    cache.advance()
    assert cache.num_cached_chunks == 0 and cache.time_positions()[1].tolist() == [0, 1]
    cache = make_cache()
    cache.store_sink(torch.ones_like(cache.sink_k), torch.ones_like(cache.sink_v))
    cache.store_chunk(chunk_kv(cache, 1.0), chunk_kv(cache, 1.0))
    cache.advance()
    cache.reset()
    assert cache.chunk_index == 0 and not cache.sink_filled and cache.ctx_k.abs().sum() == 0
    with pytest.raises(ValueError, match="window"):
        make_cache(window=-1)


# ----------------------------------------------------------------------------- model-driven streams
def make_model(**overrides) -> A2VDiT:
    torch.manual_seed(0)
    model = A2VDiT(dit_config("test", **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def run_stream(model: A2VDiT, n_chunks: int) -> tuple[set[int], set[int], torch.Tensor]:
    """Stream ``n_chunks`` chunks (no grad); returns the distinct cache sizes, max positions and last v."""
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    s, Fc = cfg.latent_size, cfg.chunk_latent_frames
    ref = torch.randn(1, cfg.latent_channels, 1, s, s, generator=g)
    x = torch.randn(1, cfg.latent_channels, Fc, s, s, generator=g)
    audio = torch.randn(1, Fc, cfg.audio_tokens_per_frame, cfg.audio_dim, generator=g)
    t = torch.zeros(1, 1)
    sizes, max_positions = set(), set()
    with torch.no_grad():
        cache = model.new_cache(1)
        model.prefill_sink(cache, ref)
        for _ in range(n_chunks):
            model.write_chunk(cache, x, t, audio)
            ctx, cur = cache.time_positions()
            max_positions.add(max(int(cur.max()), int(ctx.max()) if ctx.numel() else 0))
            sizes.add(cache.nbytes())
        v = model.forward_chunk(x, t, audio, cache)
    return sizes, max_positions, v


def test_model_stream_keeps_memory_and_positions_flat():
    model = make_model(context_chunks=2, chunk_latent_frames=2)
    sizes, max_positions, v = run_stream(model, 300)
    assert len(sizes) == 1
    assert max(max_positions) == (model.config.context_chunks + 1) * model.config.chunk_latent_frames - 1
    assert torch.isfinite(v).all()


@pytest.mark.slow
def test_model_stream_of_10000_chunks():
    model = make_model(context_chunks=2, depth=1)
    sizes, max_positions, v = run_stream(model, 10_000)
    assert len(sizes) == 1 and max(max_positions) == model.config.context_chunks
    assert torch.isfinite(v).all()


def test_forward_chunk_errors():
    model = make_model()
    cfg = model.config
    s = cfg.latent_size
    x = torch.randn(1, cfg.latent_channels, 1, s, s)
    audio = torch.randn(1, 1, cfg.audio_tokens_per_frame, cfg.audio_dim)
    cache = model.new_cache(1)
    with pytest.raises(ValueError, match="prefill_sink"):
        model.forward_chunk(x, torch.zeros(1, 1), audio, cache)
    model.prefill_sink(cache, torch.randn(1, cfg.latent_channels, 1, s, s))
    with pytest.raises(ValueError, match="batch"):
        model.forward_chunk(x.repeat(2, 1, 1, 1, 1), torch.zeros(2, 1), audio.repeat(2, 1, 1, 1), cache)
    with pytest.raises(ValueError, match="t must"):
        model.forward_chunk(x, torch.zeros(1), audio, cache)
    with pytest.raises(ValueError, match="another model"):
        make_model(depth=1).forward_chunk(x, torch.zeros(1, 1), audio, cache)
    with pytest.raises(ValueError, match="use_id_sink"):
        make_model(use_id_sink=False).prefill_sink(cache, torch.randn(1, cfg.latent_channels, 1, s, s))


def test_sink_keys_have_no_temporal_channels():
    model = make_model()
    cache = model.new_cache(1)
    s = model.config.latent_size
    model.prefill_sink(cache, torch.randn(1, model.config.latent_channels, 1, s, s))
    time_dims = model.rope.split.time_dims
    assert cache.sink_k[..., :time_dims].abs().max() == 0
    assert cache.sink_k[..., time_dims:].abs().max() > 0
