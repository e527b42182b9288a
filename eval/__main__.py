"""``python -m eval``: evaluation command line.

Subcommands:
  list [--json] [--kind KIND]    every metric with availability and the reason
  fetch-weights NAME [NAME ...]  download pinned weight files into the cache (needs internet)
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
