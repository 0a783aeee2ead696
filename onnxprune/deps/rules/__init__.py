"""Propagation rules, one small function per op family, registered by op type.

A rule reads its node's inputs' layouts from the SpaceBuilder, ties the axes that must lose the same
channels, gives the outputs their layouts and registers fixups for attributes and shape constants.
An op with no rule pins every tensor it touches: unknown semantics are never guessed. Rules are
registered per domain: ONNX's own ops, and ONNX Runtime's contrib ops (com.microsoft, plus the few it
registers in the default domain, like SimplifiedLayerNormalization) as their fusions write them.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from ..builder import SpaceBuilder

Rule = Callable[[SpaceBuilder, onnx.NodeProto], None]
RULES: dict[str, Rule] = {}  # the default domain (ai.onnx), by op type
DOMAIN_RULES: dict[tuple[str, str], Rule] = {}  # other domains, by (domain, op type)
CONTRIB = "com.microsoft"
# Patterns: a function that recognizes a chain of nodes starting at one of op type (QK-norm's
# Reshape -> RMSNorm -> Reshape) and handles the chain as a whole; False leaves the node to its rule.
Pattern = Callable[[SpaceBuilder, onnx.NodeProto], bool]
PATTERNS: dict[str, list[Pattern]] = {}


def rule(*op_types: str, domain: str = "") -> Callable[[Rule], Rule]:
    def register(function: Rule) -> Rule:
        for op_type in op_types:
            table, key = (RULES, op_type) if domain in ("", "ai.onnx") else (DOMAIN_RULES, (domain, op_type))
            assert key not in table, f"two rules for {key}"
            table[key] = function
        return function

    return register


def pattern(op_type: str) -> Callable[[Pattern], Pattern]:
    def register(function: Pattern) -> Pattern:
        PATTERNS.setdefault(op_type, []).append(function)
        return function

    return register


def apply_rule(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    if node.domain in ("", "ai.onnx") and any(match(builder, node) for match in PATTERNS.get(node.op_type, ())):
        return
    if node.domain in ("", "ai.onnx"):
        function = RULES.get(node.op_type)
        why = f"no channel rule for {node.op_type}"
    else:
        function = DOMAIN_RULES.get((node.domain, node.op_type))
        why = f"{node.op_type} from domain '{node.domain}' is not understood"
    if function is None:
        builder.pin_node(node, why)
        return
    function(builder, node)


# Registers the rules.
from . import (  # noqa: E402,F401
    contrib_attention,
    contrib_linear,
    contrib_norm,
    control_flow,
    conv,
    elementwise,
    layout_ops,
    linear,
    normalization,
    quant,
    reshape,
)
