"""SmolLM2-135M-Instruct in every ONNX form (cached in $ONNXPRUNE_CACHE/llm).

    python -m models.llm build FORM... | --all [--force]
    python -m models.llm info FORM... | --all [--json]
    python -m models.llm ppl FORM... | --all [--torch] [--window 128] [--max-windows N]
    python -m models.llm generate FORM [PROMPT] [--max-new-tokens 20] [--raw]
    python -m models.llm calib FORM --out calib.npz [--windows 8] [--window 128]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from . import BUILD_ORDER, FORMS, build, build_info


def _forms(parser: argparse.ArgumentParser, args: argparse.Namespace, allow_none: bool = False) -> list[str]:
    if args.all and args.forms:
        parser.error("give FORM names or --all, not both")
    if args.all:
        return list(BUILD_ORDER)
    if not args.forms and not allow_none:
        parser.error(f"give FORM names ({', '.join(FORMS)}) or --all")
    unknown = [f for f in args.forms if f not in FORMS]
    if unknown:
        parser.error(f"unknown form(s) {', '.join(unknown)}; expected {', '.join(FORMS)}")
    return list(args.forms)


def _cmd_build(forms: list[str], force: bool) -> int:
    failed = []
    for form in forms:
        t0 = time.perf_counter()
        try:
            path = build(form, force=force)
        except Exception as exc:  # report and go on: one broken exporter must not hide the others
            print(f"{form}: FAILED after {time.perf_counter() - t0:.0f} s: {type(exc).__name__}: "
                  f"{str(exc)[-2000:]}", file=sys.stderr)
            failed.append(form)
            continue
        info = build_info(form)
        size = sum(info["files"].values()) / 1e6
        print(f"{form:14s} {path}  {size:.0f} MB  export {info['export_seconds']:.1f} s")
    return 1 if failed else 0


def _cmd_info(forms: list[str], as_json: bool) -> int:
    from .graphinfo import brief, summary

    out = {}
    for form in forms:
        out[form] = {**summary(build(form)), "build": build_info(form)}
        if not as_json:
            print(f"[{form}] export {out[form]['build']['export_seconds']} s")
            print(brief(out[form]))
    if as_json:
        print(json.dumps(out, indent=2))
    return 0


def _cmd_ppl(forms: list[str], torch_ref: bool, window: int, max_windows: int | None) -> int:
    from . import eval_texts
    from .evaluate import perplexity, perplexity_torch

    texts = eval_texts()
    ref = None
    if torch_ref:
        t0 = time.perf_counter()
        ref = perplexity_torch(texts, window=window, max_windows=max_windows)
        print(f"{'torch':14s} ppl {ref:.4f}  ({time.perf_counter() - t0:.1f} s)")
    for form in forms:
        path = build(form)
        t0 = time.perf_counter()
        ppl = perplexity(path, texts, form=form, window=window, max_windows=max_windows)
        rel = f"  {100 * (ppl / ref - 1):+.4f}% vs torch" if ref else ""
        print(f"{form:14s} ppl {ppl:.4f}  ({time.perf_counter() - t0:.1f} s){rel}")
    return 0


def _cmd_generate(form: str, prompt: str, max_new_tokens: int, raw: bool) -> int:
    from .evaluate import generate

    t0 = time.perf_counter()
    text = generate(build(form), prompt, form=form, max_new_tokens=max_new_tokens, chat=not raw)
    print(f"{form}: {text!r}  ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_calib(form: str, out: pathlib.Path, windows: int, window: int) -> int:
    import numpy as np

    from . import calibration_feeds

    feeds = calibration_feeds(form, n_windows=windows, window=window)
    # one sample per row along axis 0: the --calib .npz layout (an empty past stays [N, 3, 0, 64])
    arrays = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    if any(a.ndim == 0 for a in arrays.values()):
        raise SystemExit("calib: this form has a scalar input; use calibration_feeds() from Python")
    np.savez(out, **arrays)
    print(f"{out}: {', '.join(f'{k}{list(v.shape)}' for k, v in arrays.items())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.llm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "export forms into the cache"), ("info", "describe built forms"),
                       ("ppl", "perplexity on the evaluation text")):
        p = sub.add_parser(name, help=text)
        p.add_argument("forms", nargs="*", metavar="FORM", help=", ".join(FORMS))
        p.add_argument("--all", action="store_true", help=f"every form ({', '.join(BUILD_ORDER)})")
        if name == "build":
            p.add_argument("--force", action="store_true", help="export again even if cached")
        if name == "info":
            p.add_argument("--json", action="store_true")
        if name == "ppl":
            p.add_argument("--torch", action="store_true", help="also the PyTorch reference")
            p.add_argument("--window", type=int, default=128)
            p.add_argument("--max-windows", type=int, default=None)
    g = sub.add_parser("generate", help="greedy generation smoke test")
    g.add_argument("form", choices=FORMS)
    g.add_argument("prompt", nargs="?", default="What is the capital of France?")
    g.add_argument("--max-new-tokens", type=int, default=20)
    g.add_argument("--raw", action="store_true", help="no chat template")
    c = sub.add_parser("calib", help="calibration windows as an .npz for --calib")
    c.add_argument("form", choices=FORMS)
    c.add_argument("--out", type=pathlib.Path, required=True)
    c.add_argument("--windows", type=int, default=8)
    c.add_argument("--window", type=int, default=128)
    args = parser.parse_args(argv)

    if args.command == "build":
        return _cmd_build(_forms(parser, args), args.force)
    if args.command == "info":
        return _cmd_info(_forms(parser, args), args.json)
    if args.command == "ppl":
        forms = _forms(parser, args, allow_none=args.torch)
        return _cmd_ppl(forms, args.torch, args.window, args.max_windows)
    if args.command == "generate":
        return _cmd_generate(args.form, args.prompt, args.max_new_tokens, args.raw)
    return _cmd_calib(args.form, args.out, args.windows, args.window)


if __name__ == "__main__":
    sys.exit(main())
