"""The forms exported in this environment: ``plain`` (torch.onnx.export, dynamo=False),
``dynamo`` (torch.export-based exporter) and ``ort-optimized`` (ONNX Runtime's transformer
optimizer run over ``plain``). Each writes ``model.onnx`` (+ ``model.onnx.data`` where the
exporter chooses external data) into the folder it is given.

All three have the same signature: ``input_ids``, ``attention_mask`` int64 [batch, seq] ->
``logits`` float32 [batch, seq, 49152], no KV cache, batch and seq symbolic.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import sys
import warnings

INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("logits",)
OPSET = 17  # the legacy exporter's best-tested opset (dynamo uses its own default, 20 in torch 2.13)
EXAMPLE = (2, 16)  # batch, seq of the tracing example: >= 2 so torch.export keeps them symbolic


@contextlib.contextmanager
def _quiet():
    """Swallow exporter chatter; replay it on stderr if the export fails, where it helps."""
    buf = io.StringIO()
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript",
             "torch.fx.experimental.symbolic_shapes", "transformers")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue()[-20_000:])
        raise
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _logits_module():
    """LlamaForCausalLM wrapped as forward(input_ids, attention_mask) -> logits: no cache in
    or out, so the graph has exactly the two token inputs and one output."""
    import torch

    from .fetch import load_torch

    class Logits(torch.nn.Module):
        def __init__(self, lm) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask):
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return Logits(load_torch("eager")).eval()


def _example():
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40_000, EXAMPLE, generator=gen, dtype=torch.int64)
    return ids, torch.ones(EXAMPLE, dtype=torch.int64)


def export_plain(out_dir: pathlib.Path) -> pathlib.Path:
    """The legacy TorchScript exporter (``dynamo=False``), opset 17, one file (< 2 GB)."""
    import torch

    path = out_dir / "model.onnx"
    module = _logits_module()
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "logits": {0: "batch", 1: "seq"}}
    with _quiet(), torch.no_grad():
        torch.onnx.export(module, _example(), str(path), dynamo=False, input_names=list(INPUTS),
                          output_names=list(OUTPUTS), dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True)
    return path


def export_dynamo(out_dir: pathlib.Path) -> pathlib.Path:
    """``torch.onnx.export(dynamo=True)`` with batch and seq as ``torch.export.Dim``s, the
    exporter's default opset (20 with torch 2.13) and its default onnxscript optimization. The
    tied embedding and LM head stay one initializer (542 MB, against 652 MB for ``plain``)."""
    import torch

    path = out_dir / "model.onnx"
    module = _logits_module()
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=1, max=2048)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(module, _example(), dynamo=True, input_names=list(INPUTS),
                                    output_names=list(OUTPUTS), dynamic_shapes=shapes, optimize=True)
        program.save(str(path))
    return path


def export_ort_optimized(plain: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """``onnxruntime.transformers.optimizer.optimize_model`` over the plain export.

    model_type "gpt2" with the real head count and hidden size (there is no "llama" type for
    TorchScript-exported graphs); opt_level 0 so only the Python fusions run, not ORT's own
    graph optimizer, whose output would be tied to this machine's execution provider. On
    SmolLM2 only the 61 RMSNorms fuse: 60 with the residual Add before them into
    SkipSimplifiedLayerNormalization (com.microsoft), the first layer's input norm into
    SimplifiedLayerNormalization (which ORT registers in the default ONNX domain); the attention
    and rotary patterns of this export are not recognized."""
    from onnxruntime.transformers.optimizer import optimize_model

    path = out_dir / "model.onnx"
    with _quiet():
        model = optimize_model(str(plain), model_type="gpt2", num_heads=9, hidden_size=576, opt_level=0,
                               use_gpu=False)
        model.save_model_to_file(str(path), use_external_data_format=False)
    return path
