"""Command line: ``python -m hub {generate,bench} ...``.

- ``python -m hub generate --image IMG --audio AUD --out OUT.mp4 [--mode stream|teacher] ...``
- ``python -m hub bench vae --preset P [--device D] [--json]``
- ``python -m hub bench stream --preset P [--device D] [--seconds S] [--json]``

User mistakes (bad files, bad settings) print ``error: <message>`` and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "vae": "hub.bench.vae",
    "stream": "hub.bench.stream",
    "long-stream": "hub.bench.long_stream",
}

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    try:
        if command == "generate":
            from hub.generate import main as generate_main

            return generate_main(rest)
        if command == "bench":
            if not rest or rest[0] not in BENCHMARKS:
                print(f"error: bench needs one of {sorted(BENCHMARKS)}", file=sys.stderr)
                return 2
            module = importlib.import_module(BENCHMARKS[rest[0]])
            return module.main(rest[1:])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"error: unknown command {command!r}; expected generate or bench", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
