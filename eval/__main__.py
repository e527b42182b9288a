"""``python -m eval``: evaluation command line.

Subcommands:
  list [--json] [--kind KIND]    every metric with availability and the reason
  fetch-weights NAME [NAME ...]  download pinned weight files into the cache (needs internet)
  run --benchmark B --methods M1,M2 --out DIR [--limit N] [--metrics a,b] [--quick] ...
                                 run a benchmark (resumable; see eval/runner.py and docs/EVAL.md)
  report DIR [DIR ...] [--out OUT]
                                 rebuild table.md, table.tex and plots/ from results.csv
  contact-sheet DIR --clip ID [--frames N] [--out FILE.png]
                                 frames of every method's cached output for one clip
  fit-facesync [--prepared DIR] [--out FILE]
                                 refit the FaceSync CCA sync model on prepared training clips
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_list(args: argparse.Namespace) -> int:
    from eval.metrics import list_metrics

    infos = list_metrics(args.kind)
    if args.json:
        print(json.dumps([m.to_dict() for m in infos], indent=2, ensure_ascii=False))
        return 0
    for m in infos:
        ok, reason = m.available()
        mark = "yes" if ok else "NO "
        print(f"{m.name:18s} {m.kind:9s} {m.arrow} available={mark} {m.variant}")
        print(f"{'':18s} {'' if ok else 'reason: '}{reason}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from eval.weights import ALL_WEIGHTS, fetch_weight

    for name in args.names:
        if name not in ALL_WEIGHTS:
            raise ValueError(f"unknown weight {name!r}; known: {', '.join(sorted(ALL_WEIGHTS))}")
    for name in args.names:
        path = fetch_weight(ALL_WEIGHTS[name])
        print(f"{name}: {path}")
    return 0


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items


def _cmd_run(args: argparse.Namespace) -> int:
    from eval.runner import RunConfig, parse_latency_json, run_benchmark

    methods = _split(args.methods) or []
    config = RunConfig(benchmark=args.benchmark, methods=methods, out=args.out, limit=args.limit,
                       metrics=_split(args.metrics), quick=args.quick, size=args.size, seed=args.seed,
                       device=args.device, prepared_dir=args.prepared,
                       latency_json=parse_latency_json(args.latency_json or []),
                       latency_seconds=args.latency_seconds, progress=not args.no_progress,
                       build_report=not args.no_report)
    summary = run_benchmark(config)
    print(f"{args.benchmark}: {summary.generated} outputs made, {summary.reused} reused; "
          f"{summary.metrics_computed} metric values computed, {summary.metrics_cached} from the cache; "
          f"{len(summary.failures)} failure(s)")
    for failure in summary.failures:
        print(f"  failed: {failure['method']} / {failure['clip']} / {failure['stage']}: {failure['error']}")
    print(f"wrote {summary.out}/results.csv, table.md, table.tex, plots/, metadata.json")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eval.report import build_report

    out = Path(args.out or args.dirs[0])
    done = build_report([Path(d) for d in args.dirs], out, png=not args.no_png)
    print(f"wrote {out}/table.md, table.tex ({done['tables']} tables) and {done['plots']} plots")
    for note in done["notes"].values():
        print(f"note: {note}")
    return 0


def _cmd_contact_sheet(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eval.contact_sheet import write_contact_sheet

    out = Path(args.out or Path(args.dir) / f"contact_sheet_{args.clip}.png")
    print(f"wrote {write_contact_sheet(args.dir, args.clip, out, args.frames)}")
    return 0


def _cmd_fit_facesync(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eval.fit_facesync import DEFAULT_OUT, fit_from_prepared

    fit_from_prepared(Path(args.prepared), Path(args.out or DEFAULT_OUT))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; other subcommands register themselves here as ``sub.add_parser``."""
    parser = argparse.ArgumentParser(prog="python -m eval", description="REST evaluation hub")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list metrics, their availability and the reason")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--kind", choices=["quality", "sync", "identity", "motion", "latency"])
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("fetch-weights", help="download pinned weight files (needs internet)")
    p.add_argument("names", nargs="+", help="weight names, e.g. syncnet fid_inception i3d_stylegan_v arcface")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("run", help="run a benchmark for some methods (resumable)")
    p.add_argument("--benchmark", required=True, help="mini-real, showcase, long-stream or latency")
    p.add_argument("--methods", required=True,
                   help="comma-separated specs: rest:DIR[?steps=1&sink=0&context=0], teacher:DIR, "
                        "folder:PATH, vae_recon[:DIR], ground_truth, still, audio_energy_warp")
    p.add_argument("--out", required=True, help="results folder (reused: finished work is skipped)")
    p.add_argument("--limit", type=int, help="only the first N clips")
    p.add_argument("--metrics", help="comma-separated metric names (default: the benchmark's)")
    p.add_argument("--quick", action="store_true", help="long-stream: 30 s streams instead of 2 and 10 min")
    p.add_argument("--size", type=int, help="face crop size (default: the first REST checkpoint's, else 128)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for the generators")
    p.add_argument("--prepared", help="prepared folder with ground-truth crops (default data/prepared_<size>)")
    p.add_argument("--latency-json", action="append",
                   help="LABEL=FILE (or FILE for every REST method): a `python -m hub bench stream` result "
                        "to use instead of measuring; repeatable")
    p.add_argument("--latency-seconds", type=float, default=10.0, help="speech streamed per latency measurement")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="skip tables and plots (build them with `report`)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="rebuild tables and plots from results.csv")
    p.add_argument("dirs", nargs="+", help="results folders (several are merged, e.g. a benchmark and latency)")
    p.add_argument("--out", help="where to write (default: the first folder)")
    p.add_argument("--no-png", action="store_true", help="HTML plots only")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("contact-sheet", help="frames of every method's output for one clip, as a PNG")
    p.add_argument("dir", help="a results folder with cached outputs")
    p.add_argument("--clip", required=True, help="clip id, e.g. hdtf_aoc_wda")
    p.add_argument("--frames", type=int, default=8, help="frames per method (evenly spaced)")
    p.add_argument("--out", help="PNG path (default DIR/contact_sheet_<clip>.png)")
    p.set_defaults(func=_cmd_contact_sheet)

    p = sub.add_parser("fit-facesync", help="refit the FaceSync CCA sync model (av_facesync) on prepared clips")
    p.add_argument("--prepared", default="data/prepared_256",
                   help="a `python -m hub.data prepare` folder (fits on split=train only; default data/prepared_256)")
    p.add_argument("--out", help="model file (default eval/assets/facesync_cca.safetensors)")
    p.set_defaults(func=_cmd_fit_facesync)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print ``error: ...`` and return 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
