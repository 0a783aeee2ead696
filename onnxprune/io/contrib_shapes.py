"""Corrections to ONNX Runtime's symbolic shape inference for contrib ops it gets wrong.

When one node's shape comes out wrong, the tool's next consistency check fails and it gives up on the
whole graph, so every rule downstream sees unknown shapes and pins. onnxruntime-genai's int4 models
start with GatherBlockQuantized (the quantized embedding table) whose output ORT 1.32's tool takes
to be as wide as the packed bytes (288 for 576 int4 values); the first MatMulNBits then fails its
K check. The subclass here fixes that node and runs the tool's own loop; anything it does not know
of the tool's internals makes it hand back the tool unchanged.
"""

from __future__ import annotations

import onnx

_INTERNALS = ("_preprocess", "_infer_impl", "_update_output_from_vi", "_infer_Gather", "_get_shape")


def with_contrib_fixes(inference: type) -> type:
    """A subclass of ORT's SymbolicShapeInference class `inference` with the fixes; `inference` itself
    when this ORT's tool is not built the way the fixes expect."""
    if not all(hasattr(inference, name) for name in _INTERNALS):
        return inference

    class ContribShapeInference(inference):
        def _infer_Gather(self, node):  # the tool dispatches GatherBlockQuantized here
            if node.op_type != "GatherBlockQuantized":
                return super()._infer_Gather(node)
            data = list(self._get_shape(node, 0))
            indices = list(self._get_shape(node, 1))
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            bits = int(attrs.get("bits", 4))
            if self.known_vi_[node.input[0]].type.tensor_type.elem_type == onnx.TensorProto.UINT8 and bits < 8:
                data[-1] = data[-1] * (8 // bits)  # uint8 data holds 8 // bits values per byte
            axis = int(attrs.get("gather_axis", 0))
            axis = axis + len(data) if axis < 0 else axis
            elem_type = self.known_vi_[node.input[2]].type.tensor_type.elem_type  # the scales' type
            shape = data[:axis] + indices + data[axis + 1:]
            self.known_vi_[node.output[0]].CopyFrom(onnx.helper.make_tensor_value_info(node.output[0], elem_type,
                                                                                       shape))

        @staticmethod
        def infer_shapes(model, int_max=2**31 - 1, auto_merge=False, guess_output_rank=False, verbose=0):
            # The tool's own infer_shapes builds its base class by name: the same loop with this one.
            run = ContribShapeInference(int_max, auto_merge, guess_output_rank, verbose)
            run._preprocess(model)
            complete = False
            while run.run_:
                complete = run._infer_impl()
            run._update_output_from_vi()
            if not complete:
                raise RuntimeError("incomplete symbolic shape inference")
            return run.out_mp_

    return ContribShapeInference
