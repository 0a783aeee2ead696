"""Graph patterns of real third-party exports that broke pruning (issue 13, items 4 to 6), each rebuilt
as a small graph of our own: weights shared through Identity (torch's TorchScript exporter), int8
weights dequantized by Cast -> Mul, YOLOv8's DFL box decoder (a Reshape that looks like attention
heads, a fixed 16-parameter Conv), and the check that keeps --no-validate from writing a model ONNX
Runtime cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphs import GraphBuilder
from oracle import check_valid, choose_channels, max_relative_error, random_feed, run, zero_channels
from rule_checks import pinned, space_of

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.check.consistency import inconsistencies
from onnxprune.errors import ValidationError
from onnxprune.io import staging
from onnxprune.io.saving import save_model


def exact_prune(proto: onnx.ModelProto, tmp_path: Path, seed: int = 0, **options) -> tuple[dict, dict, Path, Path]:
    """Zero a random 40% of every prunable space, prune with l1 at 0.4 (exact counts): (plan, report, zeroed, out)."""
    model = Model.from_proto(proto)
    plan = choose_channels(model, 0.4, seed)
    zero_channels(model, plan)
    zeroed, out = tmp_path / f"zeroed{seed}.onnx", tmp_path / f"pruned{seed}.onnx"
    save_model(model, zeroed)
    settings = dict(structured=0.4, heads=0.4, round_to=1, validate=False) | options
    report = prune(zeroed, out, PruneOptions(**settings))
    return plan, report, zeroed, out


def assert_oracle(proto: onnx.ModelProto, tmp_path: Path, seeds=(0, 1)) -> list[dict]:
    """The zero-oracle: exactly the zeroed channels go and the outputs do not move."""
    reports = []
    for seed in seeds:
        plan, report, zeroed, out = exact_prune(proto, tmp_path, seed)
        assert plan, "nothing was prunable"
        removed = {space["id"]: space["removed"] for space in report["spaces"] if space["removed"]}
        assert removed == {k: [int(i) for i in v] for k, v in plan.items()}
        check_valid(out)
        assert not inconsistencies(Model.load(out))
        feed = random_feed(Model.from_proto(proto), seed)
        assert max_relative_error(run(zeroed, feed), run(out, feed)) < 1e-5
        reports.append(report)
    return reports


def initializer_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.dims) for t in onnx.load(str(path)).graph.initializer}


# ---------------------------------------------------------------------------------------- item 4: shared weights


def _post_ln_encoder(share_ffn_bias: bool) -> onnx.ModelProto:
    """Two post-LN residual FFN blocks over embeddings, as torch's TorchScript exporter writes them:
    identical initializers become one tensor and Identity nodes (every LayerNorm scale is ones(32) and
    every bias zeros(32)). With `share_ffn_bias` the FFN's hidden bias (32 wide) is that same zeros."""
    g = GraphBuilder(opset=17)
    x = g.input((1, 6, 32), "embeddings")
    ones = g.const(np.ones(32, np.float32), "ln.weight")
    zeros = g.const(np.zeros(32, np.float32), "ln.bias")
    for block in range(2):
        scale = ones if block == 0 else g.op("Identity", [ones], name=f"ln{block}.weight")
        bias = zeros if block == 0 else g.op("Identity", [zeros], name=f"ln{block}.bias")
        hidden_bias = g.op("Identity", [zeros], name=f"ffn{block}.bias") if share_ffn_bias else g.weight((32,), "b")
        h = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, g.weight((32, 32), "up")]), hidden_bias])])
        y = g.op("Add", [g.op("MatMul", [h, g.weight((32, 32), "down")]), g.weight((32,), "down_b")])
        x = g.op("LayerNormalization", [g.op("Add", [x, y]), scale, bias], axis=-1, name=f"ln{block}")
    g.output(g.op("MatMul", [x, g.weight((32, 4), "head")]))
    return g.model()


def test_identity_of_a_layernorm_scale_makes_no_space_of_its_own():
    """The issue's encoder: the Identity copies of the shared LayerNorm scale were a prunable space
    of their own, and --structured wrote a LayerNormalization scale of 20 of 32 entries."""
    graph = build_channel_graph(Model.from_proto(_post_ln_encoder(share_ffn_bias=False)))
    for space in graph.prunable:
        assert not {"ln.weight", "ln.bias"} & {m.tensor for m in space.members}, space.label
    assert sorted(space.size for space in graph.prunable) == [32, 32]  # the two FFN hidden layers


