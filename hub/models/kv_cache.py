"""ID-Context Cache: the streaming key/value memory of the block-causal A2V-DiT student.

Two regions per transformer layer, both preallocated from the model config:

- **ID-Sink** (``sink_k``, ``sink_v``): the keys/values of the reference (identity) tokens. Written once
  per stream by ``A2VDiT.prefill_sink`` and never evicted. Sink keys carry only the spatial rotary
  part (their temporal channels are zero), so they are valid for every chunk of the stream.
- **Context-Cache** (``ctx_k``, ``ctx_v``): a ring buffer of the last ``window`` chunks. Keys are
  stored with the spatial rotary part applied and WITHOUT the temporal part; the model re-applies the
  temporal rotation at read time with positions relative to the current chunk
  (:meth:`IDContextCache.time_positions`), so positions stay within ``window + 1`` chunks forever.

Memory is constant for any stream length (:meth:`IDContextCache.nbytes`). State is explicit: four
tensors, ``chunk_index`` (chunks written since ``reset``) and ``sink_filled``.

Under autograd (Self-Forcing rollouts) writes are out-of-place, so every stored tensor keeps its
graph; ``detach_()`` cuts it. Under ``torch.no_grad()`` writes are in-place and allocate nothing.
"""

from __future__ import annotations

import torch


def _write(buffer: torch.Tensor, dim: int, index: int, value: torch.Tensor) -> torch.Tensor:
    """Write ``value`` into ``buffer`` at ``index`` along ``dim``; out-of-place when grad is enabled."""
    idx = torch.tensor([index], device=buffer.device)
    value = value.to(buffer.dtype).unsqueeze(dim)
    if torch.is_grad_enabled():
        return buffer.index_copy(dim, idx, value)  # differentiable, keeps older graphs intact
    return buffer.index_copy_(dim, idx, value)


