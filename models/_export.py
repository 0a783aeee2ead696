"""Export a torch module to a single self-contained ONNX file with either exporter."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import sys
import warnings

from . import OPSETS

BATCH = "batch"
SEQ = "seq"


@contextlib.contextmanager
def _quiet():
    """Silence exporter chatter (progress prints, warnings, log lines). Exceptions still
    propagate; what was printed is replayed on stderr when one does."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export",
                                              "torch.fx.experimental.symbolic_shapes",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), \
                contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export(module, example, input_names, output_names, exporter: str,
           path: str | os.PathLike, *, dynamic_batch: bool = True,
           opset: int | None = None, fold_bn: bool = True,
           axes: dict[str, dict[int, str]] | None = None,
           dim_max: dict[str, int] | None = None) -> pathlib.Path:
    """Write ``module`` to ``path`` as one .onnx file (weights embedded) and return the path.

    ``example`` is a tuple of torch tensors. With ``dynamic_batch`` dim 0 of every input and
    output is the symbolic dim ``"batch"``; the example batch must then be >= 2 (torch.export
    specializes size-1 dims).

    Both exporters fold eval-mode BatchNorm into the preceding Conv by default (torchscript:
    its eval peephole pass; dynamo: onnxscript's FuseBatchNormIntoConv rewrite). With
    ``fold_bn=False`` BatchNormalization nodes are kept: torchscript exports with
    TrainingMode.PRESERVE (the module is in eval mode, so BN is inference-mode); dynamo
    skips the default optimizer and only folds constants and lifts them to initializers.

    ``axes`` adds symbolic dims besides the batch: ``{tensor name: {axis: dim name}}`` for
    inputs and outputs (torchscript's ``dynamic_axes``; dynamo gets one ``torch.export.Dim``
    per dim name, shared by every input that has it, bounded by ``dim_max[dim name]``, and
    derives the outputs' dims itself). The example size of such a dim must be >= 2.
    """
    import torch

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opset = opset or OPSETS[exporter]
    common = dict(input_names=list(input_names), output_names=list(output_names),
                  opset_version=opset)
    with _quiet(), torch.no_grad():
        names = [*input_names, *output_names]
        dims = {n: ({0: BATCH} if dynamic_batch else {}) | dict((axes or {}).get(n, {}))
                for n in names}
        if exporter == "torchscript":
            axes = {n: d for n, d in dims.items() if d} or None
            training = (torch.onnx.TrainingMode.EVAL if fold_bn
                        else torch.onnx.TrainingMode.PRESERVE)
            torch.onnx.export(module, example, str(path), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=True, training=training, **common)
            _pin_output_dims(path, module, example, output_names, dims)
        elif exporter == "dynamo":
            made = {}

            def dim(dim_name):
                if dim_name not in made:
                    bound = (dim_max or {}).get(dim_name)
                    made[dim_name] = (torch.export.Dim(dim_name, max=bound) if bound
                                      else torch.export.Dim(dim_name))
                return made[dim_name]

            shapes = tuple({a: dim(d) for a, d in dims[n].items()} for n in input_names)
            shapes = shapes if any(shapes) else None
            program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes=shapes,
                                        optimize=fold_bn, verbose=False, **common)
            if not fold_bn:
                _light_optimize(program.model)
            program.save(str(path), external_data=False)
        else:
            raise ValueError(f"unknown exporter {exporter!r}; expected torchscript or dynamo")
    _check(path, opset)
    return path


def _pin_output_dims(path: pathlib.Path, module, example, output_names, dims) -> None:
    """torchscript names output dims it could not infer statically (a text model exported
    with a static sequence: ``logits`` [batch, 'MatMullogits_dim_1', 512]); give every
    output dim that was not asked to be symbolic the size torch computes on the example.
    The file is rewritten only when such a dim exists (not for the CNNs and MLPs)."""
    import onnx
    import torch

    model = onnx.load(str(path))
    outs = module(*example)
    outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
    changed = False
    for value, name, out in zip(model.graph.output, output_names, outs):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") and axis not in dims.get(name, {}):
                dim.dim_value = out.shape[axis]
                changed = True
    if changed:
        onnx.save(model, str(path))


def _check(path: pathlib.Path, opset: int) -> None:
    """Fail loudly where the exporter quietly did not give what was asked (warnings are
    silenced above): a different opset (dynamo falls back to 18 when the version converter
    fails) or a model the ONNX checker rejects (e.g. torchscript at a too-old opset)."""
    import onnx

    got = {o.domain: o.version for o in onnx.load(str(path), load_external_data=False).opset_import}
    if got.get("", got.get("ai.onnx")) != opset:
        raise RuntimeError(f"{path}: asked for opset {opset}, the exporter wrote {got}")
    onnx.checker.check_model(str(path), full_check=True)


def _light_optimize(model) -> None:
    """The dynamo exporter's optimizer minus its pattern rewrites (which fuse BN into Conv)."""
    import onnx_ir.passes.common as passes
    from onnxscript import optimizer

    optimizer.fold_constants(model)
    passes.RemoveUnusedNodesPass()(model)
    passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    passes.DeduplicateInitializersPass()(model)
    passes.CommonSubexpressionEliminationPass()(model)
