"""Command line for training and exporting.

Train (one process, or any number under ``torchrun``)::

    python -m hub.train STAGE --preset P [--config FILE.json|yaml] [key.sub=value ...]
                                [--resume auto|PATH] [--out RUN_DIR]
    torchrun --nproc_per_node=8 -m hub.train teacher --preset base --resume auto

Export a run's latest checkpoint (EMA weights) as an inference checkpoint::

    python -m hub.train export RUN_DIR --out DIR [--checkpoint RUN_DIR/checkpoints/step_XXXXXXXX.pt]

Show a stage's presets and resolved config without training: ``--print-config``.
User mistakes print ``error: <message>`` and exit with status 2. A run stopped by SIGTERM or
Ctrl-C saves a checkpoint and exits with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hub.train.config import config_to_dict, resolve_config
from hub.train.stages import available_stages, get_stage


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", help=f"one of: {', '.join(available_stages())}")
    parser.add_argument("--preset", required=True, help="a named preset of the stage (e.g. test, tiny, base)")
    parser.add_argument("--config", help="a JSON or YAML file with train/model/data sections")
    parser.add_argument("--resume", help="'auto' (latest checkpoint in the run folder) or a checkpoint/run folder")
    parser.add_argument("--out", help="run folder (default: train.out_dir/train.run_name or STAGE-PRESET)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.lr=3e-4 model.dim=128")
    return parser


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub.train export")
    parser.add_argument("run_dir", help="a training run folder (with config.json and checkpoints/)")
    parser.add_argument("--out", required=True, help="output folder for config.json + model.safetensors")
    parser.add_argument("--checkpoint", help="a specific checkpoint file (default: the latest complete one)")
    return parser


def _setup_console_logging(is_main: bool) -> None:
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    import os

    is_main = os.environ.get("RANK", "0") == "0"
    _setup_console_logging(is_main)
    try:
        if args and args[0] == "export":
            from hub.train.trainer import export_run

            ns = _export_parser().parse_args(args[1:])
            out = export_run(ns.run_dir, ns.out, ns.checkpoint)
            print(f"exported {ns.run_dir} -> {out}")
            return 0

        ns = _train_parser().parse_intermixed_args(args)
        stage = get_stage(ns.stage)
        if ns.preset not in stage.presets:
            raise ValueError(f"stage {stage.name!r} has no preset {ns.preset!r}; accepted: "
                             f"{', '.join(sorted(stage.presets))}")
        cfg = resolve_config(stage.presets[ns.preset], ns.config, ns.overrides)
        if ns.print_config:
            print(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True))
            return 0
        run_dir = Path(ns.out) if ns.out else Path(cfg.train.out_dir) / (cfg.train.run_name or
                                                                         f"{stage.name}-{ns.preset}")
        from hub.train.distributed import shutdown
        from hub.train.trainer import Trainer

        try:
            result = Trainer(stage, cfg, run_dir, resume=ns.resume, preset=ns.preset).fit()
        finally:
            shutdown()
        if is_main:
            print(f"run folder: {result.run_dir} (step {result.step})")
            if result.export_dir is not None:
                print(f"inference checkpoint: {result.export_dir}")
        if result.stopped_early:
            return 128 + int(result.stop_signal or 15)
        return 0
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
