"""Subcommands other than `prune`, one module each; `onnxprune.cli` registers them."""
