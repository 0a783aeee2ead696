"""SparseGPT and the statistics it needs, against independent references:

- `fasterprune` below is a port of IST-DASLab's SparseGPT (github.com/IST-DASLab/sparsegpt, sparsegpt.py,
  `SparseGPT.add_batch` / `fasterprune`), written here and not imported from onnxprune, with its weight
  and Hessian passed in and the dtype left to the caller (float64 here);
- `collect_grams` against X^T X computed directly (an explicit im2col loop for convolutions).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxprune.calib.data import CalibrationData
from onnxprune.io.model import Model
from onnxprune.sparsity.hessian import ConvGeometry, GramRequest, collect_grams, collect_norms, conv_rows, conv_unrows
from onnxprune.sparsity.pattern import Pattern, nm_mask, satisfies, unstructured_mask
from onnxprune.sparsity.solvers import magnitude_scores, row_unstructured_mask, sparsegpt, wanda_scores

# ---------------------------------------------------------------- the reference


def add_batch(H: torch.Tensor, nsamples: int, inp: torch.Tensor) -> tuple[torch.Tensor, int]:
    """SparseGPT.add_batch for an nn.Linear: a running 2/n * X^T X over the tokens of a batch."""
    if len(inp.shape) == 2:
        inp = inp.unsqueeze(0)
    tmp = inp.shape[0]
    if len(inp.shape) == 3:
        inp = inp.reshape((-1, inp.shape[-1]))
    inp = inp.t()
    H *= nsamples / (nsamples + tmp)
    nsamples += tmp
    inp = (2 / nsamples) ** 0.5 * inp
    H += inp.matmul(inp.t())
    return H, nsamples


def fasterprune(W: torch.Tensor, H: torch.Tensor, sparsity: float, prunen: int = 0, prunem: int = 0,
                blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """SparseGPT.fasterprune: prunen:prunem prunes prunen of every prunem (2:4 keeps 2 of 4: prunen=2)."""
    W = W.clone()
    H = H.clone()
    rows, columns = W.shape

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    Losses = torch.zeros(rows, dtype=W.dtype)

    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H

    mask = None

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1

        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        if prunen == 0:
            if mask is not None:
                mask1 = mask[:, i1:i2]
            else:
                tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1) == 1

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]

            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)

            q = w.clone()
            q[mask1[:, i]] = 0

            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d ** 2

            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        Losses += torch.sum(Losses1, 1) / 2

        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def reference(rows: np.ndarray, x: np.ndarray, pattern: Pattern) -> tuple[np.ndarray, np.ndarray]:
    """The reference on weight rows [R, K] and inputs x [n, K]: (pruned rows, its Hessian, accumulated as
    the reference does)."""
    H, nsamples = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64), 0
    for batch in np.array_split(x, 4):
        H, nsamples = add_batch(H, nsamples, torch.from_numpy(batch))
    W = torch.from_numpy(rows.astype(np.float64))
    if pattern.structured:
        return fasterprune(W, H, 0, pattern.group - pattern.keep, pattern.group).numpy(), H.numpy()
    return fasterprune(W, H, pattern.ratio).numpy(), H.numpy()


# ---------------------------------------------------------------- data


def correlated_inputs(samples: int, width: int, seed: int, dead: tuple[int, ...] = (), draw: int = 0) -> np.ndarray:
    """Inputs with correlated features of unequal scales (as real activations are), some columns dead.
    `seed` fixes the distribution (mixing and scales), `draw` the samples drawn from it."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((width // 4, width))
    scales = np.exp(rng.normal(0.0, 0.7, width))
    draws = np.random.default_rng([seed, draw])
    x = draws.standard_normal((samples, width // 4)) @ mixing + 0.3 * draws.standard_normal((samples, width))
    x *= scales[None, :]
    x[:, list(dead)] = 0.0
    return x


PATTERNS = [Pattern(2, 4), Pattern(4, 8), Pattern(ratio=0.5)]


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_sparsegpt_matches_the_reference(pattern):
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((40, 320))  # 320 columns: blocks of 128, 128 and 64
    x = correlated_inputs(500, 320, seed=2, dead=(0, 5, 6, 7, 130, 319))
    want, hessian = reference(rows, x, pattern)
    # The reference's own H (2/n X^T X): the same arithmetic up to rounding.
    np.testing.assert_allclose(sparsegpt(rows, hessian, pattern, device="cpu"), want, rtol=0, atol=1e-9)
    # The plain sum X^T X that collect_grams gives: with dead inputs the scale of H enters the damping a
    # little (their H_jj = 1 counts in mean(diag H)), as in the reference.
    got = sparsegpt(rows, x.T @ x, pattern, device="cpu")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert (got[:, [0, 5, 6, 7, 130, 319]] == 0).all()  # dead inputs: their weights are zero
    if pattern.structured:
        assert satisfies(got, pattern.keep, pattern.group)
        assert not satisfies(rows, pattern.keep, pattern.group)
    else:
        zeros = (got == 0).mean()
        assert 0.5 <= zeros <= 0.5 + 0.01
    # Exact zeros, and only where the reference has them.
    np.testing.assert_array_equal(got == 0, want == 0)


def test_sparsegpt_ignores_the_scale_of_the_gram():
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((16, 64))
    x = correlated_inputs(200, 64, seed=4)
    once = sparsegpt(rows, x.T @ x, Pattern(2, 4), device="cpu")
    scaled = sparsegpt(rows, 1000.0 * x.T @ x, Pattern(2, 4), device="cpu")
    np.testing.assert_allclose(once, scaled, rtol=0, atol=1e-9)


def test_sparsegpt_float32_zeros_survive_the_cast():
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((32, 256)).astype(np.float32)
    x = correlated_inputs(300, 256, seed=6)
    pruned = sparsegpt(rows, x.T @ x, Pattern(2, 4), device="cpu").astype(np.float32)
    assert satisfies(pruned, 2, 4)
    assert (pruned != 0).sum() == rows.size // 2  # continuous data: exactly 2 of 4 survive


def _output_error(rows: np.ndarray, pruned: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm((rows - pruned) @ x.T))


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
def test_sparsegpt_error_is_below_magnitude_and_wanda(pattern):
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((64, 256))
    calib = correlated_inputs(1024, 256, seed=8)
    held_out = correlated_inputs(1024, 256, seed=8, draw=1)  # the same distribution, other samples
    norms = np.linalg.norm(calib, axis=0)
    if pattern.structured:
        magnitude = rows * nm_mask(magnitude_scores(rows), pattern.keep, pattern.group)
        wanda = rows * nm_mask(wanda_scores(rows, norms), pattern.keep, pattern.group)
    else:
        magnitude = rows * unstructured_mask(magnitude_scores(rows), pattern.ratio)
        wanda = rows * row_unstructured_mask(wanda_scores(rows, norms), pattern.ratio)
    solved = sparsegpt(rows, calib.T @ calib, pattern, device="cpu")
    errors = {name: _output_error(rows, w, held_out) for name, w in
              (("magnitude", magnitude), ("wanda", wanda), ("sparsegpt", solved))}
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors
    # Not a marginal win: the error feedback is what SparseGPT is for.
    assert errors["sparsegpt"] < 0.8 * errors["wanda"], errors


def test_row_unstructured_mask_drops_per_row():
    scores = np.array([[4.0, 1.0, 3.0, 2.0], [0.1, 0.2, 0.3, 0.4]])
    mask = row_unstructured_mask(scores, 0.5)
    np.testing.assert_array_equal(mask, [[True, False, True, False], [False, False, True, True]])
    assert (wanda_scores(np.array([[-2.0, 1.0]]), np.array([0.5, 3.0])) == [[1.0, 3.0]]).all()


# ---------------------------------------------------------------- collect_grams


def _model(nodes, inputs, outputs, weights) -> Model:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(w, n) for n, w in weights.items()])
    opsets = [helper.make_opsetid("", 17)]
    return Model.from_proto(helper.make_model(graph, opset_imports=opsets,
                                              ir_version=helper.find_min_ir_version_for(opsets)))


