"""If, Loop and Scan: the main graph is pruned around them, their subgraphs are left intact.

A channel that enters a subgraph (as a node input or read from the outer scope) or leaves it (as a
node output) would have to be removed inside the subgraph too; that is not done, so those spaces
pin, with the node named in the reason. Spaces that do not reach a subgraph stay prunable.
"""

from __future__ import annotations

import onnx

from ..builder import SpaceBuilder
from . import rule


@rule("If", "Loop", "Scan", "SequenceMap")
def control_flow(builder: SpaceBuilder, node: onnx.NodeProto) -> None:
    builder.pin_node(node, f"no channel rule for {node.op_type}: its subgraphs are kept unchanged, so channels "
                           "entering or leaving them are kept")
