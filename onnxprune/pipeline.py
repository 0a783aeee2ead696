"""Passes and the context they share.

Analysis passes add facts (scores, plans) to the context; rewrite passes change the model and drop
the facts that depended on the old graph. The channel graph is computed on demand and cached, the
way an analysis manager hands out analyses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .deps import ChannelGraph, build_channel_graph
from .io.model import Model


@dataclass
class Context:
    model: Model
    options: dict[str, Any] = field(default_factory=dict)
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    plan: dict[int, np.ndarray] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = lambda message: None
    _graph: ChannelGraph | None = None

    def channel_graph(self) -> ChannelGraph:
        if self._graph is None:
            self._graph = build_channel_graph(self.model)
            patterns = self.options.get("exclude") or []
            if patterns:
                self._graph.exclude(list(patterns))
        return self._graph

    def invalidate(self) -> None:
        """The graph changed: channel spaces, scores and plans no longer apply."""
        self._graph = None
        self.scores = {}
        self.plan = {}
        self.model.invalidate()


class Pass(Protocol):
    name: str

    def run(self, context: Context) -> None: ...


def run_pipeline(passes: list[Pass], context: Context) -> Context:
    timings = context.report.setdefault("pass_seconds", {})
    for item in passes:
        start = time.perf_counter()
        context.log(f"\r{item.name} ...")  # a status while it runs (a terminal only): long passes show at once
        item.run(context)
        timings[item.name] = round(time.perf_counter() - start, 4)
        context.log(f"{item.name}: {timings[item.name]:.2f}s")
    return context