def _session(model: Model) -> ort.InferenceSession:
    return ort.InferenceSession(model.to_proto().SerializeToString(), providers=["CPUExecutionProvider"])


def _calibration(arrays: list[np.ndarray], name: str = "x") -> CalibrationData:
    return CalibrationData([{name: a} for a in arrays], "test", sum(a.shape[0] for a in arrays))


def test_collect_grams_matmul():
    rng = np.random.default_rng(10)
    weights = {"w": rng.standard_normal((6, 5)).astype(np.float32),
               "w2": rng.standard_normal((3, 6)).astype(np.float32)}
    model = _model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"]),
         # t: [B, 6, 4], as the A of a transA Gemm / a W @ X MatMul: contracted on its axis 1
         helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["w2", "t"], ["z"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], weights)
    batches = [rng.standard_normal((n, 4, 6)).astype(np.float32) for n in (2, 3, 1)]
    requests = {"w": GramRequest("r", 2), "input": GramRequest("x", -1), "t_axis1": GramRequest("t", 1),
                "same_as_w": GramRequest("r", -1)}
    rows_seen: dict[str, int] = {}
    grams = collect_grams(model, requests, _calibration(batches), rows_seen=rows_seen)
    assert rows_seen == {"w": 6 * 4, "input": 6 * 4, "t_axis1": 6 * 4, "same_as_w": 6 * 4}  # 6 samples x 4 rows
    x = np.concatenate(batches).astype(np.float64)
    relu = np.maximum(x, 0).reshape(-1, 6)
    np.testing.assert_allclose(grams["w"], relu.T @ relu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grams["same_as_w"], grams["w"], rtol=0, atol=0)
    np.testing.assert_allclose(grams["input"], x.reshape(-1, 6).T @ x.reshape(-1, 6), rtol=1e-12)
    rows = np.moveaxis(x.transpose(0, 2, 1), 1, -1).reshape(-1, 6)  # t with its axis 1 (size 6) moved last
    np.testing.assert_allclose(grams["t_axis1"], rows.T @ rows, rtol=1e-12)
    norms = collect_norms(model, requests, _calibration(batches))
    np.testing.assert_allclose(norms["w"], np.linalg.norm(relu, axis=0), rtol=1e-12)
    np.testing.assert_allclose(norms["w"], np.sqrt(np.diag(grams["w"])), rtol=1e-12)


