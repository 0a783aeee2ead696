"""`python -m onnxprune` with the former --target-flops allocation (least error per FLOP, the latency model
only breaking ties), for bench/speed_default.py's `per-FLOP` variant: the same prune in every other way."""

from __future__ import annotations

import onnxprune.passes.sensitivity as sensitivity

_allocate = sensitivity.allocate_exact


def _per_flop(*args, realized: bool = False, **kwargs):
    return _allocate(*args, realized=False, **kwargs)


if __name__ == "__main__":
    sensitivity.allocate_exact = _per_flop
    from onnxprune.cli.app import main

    main()
