"""Propagation rules, one small function per op family, registered by op type.

A rule reads its node's inputs' layouts from the SpaceBuilder, ties the axes that must lose the same
channels, gives the outputs their layouts and registers fixups for attributes and shape constants.
An op with no rule pins every tensor it touches: unknown semantics are never guessed.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from ..builder import SpaceBuilder

Rule = Callable[[SpaceBuilder, onnx.NodeProto], None]
RULES: dict[str, Rule] = {}


def rule(*op_types: str) -> Callable[[Rule], Rule]:
    def register(function: Rule) -> Rule:
        for op_type in op_types:
            assert op_type not in RULES, f"two rules for {op_type}"
            RULES[op_type] = function
        return function

    return register


def apply_rule(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    if node.domain not in ("", "ai.onnx"):
        builder.pin_node(node, f"{node.op_type} from domain '{node.domain}' is not understood")
        return
    function = RULES.get(node.op_type)
    if function is None:
        builder.pin_node(node, f"no channel rule for {node.op_type}")
        return
    function(builder, node)


# Registers the rules.
from . import control_flow, conv, elementwise, layout_ops, linear, normalization, quant, reshape  # noqa: E402,F401
