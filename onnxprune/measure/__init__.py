"""`bench`: interleaved latency per execution provider, peak memory, TensorRT engines."""
