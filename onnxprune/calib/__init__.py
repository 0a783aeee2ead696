"""Calibration data (npz, loader scripts, random), activation capture through ONNX Runtime, statistics."""