def _im2col_loops(x: np.ndarray, kernel, strides, pads, dilations) -> np.ndarray:
    """[N * OH * OW, kh * kw * C], one patch per output position, (kh, kw, C) order, by plain loops."""
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]))
    padded[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = x
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    out_h = (padded.shape[2] - extent[0]) // strides[0] + 1
    out_w = (padded.shape[3] - extent[1]) // strides[1] + 1
    patches = []
    for b in range(n):
        for i in range(out_h):
            for j in range(out_w):
                patch = np.empty((kernel[0], kernel[1], c))
                for ki in range(kernel[0]):
                    for kj in range(kernel[1]):
                        row, column = i * strides[0] + ki * dilations[0], j * strides[1] + kj * dilations[1]
                        patch[ki, kj] = padded[b, :, row, column]
                patches.append(patch.reshape(-1))
    return np.array(patches)


@pytest.mark.parametrize("attrs, explicit", [
    (dict(pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2]), [1, 0, 2, 1]),
    # 9x11 input, 3x2 kernel, stride 2: 2 rows of padding (1 + 1), 1 column (0 + 1, the extra one at the end)
    (dict(auto_pad="SAME_UPPER", strides=[2, 2]), [1, 0, 1, 1]),
    (dict(), [0, 0, 0, 0]),
], ids=["pads-strides-dilations", "same-upper", "plain"])
def test_collect_grams_conv(attrs, explicit):
    rng = np.random.default_rng(11)
    weight = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    conv = helper.make_node("Conv", ["r", "w"], ["y"], name="conv", **attrs)
    model = _model([helper.make_node("Relu", ["x"], ["r"]), conv],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 9, 11])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], {"w": weight})
    geometry = ConvGeometry.from_node(conv, weight.shape)
    batches = [rng.standard_normal((n, 3, 9, 11)).astype(np.float32) for n in (2, 1)]
    grams = collect_grams(model, {"w": GramRequest("r", 1, geometry)}, _calibration(batches))
    relu = np.maximum(np.concatenate(batches), 0).astype(np.float64)
    patches = _im2col_loops(relu, (3, 2), attrs.get("strides", [1, 1]), explicit, attrs.get("dilations", [1, 1]))
    np.testing.assert_allclose(grams["w"], patches.T @ patches, rtol=1e-12, atol=1e-12)
    # The layout matches the operator: conv_rows(W) @ patch is the Conv's output at that position.
    outputs = np.concatenate([_session(model).run(["y"], {"x": b})[0]
                              for b in batches])
    by_position = outputs.transpose(0, 2, 3, 1).reshape(-1, 5)
    np.testing.assert_allclose(patches @ conv_rows(weight).T, by_position, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(conv_unrows(conv_rows(weight), weight.shape), weight)


def test_collect_grams_conv1d():
    rng = np.random.default_rng(12)
    weight = rng.standard_normal((4, 6, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[2, 1], strides=[2], dilations=[2])
    model = _model([conv], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 6, 13])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], {"w": weight})
    batch = rng.standard_normal((2, 6, 13)).astype(np.float32)
    gram = collect_grams(model, {"w": GramRequest("x", 1, ConvGeometry.from_node(conv, weight.shape))},
                         _calibration([batch]))["w"]
    patches = _im2col_loops(batch[:, :, None, :].astype(np.float64), (1, 3), (1, 2), (0, 2, 0, 1), (1, 2))
    np.testing.assert_allclose(gram, patches.T @ patches, rtol=1e-12, atol=1e-12)
    out = _session(model).run(["y"], {"x": batch})[0]
    np.testing.assert_allclose(patches @ conv_rows(weight).T, out.transpose(0, 2, 1).reshape(-1, 4), atol=1e-4)


