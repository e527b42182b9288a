"""Two gloo processes on the CPU reach the same weights as one process with the same global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from hub.train.config import apply_overrides
from hub.train.stages import get_stage
from hub.train.trainer import Trainer, load_checkpoint

# Summation order of the gradient mean differs (all-reduce of two half-batch means vs one mean),
# so weights agree to float32 rounding, not bitwise.
TOLERANCE = 1e-5
STEPS = 6


def _cfg(batch_size: int, grad_accum: int = 1):
    stage = get_stage("toy")
    cfg = apply_overrides(stage.presets["test"], [
        "model.critic=true", f"train.steps={STEPS}", f"train.batch_size={batch_size}",
        f"train.grad_accum={grad_accum}", "train.ckpt_every=100", "data.num_samples=24"])
    return stage, cfg


def _worker(rank: int, world: int, port: int, run_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from hub.train.distributed import shutdown

    stage, cfg = _cfg(batch_size=2)
    try:
        Trainer(stage, cfg, run_dir).fit()
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_gloo_processes_match_one_process(tmp_path):
    torch.set_num_threads(1)
    # fork: the children reuse the imported torch (spawn would re-import it, ~10 s on 2 cores)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True,
                       start_method="fork")
    stage, cfg = _cfg(batch_size=4)  # same global batch: 4 = 2 per process x 2 processes
    Trainer(stage, cfg, tmp_path / "single").fit()
    stage, cfg = _cfg(batch_size=2, grad_accum=2)  # and the same through gradient accumulation
    Trainer(stage, cfg, tmp_path / "accum").fit()

    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoints" / f"step_{STEPS:08d}.pt")
    assert ddp["world_size"] == 2 and len(ddp["rng"]) == 2
    for other in ("single", "accum"):
        ref = load_checkpoint(tmp_path / other / "checkpoints" / f"step_{STEPS:08d}.pt")
        for key in ("model", "ema"):
            for name, tensor in ref[key].items():
                diff = (tensor - ddp[key][name]).abs().max().item()
                assert diff < TOLERANCE, f"{other}: {key}/{name} differs by {diff}"
    # Guard against a vacuous pass: training changed the weights substantially.
    init_stage, init_cfg = _cfg(batch_size=4)
    torch.manual_seed(init_cfg.train.seed)
    init = init_stage.build_model(init_cfg).state_dict()
    assert max((init[n] - ddp["model"][n]).abs().max().item() for n in init) > 1e-2
