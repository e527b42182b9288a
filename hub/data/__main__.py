"""Command line for data preparation.

    python -m hub.data prepare --src SRC --out DIR --size N [--split S] [--workers W]
    python -m hub.data decode --root DIR [--splits train,motion] [--decoder pyav|opencv]

SRC is a folder of raw talking-face videos (ids and identities from the file names, split from
--split) or a manifest.csv (its split and identity columns; only kind=clip rows).
"""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub.data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="crop raw videos into square 25 fps training clips")
    prep.add_argument("--src", required=True, help="folder of videos, or a manifest.csv")
    prep.add_argument("--out", required=True, help="output folder (resumable)")
    prep.add_argument("--size", type=int, required=True, help="output side in pixels, e.g. 128")
    prep.add_argument("--split", default=None,
                      help="folder: split name for every clip (default train); "
                           "manifest: keep only this split (default all)")
    prep.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 2) - 1)),
                      help="parallel processes (default: CPU count - 1, at most 4)")
    prep.add_argument("--scale", type=float, default=2.0, help="crop side / face size (default 2.0)")
    prep.add_argument("--min-scale", type=float, default=1.5,
                      help="shrink the crop to fit the frame down to this x face size before "
                           "padding (default 1.5)")
    prep.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    prep.add_argument("--limit", type=int, default=None, help="prepare at most this many clips")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    dec = sub.add_parser("decode", help="cache decoded frames and audio of a prepared folder (hub.data.decoded)")
    dec.add_argument("--root", required=True, help="a prepared folder (holds index.csv)")
    dec.add_argument("--splits", default="train,motion", help="comma-separated splits (default train,motion; add val for evaluation)")
    dec.add_argument("--decoder", default="pyav", choices=["pyav", "opencv"],
                     help="pyav (default) or opencv (machines without PyAV)")
    return parser


def _decode(args: argparse.Namespace) -> int:
    from hub.data.decoded import decode_prepared

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    try:
        # Decoding is not training: val may be decoded (for evaluation), the datasets still refuse it.
        counts = decode_prepared(args.root, splits, decoder=args.decoder, allow_val="val" in splits)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{counts['written']} arrays written, {counts['current']} already current -> {args.root}/decoded")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "decode":
        return _decode(args)
    from hub.data.prepare import PrepareConfig, list_sources, prepare

    try:
        config = PrepareConfig(size=args.size, scale=args.scale, min_scale=args.min_scale,
                               crf=args.crf)
        clips = list_sources(args.src, args.split)
        if args.limit is not None:
            clips = clips[: max(0, args.limit)]
        counts = prepare(clips, args.out, config, workers=args.workers, progress=not args.quiet)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{counts['done']} prepared, {counts['skipped']} already done, {counts['failed']} failed "
        f"of {counts['total']} clips in {counts['seconds']} s -> {args.out}/index.csv"
    )
    return 0 if counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
