"""Turn channel scores into a removal plan under the --structured budget."""

from __future__ import annotations

from onnxprune.pipeline import Context
from onnxprune.plan import Budget, plan_global, plan_local


class ChannelBudget:
    name = "plan-channels"

    def __init__(self, budget: Budget):
        self.budget = budget

    def run(self, context: Context) -> None:
        planner = plan_global if self.budget.global_ranking else plan_local
        context.plan = {space: indices for space, indices in planner(context.scores, self.budget).items()
                        if len(indices)}
        context.report["budget"] = {
            "ratio": self.budget.ratio,
            "global": self.budget.global_ranking,
            "round_to": self.budget.round_to,
        }
