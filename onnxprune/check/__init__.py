"""Validation: input generation, ONNX Runtime runs, comparison metrics, gates, FLOPs and parameter counts."""