def test_conv_rows_groups_are_channels_at_one_position():
    weight = np.arange(2 * 8 * 1 * 2).reshape(2, 8, 1, 2)
    rows = conv_rows(weight)
    # columns 0..7: the 8 input channels at kernel position (0, 0); 8..15 at (0, 1)
    np.testing.assert_array_equal(rows[0, :8], weight[0, :, 0, 0])
    np.testing.assert_array_equal(rows[1, 8:], weight[1, :, 0, 1])


# ---------------------------------------------------------------- end to end: the mlp zoo model


def test_prune_sparse_sparsegpt_matches_torch_layer_by_layer(zoo, tmp_path):
    """`prune --sparse 2:4 --criterion sparsegpt --calib` on the mlp equals the reference run in torch on its
    Linear layers one after the other, each layer's Hessian from the outputs of the already-pruned layers."""
    import models

    rng = np.random.default_rng(20)
    mixing = rng.standard_normal((16, 64)) / 4  # correlated inputs: SparseGPT's updates matter
    calib = (rng.standard_normal((48, 16)) @ mixing + 0.5 * rng.standard_normal((48, 64))).astype(np.float32)
    np.savez(tmp_path / "data.npz", input=calib)
    source, target = zoo("mlp"), tmp_path / "sparse.onnx"
    done = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(source), str(target), "--sparse", "2:4",
                           "--criterion", "sparsegpt", "--calib", str(tmp_path / "data.npz"), "--no-validate"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # 48 calibration rows for layers of 64 inputs: the user is told the Hessians are thin.
    assert "from 48 calibration rows" in done.stderr and "give more --calib data" in done.stderr

    module = models.torch_module("mlp")
    inputs = torch.from_numpy(calib)
    linears = [i for i, layer in enumerate(module) if isinstance(layer, torch.nn.Linear)]
    with torch.no_grad():
        for index in linears:
            layer = module[index]
            activations = module[:index](inputs)  # through the layers pruned so far
            H, nsamples = torch.zeros(layer.in_features, layer.in_features, dtype=torch.float64), 0
            for batch in torch.split(activations, 8):  # the CLI's calibration batches
                H, nsamples = add_batch(H, nsamples, batch.double())
            layer.weight.copy_(fasterprune(layer.weight.double(), H, 0, prunen=2, prunem=4).float())

    pruned = Model.load(target)
    for index in linears:
        got = pruned.weight(f"{index}.weight")
        want = module[index].weight.numpy()
        assert satisfies(got, 2, 4)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"layer {index}")
        np.testing.assert_array_equal(got == 0, want == 0)
    outputs = _session(pruned).run(["output"], {"input": calib})[0]
    np.testing.assert_allclose(outputs, module(inputs).numpy(), rtol=0, atol=1e-4)


def test_enough_calibration_rows_raise_no_note(zoo, tmp_path):
    rng = np.random.default_rng(21)
    np.savez(tmp_path / "data.npz", input=rng.standard_normal((1024, 64)).astype(np.float32))
    done = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(zoo("mlp")), str(tmp_path / "s.onnx"),
                           "--sparse", "0.5", "--criterion", "sparsegpt", "--calib", str(tmp_path / "data.npz"),
                           "--no-validate", "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    notes = json.loads((tmp_path / "r.json").read_text()).get("notes", [])
    assert not any("calibration rows" in note for note in notes), notes