class IDContextCache:
    """Per-layer ID-Sink + ring-buffer Context-Cache for one batch of streams.

    Shapes (``D`` = depth, ``B`` = batch, ``H`` = heads, ``hd`` = head dim, ``W`` = window chunks,
    ``Tc`` = tokens per chunk, ``Ns`` = sink tokens, 0 without an ID-Sink)::

        sink_k, sink_v : (D, B, H, Ns, hd)
        ctx_k,  ctx_v  : (D, B, H, W, Tc, hd)

    Build it with ``A2VDiT.new_cache``. Chunk ``c`` lives in slot ``c % W``; slots are not kept in
    time order (attention does not care), each slot's relative position is computed instead.
    """

    def __init__(self, *, depth: int, batch_size: int, heads: int, head_dim: int, sink_tokens: int,
                 chunk_tokens: int, chunk_latent_frames: int, window: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        if batch_size < 1:
            raise ValueError(f"cache batch_size must be >= 1, got {batch_size}")
        if window < 0:
            raise ValueError(f"cache window must be >= 0 chunks, got {window}")
        self.depth = depth
        self.batch_size = batch_size
        self.window = window
        self.sink_tokens = sink_tokens
        self.chunk_tokens = chunk_tokens
        self.chunk_latent_frames = chunk_latent_frames
        kw = dict(device=device, dtype=dtype)
        self.sink_k = torch.zeros(depth, batch_size, heads, sink_tokens, head_dim, **kw)  # (D, B, H, Ns, hd)
        self.sink_v = torch.zeros(depth, batch_size, heads, sink_tokens, head_dim, **kw)  # (D, B, H, Ns, hd)
        self.ctx_k = torch.zeros(depth, batch_size, heads, window, chunk_tokens, head_dim, **kw)  # (D, B, H, W, Tc, hd)
        self.ctx_v = torch.zeros(depth, batch_size, heads, window, chunk_tokens, head_dim, **kw)  # (D, B, H, W, Tc, hd)
        self.chunk_index = 0
        self.sink_filled = False

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.ctx_k.device

    @property
    def dtype(self) -> torch.dtype:
        return self.ctx_k.dtype

    @property
    def has_sink(self) -> bool:
        return self.sink_tokens > 0

    @property
    def num_cached_chunks(self) -> int:
        """How many context chunks the next chunk attends to: ``min(chunk_index, window)``."""
        return min(self.chunk_index, self.window)

    def reset(self) -> None:
        """Start a new stream: forget the sink and the context (buffers are kept, zeroed, detached)."""
        for name in ("sink_k", "sink_v", "ctx_k", "ctx_v"):
            setattr(self, name, torch.zeros_like(getattr(self, name).detach()))
        self.chunk_index = 0
        self.sink_filled = False

    def advance(self) -> None:
        """Count one more chunk as written (the model calls this after :meth:`store_chunk`)."""
        self.chunk_index += 1

    def detach_(self) -> "IDContextCache":
        """Cut the autograd graph behind every stored tensor (truncated backprop through the stream)."""
        self.sink_k, self.sink_v = self.sink_k.detach(), self.sink_v.detach()
        self.ctx_k, self.ctx_v = self.ctx_k.detach(), self.ctx_v.detach()
        return self

    def nbytes(self) -> int:
        """Bytes held by the cache tensors (constant for any stream length)."""
        return sum(t.numel() * t.element_size() for t in (self.sink_k, self.sink_v, self.ctx_k, self.ctx_v))

    # ------------------------------------------------------------------ writes
    def store_sink(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the ID-Sink keys/values of every layer: ``k``, ``v`` of shape ``(D, B, H, Ns, hd)``."""
        assert k.shape == self.sink_k.shape and v.shape == self.sink_v.shape, (k.shape, self.sink_k.shape)
        self.sink_k = k.to(self.dtype)
        self.sink_v = v.to(self.dtype)
        self.sink_filled = True

    def store_chunk(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store chunk ``chunk_index`` (evicting chunk ``chunk_index - window``); does not advance.

        ``k`` (keys without the temporal rotary part) and ``v``: ``(D, B, H, Tc, hd)``.
        """
        if self.window == 0:
            return
        expected = (self.depth, self.batch_size, self.ctx_k.shape[2], self.chunk_tokens, self.ctx_k.shape[-1])
        assert tuple(k.shape) == expected and tuple(v.shape) == expected, (k.shape, expected)
        slot = self.chunk_index % self.window
        self.ctx_k = _write(self.ctx_k, 3, slot, k)  # (D, B, H, W, Tc, hd)
        self.ctx_v = _write(self.ctx_v, 3, slot, v)  # (D, B, H, W, Tc, hd)

    # ------------------------------------------------------------------ reads
    def sink(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sink keys/values of ``layer``: ``(B, H, Ns, hd)`` each."""
        return self.sink_k[layer], self.sink_v[layer]

    def context(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached context keys (no temporal rotary) and values of ``layer``: ``(B, H, n * Tc, hd)``.

        Only the ``n = num_cached_chunks`` filled slots, in slot order (see :meth:`time_positions`).
        """
        n = self.num_cached_chunks
        k = self.ctx_k[layer, :, :, :n].flatten(2, 3)  # (B, H, n * Tc, hd)
        v = self.ctx_v[layer, :, :, :n].flatten(2, 3)  # (B, H, n * Tc, hd)
        return k, v

    def slot_chunk_offsets(self) -> torch.Tensor:
        """For each filled slot, how many chunks ago it was written (1 = the previous chunk): ``(n,)``."""
        n = self.num_cached_chunks
        slots = torch.arange(n, device=self.device)
        if n == 0:
            return slots
        # Slot s holds the latest chunk c < chunk_index with c = s (mod W): c = i - 1 - ((i - 1 - s) mod W).
        return 1 + torch.remainder(self.chunk_index - 1 - slots, self.window)  # (n,)

    def time_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal positions (latent frames) relative to the stream window, bounded for ever.

        The current chunk sits at chunk position ``n = num_cached_chunks``; a slot written ``d`` chunks
        ago at ``n - d``. Returns ``(context (n, F), current (F,))`` with ``F`` latent frames per chunk;
        every value is in ``[0, (window + 1) * F)``.
        """
        frames = self.chunk_latent_frames
        n = self.num_cached_chunks
        within = torch.arange(frames, device=self.device)  # (F,)
        ctx_chunks = n - self.slot_chunk_offsets()  # (n,)
        context = ctx_chunks[:, None] * frames + within[None, :]  # (n, F)
        current = n * frames + within  # (F,)
        return context, current
