"""Turn channel scores into a removal plan: --structured for channel spaces, --heads for head spaces."""

from __future__ import annotations

from onnxprune.pipeline import Context
from onnxprune.plan import Budget, plan_global, plan_local


class ChannelBudget:
    name = "plan-channels"

    def __init__(self, budget: Budget, heads: Budget | None = None):
        self.budgets = {"channels": budget, "heads": heads or Budget(0.0)}

    def run(self, context: Context) -> None:
        kinds = {space.id: space.kind for space in context.channel_graph().spaces}
        context.plan = {}
        for kind, budget in self.budgets.items():
            scores = {space: values for space, values in context.scores.items() if kinds[space] == kind}
            if budget.ratio <= 0 or not scores:
                continue
            planner = plan_global if budget.global_ranking else plan_local
            context.plan.update({space: indices for space, indices in planner(scores, budget).items() if len(indices)})
        context.report["budget"] = {
            kind: {"ratio": b.ratio, "global": b.global_ranking, "round_to": b.round_to}
            for kind, b in self.budgets.items()
        }