def test_weight_shared_with_a_layernorm_is_unshared_when_sliced(tmp_path):
    """zeros(32) is the FFN's hidden bias (prunable) and the LayerNorm's bias (normalizes a pinned axis):
    the bias Add gets a sliced copy, the LayerNorm keeps all 32 entries."""
    proto = _post_ln_encoder(share_ffn_bias=True)
    assert_oracle(proto, tmp_path)
    _, _, _, out = exact_prune(proto, tmp_path, seed=3)
    pruned = onnx.load(str(out))
    shapes = initializer_shapes(out)
    for node in pruned.graph.node:
        if node.op_type == "LayerNormalization":
            assert all(shapes.get(name, (32,)) == (32,) for name in node.input[1:]), node.name
    assert any(len(shape) == 1 and shape[0] < 32 for shape in shapes.values())  # a sliced hidden bias


def test_unsliced_shared_weight_stays_one_tensor(tmp_path):
    """Un-sharing costs nothing when nothing is removed: the output shares the tensor as the input did."""
    source = tmp_path / "encoder.onnx"
    onnx.save(_post_ln_encoder(share_ffn_bias=True), str(source))
    out = tmp_path / "same.onnx"
    prune(source, out, PruneOptions(structured=0.0, validate=False))
    assert set(initializer_shapes(out)) == set(initializer_shapes(source))


