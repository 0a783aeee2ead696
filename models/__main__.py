"""Build the test models. python -m models list | build NAME [--exporter E] [--out PATH]
| build --all --out-dir DIR"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from . import ALL_NAMES, EXPORTERS, NAMES, SPECS, build, default_filename


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the model names and what each one is")
    b = sub.add_parser("build", help="export models to ONNX")
    b.add_argument("name", nargs="?", choices=ALL_NAMES, help="model to build")
    b.add_argument("--all", action="store_true", help="build every model (with --out-dir)")
    b.add_argument("--exporter", choices=[*EXPORTERS, "both"], default=None,
                   help="default: torchscript for NAME, both for --all")
    b.add_argument("--out", type=pathlib.Path, help="output file (default: ./NAME_EXPORTER.onnx)")
    b.add_argument("--out-dir", type=pathlib.Path, help="output directory")
    b.add_argument("--opset", type=int, default=None, help="default: 17 torchscript, 18 dynamo")
    b.add_argument("--static-batch", action="store_true", help="batch fixed to 1, not 'batch'")
    b.add_argument("--keep-bn", action="store_true",
                   help="keep BatchNormalization nodes (default: folded into Conv)")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in NAMES:
            spec = SPECS[name]
            print(f"{name:8s} {spec.input_name}{list(spec.input_shape)} -> "
                  f"{', '.join(spec.output_names)}   {spec.description}")
        return 0

    if args.all == (args.name is not None):
        parser.error("build: give exactly one of NAME or --all")
    if args.all and args.out:
        parser.error("build --all: use --out-dir, not --out")
    if args.out and args.out_dir:
        parser.error("build: give --out or --out-dir, not both")
    exporter = args.exporter or ("both" if args.all else "torchscript")
    exporters = EXPORTERS if exporter == "both" else (exporter,)
    if args.out and len(exporters) > 1:
        parser.error("build: --out names one file; pick one --exporter or use --out-dir")
    names = NAMES if args.all else [args.name]
    out_dir = args.out_dir or pathlib.Path(".")
    for name in names:
        for exp in exporters:
            path = args.out or out_dir / default_filename(
                name, exp, dynamic_batch=not args.static_batch, fold_bn=not args.keep_bn)
            t0 = time.perf_counter()
            path = build(name, exp, path, dynamic_batch=not args.static_batch, opset=args.opset,
                         fold_bn=not args.keep_bn)
            print(f"{path}  ({path.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
