"""Optional inference fast paths for a :class:`~hub.models.rest.RestModel`, measured before kept.

Each lever is off in :data:`FAST_PATH_PRESETS["plain"]`; a preset turns on only the levers that
``python -m hub bench stream --levers`` measured faster at equal output on that kind of device
(docs/LATENCY.md has the numbers). ``tests/test_bench.py`` checks every lever against the plain
path within a tolerance.

Levers:

- ``threads``: ``torch.set_num_threads`` (process-wide; CPU only).
- ``channels_last``: the autoencoder's 2-D convolutions in NHWC layout.
- ``int8_linear``: dynamic int8 quantisation of the DiT blocks' ``nn.Linear`` layers (CPU only;
  weights int8, activations quantised per batch at run time).
- ``bf16``: DiT and decoder weights in bfloat16 (GPU only; the KV cache follows the DiT's dtype).
- ``compile``: ``torch.compile`` of the DiT blocks (guarded: a failure leaves the eager blocks).
- ``inference_mode``: run the stream under ``torch.inference_mode()`` instead of ``no_grad``
  (:func:`inference_context`; the whole stream, ``reset`` included, must run inside it).

Use :func:`apply_fast_paths` on a model before building the engine; it returns a new model and
leaves the given one untouched.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from hub.models.rest import RestModel


@dataclass(frozen=True)
class FastPaths:
    """Which inference levers to apply (all off = the plain path)."""

    threads: int | None = None  # torch CPU threads; None leaves torch's setting
    channels_last: bool = False  # autoencoder convolutions in NHWC
    int8_linear: bool = False  # dynamic int8 DiT Linear layers (CPU)
    bf16: bool = False  # bfloat16 DiT + decoder (GPU)
    compile: bool = False  # torch.compile the DiT blocks
    inference_mode: bool = False  # torch.inference_mode around the stream (see inference_context)

    def __post_init__(self) -> None:
        if self.threads is not None and not 1 <= self.threads <= 256:
            raise ValueError(f"threads={self.threads}; accepted: 1..256 or None")
        if self.int8_linear and self.bf16:
            raise ValueError("int8_linear and bf16 exclude each other (int8 is a CPU path, bf16 a GPU path)")

    def describe(self) -> str:
        """Short human-readable list of the levers that are on (``"plain"`` when none)."""
        on = [name for name, value in dataclasses.asdict(self).items() if value and name != "threads"]
        if self.threads is not None:
            on.insert(0, f"threads={self.threads}")
        return "+".join(on) if on else "plain"


# Measured on the shared 2-core CPU (docs/LATENCY.md): one thread was ~6x faster than two while
# the other core was busy; the other CPU levers showed no clear gain there and stay off. The GPU
# preset is plain until a GPU sweep (``bench stream --levers --device cuda``) has measured bf16.
FAST_PATH_PRESETS: dict[str, FastPaths] = {
    "plain": FastPaths(),
    "cpu": FastPaths(threads=1),
    "gpu": FastPaths(),
}


def default_fast_paths(device: torch.device | str) -> FastPaths:
    """The measured-best preset for a device type (``"cpu"`` or ``"gpu"``)."""
    return FAST_PATH_PRESETS["gpu" if torch.device(device).type == "cuda" else "cpu"]


def inference_context(paths: FastPaths) -> contextlib.AbstractContextManager:
    """The grad mode to run a whole stream in: ``torch.inference_mode()`` or a no-op."""
    return torch.inference_mode() if paths.inference_mode else contextlib.nullcontext()


def apply_fast_paths(model: RestModel, paths: FastPaths, device: torch.device | str = "cpu") -> RestModel:
    """A copy of ``model`` on ``device`` with the levers of ``paths`` applied (eval mode).

    Raises ValueError for a lever that does not exist on ``device`` (int8 off the CPU, bf16 on it).
    """
    device = torch.device(device)
    if paths.int8_linear and device.type != "cpu":
        raise ValueError(f"int8_linear is a CPU fast path; device is {device}")
    if paths.bf16 and device.type != "cuda":
        raise ValueError(f"bf16 is a GPU fast path; device is {device} (CPU bf16 measured slower here)")
    if paths.threads is not None:
        torch.set_num_threads(paths.threads)
    fast = copy.deepcopy(model).to(device).eval()
    if paths.channels_last:
        fast.vae = fast.vae.to(memory_format=torch.channels_last)
    if paths.bf16:
        fast.dit = fast.dit.to(torch.bfloat16)
        fast.vae.decoder = fast.vae.decoder.to(torch.bfloat16)
        _cast_inputs_to_weights(fast.vae.decoder)
    if paths.int8_linear:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice (torch >= 2.10)
            fast.dit.blocks = quantize_dynamic(fast.dit.blocks, {nn.Linear}, dtype=torch.qint8)
    if paths.compile:
        _compile_blocks(fast.dit)
    return fast


def _cast_inputs_to_weights(module: nn.Module) -> None:
    """Cast a module's floating inputs to its parameters' dtype and its output back to float32."""
    dtype = next(module.parameters()).dtype

    def pre_hook(_module: nn.Module, args: tuple) -> tuple:
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def post_hook(_module: nn.Module, _args: tuple, output):
        return output.float() if torch.is_tensor(output) and output.is_floating_point() else output

    module.register_forward_pre_hook(pre_hook)
    module.register_forward_hook(post_hook)


def _compile_blocks(dit: nn.Module) -> None:
    """``torch.compile`` each DiT block in place when this torch supports it (else leave eager)."""
    if not hasattr(torch, "compile"):
        return
    try:
        for i, block in enumerate(dit.blocks):
            dit.blocks[i] = torch.compile(block, dynamic=True)
    except Exception as exc:  # noqa: BLE001 -- compile back-ends fail in many ways; eager is correct
        warnings.warn(f"torch.compile unavailable ({exc}); using eager DiT blocks", RuntimeWarning, stacklevel=2)
