"""The teacher's noise-schedule ablation: independent vs monotone vs synchronous per-chunk levels.

    python scripts/teacher_schedule_ablation.py [--steps 800] [--out results/teacher-schedules/results.json]

Trains one tiny teacher per schedule (``python -m hub.train teacher --preset tiny
model.schedule=S train.steps=N``, run folders ``runs/teacher-sched-S``; finished runs are reused),
then evaluates each run's EMA weights at its last checkpoint with the stage's own validation
(``TeacherStage.evaluate``: velocity MSE on the val windows at t = 0.25 / 0.5 / 0.75 for all chunks,
and with a clean past: the first half of the chunks at t = 0). Same seeds for every schedule.
Writes the numbers with their provenance (git commit, device, versions, run configs, checkpoint
sha256) as JSON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCHEDULES = ("independent", "monotone", "synchronous")


def train(schedule: str, steps: int) -> Path:
    run = REPO / "runs" / f"teacher-sched-{schedule}"
    final = run / "checkpoints" / f"step_{steps:08d}.pt"
    if not final.is_file():
        subprocess.run([sys.executable, "-m", "hub.train", "teacher", "--preset", "tiny",
                        f"model.schedule={schedule}", f"train.steps={steps}", "train.warmup_steps=50",
                        f"train.ckpt_every={steps // 2}", f"train.run_name=teacher-sched-{schedule}",
                        "train.export_at_end=false", "--resume", "auto"], cwd=REPO, check=True)
    return final


def evaluate(schedule: str, checkpoint: Path) -> dict:
    import torch

    from hub.io_utils import sha256_file
    from hub.train.config import config_from_dict
    from hub.train.stages import get_stage
    from hub.train.trainer import load_checkpoint, read_run_config

    stage = get_stage("teacher")
    saved = read_run_config(checkpoint.parent.parent)
    cfg = config_from_dict(stage.presets[saved["preset"]], saved["config"])
    state = load_checkpoint(checkpoint)
    model = stage.build_model(cfg).eval()
    weights = model.state_dict()
    weights.update(state["ema"] or state["model"])  # the EMA weights, as an export would ship
    model.load_state_dict(weights)
    with torch.inference_mode():
        metrics = stage.evaluate(model, cfg)
    return {"schedule": schedule, "step": state["step"], "checkpoint": str(checkpoint.relative_to(REPO)),
            "checkpoint_sha256": sha256_file(checkpoint), "run_config": saved["config"], "val": metrics}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps per schedule (default 800)")
    parser.add_argument("--out", default="results/teacher-schedules/results.json")
    args = parser.parse_args()
    import torch

    from hub.bench.common import metadata, write_json

    torch.set_num_threads(1)
    rows = [evaluate(s, train(s, args.steps)) for s in SCHEDULES]
    for row in rows:
        print(f"{row['schedule']:12s} " + "  ".join(f"{k} {v:.4f}" for k, v in row["val"].items()))
    write_json(REPO / args.out, {"rows": rows, "metadata": metadata(torch.device("cpu"), command=" ".join(sys.argv),
                                                                    steps=args.steps)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
