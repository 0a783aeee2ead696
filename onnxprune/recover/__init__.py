"""Recovery by distillation: train the kept weights of a pruned ONNX model to match the dense one.

torch is imported only here (and only when recovery runs): the rest of onnxprune never needs it.
"""
