"""Fine-grained sparsity: N:M patterns for sparse tensor cores (TensorRT) and unstructured zeros."""

# metadata_props key of a model onnxprune made sparse: JSON {"pattern", "criterion", "weights": [{"name", "axis"}]}.
METADATA_KEY = "onnxprune.sparsity"