@pytest.mark.parametrize("refit", [False, True], ids=["unchanged", "refit"])
def test_unshared_copy_is_given_back_only_while_both_sides_agree(refit):
    """After the rewrite a reader's copy is merged back into the shared tensor when both still hold the
    same values; a pass that changed the shared side for its own readers (compensation refits weights)
    leaves the copy with the reader that needs the original."""
    from onnxprune.passes import RemoveChannels

    from onnxprune.pipeline import Context

    model = Model.from_proto(_post_ln_encoder(share_ffn_bias=True))
    context = Context(model)
    context.channel_graph()
    copies = [n.input[2] for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert copies[0] != "ln.bias" and np.array_equal(model.weight(copies[0]), np.zeros(32))
    if refit:
        model.set_weight("ln.bias", np.full(32, 0.5, np.float32))
    RemoveChannels().run(context)
    readers = [n.input[2] for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert readers[0] == (copies[0] if refit else "ln.bias")
    assert np.array_equal(model.weight(readers[0]), np.zeros(32))


def test_torchscript_encoder_with_shared_layernorm_weights(tmp_path):
    """The same through torch's own TorchScript exporter (nn.MultiheadAttention, post-LN)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = torch.nn.MultiheadAttention(32, 4, batch_first=True)
            self.norm1, self.norm2 = torch.nn.LayerNorm(32), torch.nn.LayerNorm(32)
            self.ffn = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))

        def forward(self, x):
            x = self.norm1(x + self.attention(x, x, x, need_weights=False)[0])
            return self.norm2(x + self.ffn(x))

    module = torch.nn.Sequential(Layer(), Layer()).eval()
    path = tmp_path / "post_ln.onnx"
    # Static shapes: the exporter bakes the sequence length into nn.MultiheadAttention's Reshapes anyway.
    torch.onnx.export(module, (torch.randn(1, 7, 32),), str(path), dynamo=False, input_names=["embeddings"],
                      output_names=["hidden"], opset_version=17)
    identities = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Identity"]
    assert identities, "the exporter no longer shares identical initializers: this test lost its subject"
    proto = onnx.load(str(path))
    reports = assert_oracle(proto, tmp_path, seeds=(0,))
    assert all(space["kind"] == "channels" for space in reports[0]["spaces"] if space["prunable"])
    out = tmp_path / "cli.onnx"
    prune(path, out, PruneOptions(structured=0.4, validate=True))
    feed = {"embeddings": np.random.default_rng(0).standard_normal((1, 7, 32)).astype(np.float32)}
    assert run(out, feed)["hidden"].shape == (1, 7, 32)


def test_int8_weight_dequantized_by_cast_and_mul_is_followed(tmp_path):
    """A Conv reading Mul(Cast(int8 W), scale[C,1,1,1]) (tinyocr's weights): the int8 weight and its
    per-channel scale are sliced together, and the weight stays int8."""
    g = GraphBuilder(opset=17)
    x = g.input((1, 8, 10, 10), "x")
    for index, (cin, cout) in enumerate([(8, 16), (16, 16), (16, 4)]):
        q = g.const(g.rng.integers(-127, 127, (cout, cin, 3, 3)).astype(np.int8), f"w{index}_q")
        scale = g.const(g.rng.uniform(0.001, 0.01, (cout, 1, 1, 1)).astype(np.float32), f"w{index}_scale")
        weight = g.op("Mul", [g.op("Cast", [q], to=onnx.TensorProto.FLOAT), scale], name=f"w{index}")
        x = g.op("Conv", [x, weight, g.weight((cout,), f"b{index}")], pads=[1, 1, 1, 1], name=f"conv{index}")
        x = g.op("Relu", [x]) if index < 2 else x
    g.output(x)
    proto = g.model()
    graph = build_channel_graph(Model.from_proto(proto))
    assert sorted(space.size for space in graph.prunable) == [16, 16]
    assert {"w0_q", "w0_scale", "b0", "w1_q"} <= {m.tensor for m in space_of(graph, "w0_q", 0).members}
    assert_oracle(proto, tmp_path)
    _, _, _, out = exact_prune(proto, tmp_path)
    kept = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    assert kept["w0_q"].data_type == onnx.TensorProto.INT8 and tuple(kept["w0_q"].dims) == (10, 8, 3, 3)


def test_conv_weight_shared_through_identity(tmp_path):
    """Two convs with one weight (the second reads it through Identity): tied into one space."""
    g = GraphBuilder(opset=17)
    x = g.input((1, 8, 6, 6), "x")
    weight = g.weight((8, 8, 3, 3), "shared")
    a = g.op("Relu", [g.op("Conv", [x, weight], pads=[1, 1, 1, 1], name="conv_a")])
    b = g.op("Conv", [a, g.weight((8, 8, 1, 1), "mix")], name="mix")
    c = g.op("Relu", [g.op("Conv", [b, g.op("Identity", [weight], name="shared_again")], pads=[1, 1, 1, 1],
                            name="conv_b")])
    g.output(g.op("Conv", [c, g.weight((4, 8, 1, 1), "head")], name="head"))
    proto = g.model()
    graph = build_channel_graph(Model.from_proto(proto))
    space = space_of(graph, "shared", 0)
    assert space.prunable and {"conv_a", "conv_b"} <= set(space.nodes)
    assert_oracle(proto, tmp_path)


# ---------------------------------------------------------------------------------------- item 5: the DFL decoder


def _dfl_head(boxes_conv_rows: int = 64) -> onnx.ModelProto:
    """YOLOv8's Detect head on one scale: box and class convs, then the DFL decoder
    [B, 64, A] -> [B, 4, 16, A] -> softmax over the 16 bins -> Conv(16 -> 1, weight arange(16))."""
    g = GraphBuilder(opset=17)
    x = g.input((1, 16, 8, 8), "features")
    stem = g.op("Relu", [g.conv(x, 16, 32, name="stem")])
    box = g.conv(g.op("Relu", [g.conv(stem, 32, 32, name="box_hidden")]), 32, boxes_conv_rows, k=1, name="box")
    cls = g.conv(g.op("Relu", [g.conv(stem, 32, 32, name="cls_hidden")]), 32, 10, k=1, name="cls")
    box = g.op("Reshape", [box, g.ints([1, boxes_conv_rows, -1], "flat_box")])
    bins = g.op("Reshape", [box, g.ints([1, 4, 16, -1], "dfl_split")], name="dfl_split")
    probs = g.op("Softmax", [g.op("Transpose", [bins], perm=[0, 2, 1, 3])], axis=1)
    dfl_weight = g.const(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), "dfl.conv.weight")
    distances = g.op("Reshape", [g.op("Conv", [probs, dfl_weight], name="dfl"), g.ints([1, 4, -1], "to_sides")])
    scores = g.op("Sigmoid", [g.op("Reshape", [cls, g.ints([1, 10, -1], "flat_cls")])])
    g.output(g.op("Concat", [distances, scores], axis=1, name="detections"))
    return g.model()


def test_dfl_reshape_is_not_attention_heads(tmp_path):
    """Four box sides of sixteen bins look like four heads; no attention reads them, so the box conv's
    channels are pinned, named after the Reshape, and no head space exists."""
    graph = build_channel_graph(Model.from_proto(_dfl_head()))
    assert not [space for space in graph.spaces if space.kind == "heads"]
    pinned(graph, "box_W", 0, "dfl_split", "attention")
    assert_oracle(_dfl_head(), tmp_path, seeds=(0,))  # the hidden convs stay prunable


@pytest.mark.parametrize("mode", [dict(heads=0.25), dict(structured=0.4)], ids=["heads", "structured"])
def test_dfl_head_with_no_validate_writes_a_model_that_runs(tmp_path, mode):
    source = tmp_path / "dfl.onnx"
    onnx.save(_dfl_head(), str(source))
    out = tmp_path / "out.onnx"
    prune(source, out, PruneOptions(validate=False, **mode))
    feed = random_feed(Model.load(source))
    assert run(out, feed)["detections"].shape == run(source, feed)["detections"].shape


def test_channels_on_a_conv_kernel_axis_pin():
    """A channel axis moved onto a Conv's spatial axis (the 4 box sides of the DFL reach the Conv's H)."""
    g = GraphBuilder(opset=17)
    x = g.input((1, 8, 6, 6), "x")
    y = g.conv(x, 8, 12, k=1, name="expand")
    moved = g.op("Transpose", [g.op("Relu", [y])], perm=[0, 2, 1, 3])  # [1, 6, 12, 6]: channels on H
    g.output(g.op("Conv", [moved, g.weight((4, 6, 3, 3), "slide")], pads=[1, 1, 1, 1], name="slide"))
    pinned(build_channel_graph(Model.from_proto(g.model())), "expand_W", 0, "slides its kernel", "slide")


def test_attention_split_is_a_head_space():
    """The contrast: the same kind of Reshape read by Q @ K^T -> Softmax -> @ V makes heads."""
    g = GraphBuilder(opset=17)
    x = g.input((1, 5, 16), "x")
    heads = [g.op("Transpose", [g.op("Reshape", [g.op("MatMul", [x, g.weight((16, 16), name)]),
                                                g.ints([1, 5, 4, 4], f"{name}_split")])], perm=[0, 2, 1, 3])
             for name in ("q", "k", "v")]
    scores = g.op("MatMul", [heads[0], g.op("Transpose", [heads[1]], perm=[0, 1, 3, 2])])
    probs = g.op("Softmax", [g.op("Div", [scores, g.scalar(2.0, "sqrt_d")])], axis=-1)
    merged = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, heads[2]])], perm=[0, 2, 1, 3]),
                              g.ints([1, 5, 16], "merge")])
    g.output(g.op("Add", [x, g.op("MatMul", [merged, g.weight((16, 16), "o")])]))
    graph = build_channel_graph(Model.from_proto(g.model()))
    space = space_of(graph, "q", 1)
    assert space.prunable and space.kind == "heads" and space.size == 4


# ---------------------------------------------------------------------------------------- item 5: the check


def test_consistency_check_names_the_node_it_refuses(tmp_path):
    """A LayerNormalization scale sliced for another reader (the issue's model, made by hand): onnx's
    full check passes it, ORT does not, and the staged save refuses it with one line."""
    model = Model.from_proto(_post_ln_encoder(share_ffn_bias=False))
    model.set_weight("ln.weight", np.ones(20, np.float32))
    assert staging.full_check_error(model) is None
    with pytest.raises(ValidationError, match=r"LayerNormalization 'ln0'.*20.*32") as caught:
        staging.check_graph(model)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", ["conv", "batchnorm", "gemm", "add", "concat", "split", "reshape"])
def test_consistency_check_catches_each_mismatch(case):
    g = GraphBuilder(opset=17)
    x = g.input((1, 8, 4, 4), "x")
    if case == "conv":
        y = g.op("Conv", [x, g.weight((4, 6, 1, 1), "w")])
    elif case == "batchnorm":
        y = g.op("BatchNormalization", [x] + [g.weight((6,), n, positive=True) for n in ("s", "b", "m", "v")])
    elif case == "gemm":
        y = g.op("Gemm", [g.op("Flatten", [x]), g.weight((100, 4), "w")])
    elif case == "add":
        y = g.op("Add", [x, g.weight((6, 1, 1), "b")])
    elif case == "concat":
        y = g.op("Concat", [x, g.input((1, 8, 5, 4), "other")], axis=1)
    elif case == "split":
        y = g.op("Split", [x, g.ints([3, 3], "sizes")], outputs=2, axis=1)[0]
    else:
        y = g.op("Reshape", [x, g.ints([1, 8, 15], "target")])
    g.output(y)
    proto = g.model(infer=False)
    found = inconsistencies(Model.from_proto(proto))
    assert len(found) == 1 and found[0].startswith(proto.graph.node[-1].op_type), found


def test_consistency_check_passes_the_reference_nets(zoo):
    for name in ("resnet", "mobile", "yolo", "minilm"):
        assert inconsistencies(Model.load(zoo(name))) == [], name


def test_no_validate_refuses_instead_of_writing_a_broken_model(tmp_path, monkeypatch):
    """With the un-sharing taken out, the encoder's shared bias would be sliced for the LayerNorm too:
    even with --no-validate nothing is written, and the message names the LayerNorm."""
    import onnxprune.deps as deps

    monkeypatch.setattr(deps, "settle_readers", lambda builder, roots: None)
    source, out = tmp_path / "encoder.onnx", tmp_path / "out.onnx"
    onnx.save(_post_ln_encoder(share_ffn_bias=True), str(source))
    with pytest.raises(ValidationError, match="LayerNormalization 'ln"):
        prune(source, out, PruneOptions(structured=0.4, round_to=1, validate=False))
    assert not out.exists() and not list(tmp_path.glob(".out.onnx.stage-*"))


# ---------------------------------------------------------------------------------------- item 6: --sparse


def test_sparse_reaches_a_weight_through_identity(tmp_path):
    """A Conv weight deduplicated by the TorchScript exporter is read through an Identity: TensorRT
    folds it, so it is as eligible as the weight it copies, and both readers see the sparse values."""
    g = GraphBuilder(opset=17)
    x = g.input((1, 32, 6, 6), "x")
    shared = g.weight((32, 32, 3, 3), "shared")
    y = g.op("Relu", [g.op("Conv", [x, shared], pads=[1, 1, 1, 1], name="first")])
    g.output(g.op("Conv", [y, g.op("Identity", [shared], name="shared_again")], pads=[1, 1, 1, 1], name="second"))
    source, out = tmp_path / "identity.onnx", tmp_path / "sparse.onnx"
    onnx.save(g.model(), str(source))
    report = prune(source, out, PruneOptions(sparse="2:4", validate=False))["sparsity"]
    (entry,) = [w for w in report["weights"] if w["eligible"]]
    assert entry["name"] == "shared" and entry["nodes"] == ["first", "second"] and entry["pattern_ok"]


def test_sparse_leaves_weights_tensorrt_cannot_speed_up_dense(tmp_path):
    """The DFL's 1x16x1x1 arange and the 10-class conv stay dense (with the reason); the 32x32 and
    64x32 convs get 2:4. --sparse-any-shape zeroes them all; check-sparsity lists the reason."""
    source = tmp_path / "dfl.onnx"
    onnx.save(_dfl_head(), str(source))
    out = tmp_path / "sparse.onnx"
    report = prune(source, out, PruneOptions(sparse="2:4", validate=False))["sparsity"]
    verdicts = {w["name"]: (w["eligible"], w["reason"]) for w in report["weights"]}
    assert not verdicts["dfl.conv.weight"][0] and "multiples of 8 and 16" in verdicts["dfl.conv.weight"][1]
    assert not verdicts["cls_W"][0] and verdicts["box_W"][0] and verdicts["box_hidden_W"][0]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(weights["dfl.conv.weight"].reshape(-1), np.arange(16))
    feed = random_feed(Model.load(source))
    forced = tmp_path / "forced.onnx"
    report = prune(source, forced, PruneOptions(sparse="2:4", sparse_any_shape=True, validate=False))["sparsity"]
    assert {w["name"]: w["eligible"] for w in report["weights"]}["dfl.conv.weight"]
    assert run(forced, feed)["detections"].shape == run(out, feed)["detections"].shape

    from click.testing import CliRunner

    from onnxprune.cli.app import main

    result = CliRunner().invoke(main, ["check-sparsity", str(out), "--json", str(tmp_path / "check.json")])
    assert result.exit_code == 0, result.output
    assert "--sparse leaves it dense" in result.output
    listed = {w["name"]: w for w in json.loads((tmp_path / "check.json").read_text())["weights"]}
    assert "multiples of 8 and 16" in listed["dfl.conv.weight"]["left_dense_by_default"]
    assert listed["box_W"]["left_dense_by_default"] is None and listed["box_W"]["pattern_ok"]
