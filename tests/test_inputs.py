import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.check.inputs import InputSpec, model_input_specs, parse_shapes, random_feeds, resolve_shapes
from onnxprune.errors import InvalidOptionError, ValidationError


def test_parse_shapes_single_and_comma_separated() -> None:
    assert parse_shapes(["x:1x3x224x224"]) == {"x": (1, 3, 224, 224)}
    assert parse_shapes(["input_ids:1x128, attention_mask:1x128", "y:4"]) == {
        "input_ids": (1, 128),
        "attention_mask": (1, 128),
        "y": (4,),
    }


def test_parse_shapes_name_with_colon_splits_on_last() -> None:
    assert parse_shapes(["input:0:2x3"]) == {"input:0": (2, 3)}


@pytest.mark.parametrize(
    "spec", ["x", "x:", ":1x2", "x:1xa", "x:1x0", "x:1x-2", "x:1x"]
)
def test_parse_shapes_malformed_names_the_spec(spec: str) -> None:
    with pytest.raises(InvalidOptionError, match="--shapes") as info:
        parse_shapes([spec])
    assert spec in str(info.value)
    assert "\n" not in str(info.value)


def test_parse_shapes_duplicate_name() -> None:
    with pytest.raises(InvalidOptionError, match="'x' is given more than once"):
        parse_shapes(["x:1", "x:2"])


def _model_with_inputs() -> onnx.ModelProto:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"])
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT16, [None, 3, 8, 8])
    # Old exporters list weights among the graph inputs too; they are not fed.
    weight = helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, None)
    graph = helper.make_graph(
        [helper.make_node("Add", ["ids", "mask"], ["out"])],
        "g",
        [ids, mask, image, weight],
        [out],
        initializer=[numpy_helper.from_array(np.zeros(2, np.float32), "w")],
    )
    return helper.make_model(graph)


def test_model_input_specs_skips_initializers() -> None:
    specs = model_input_specs(_model_with_inputs())
    assert [s.name for s in specs] == ["ids", "mask", "image"]
    assert specs[0] == InputSpec("ids", np.dtype(np.int64), ("batch", "seq"))
    assert specs[2].dtype == np.float16
    assert specs[2].shape == (None, 3, 8, 8)


def test_resolve_shapes_defaults_with_notes() -> None:
    specs = model_input_specs(_model_with_inputs())
    shapes, notes = resolve_shapes(specs, {})
    # Batch dims default to 1, other symbolic dims (sequence lengths) to 8; shared symbols agree.
    assert shapes == {"ids": (1, 8), "mask": (1, 8), "image": (1, 3, 8, 8)}
    assert "input 'ids' dim 0 ('batch') set to 1; pass --shapes to choose" in notes
    assert "input 'ids' dim 1 ('seq') set to 8; pass --shapes to choose" in notes
    assert "input 'image' dim 0 (unnamed) set to 1; pass --shapes to choose" in notes
    assert len(notes) == 5


def test_resolve_shapes_override_binds_shared_symbols() -> None:
    specs = model_input_specs(_model_with_inputs())
    shapes, notes = resolve_shapes(specs, {"ids": (2, 16)}, default_dim=4)
    assert shapes["ids"] == (2, 16)
    # 'batch' and 'seq' follow ids, so mask fits the same Add.
    assert shapes["mask"] == (2, 16)
    assert shapes["image"] == (4, 3, 8, 8)
    assert any("to match input 'ids'" in note for note in notes)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nope": (1,)}, "no input 'nope'"),
        ({"ids": (1, 2, 3)}, "input 'ids' has rank 2"),
        ({"image": (1, 4, 8, 8)}, "input 'image' dim 1 is fixed to 3"),
    ],
)
def test_resolve_shapes_errors(overrides: dict, message: str) -> None:
    specs = model_input_specs(_model_with_inputs())
    with pytest.raises(InvalidOptionError, match=message):
        resolve_shapes(specs, overrides)


def test_resolve_shapes_unknown_rank_requires_override() -> None:
    spec = InputSpec("x", np.dtype(np.float32), None)
    with pytest.raises(InvalidOptionError, match="'x' has no declared rank"):
        resolve_shapes([spec], {})
    assert resolve_shapes([spec], {"x": (2, 2)}) == ({"x": (2, 2)}, [])


def _specs() -> list[InputSpec]:
    return [
        InputSpec("f32", np.dtype(np.float32), (2, 3)),
        InputSpec("f16", np.dtype(np.float16), (4,)),
        InputSpec("bf16", np.dtype(ml_dtypes.bfloat16), (4,)),
        InputSpec("f64", np.dtype(np.float64), (4,)),
        InputSpec("ids", np.dtype(np.int64), (64,)),
        InputSpec("u8", np.dtype(np.uint8), (8,)),
        InputSpec("flag", np.dtype(np.bool_), (16,)),
    ]


def test_random_feeds_types_and_ranges() -> None:
    specs = _specs()
    shapes = {s.name: s.shape for s in specs}
    (feed,) = random_feeds(specs, shapes, seed=0)
    for spec in specs:
        assert feed[spec.name].dtype == spec.dtype
        assert feed[spec.name].shape == spec.shape
    assert set(np.unique(feed["ids"])) <= {0, 1}
    assert feed["f32"].std() > 0


def test_random_feeds_deterministic_per_seed() -> None:
    specs = _specs()
    shapes = {s.name: s.shape for s in specs}
    first = random_feeds(specs, shapes, seed=7, count=3)
    again = random_feeds(specs, shapes, seed=7, count=3)
    other = random_feeds(specs, shapes, seed=8, count=3)
    for a, b in zip(first, again, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(first[0]["f32"], other[0]["f32"])
    assert not np.array_equal(first[0]["f32"], first[1]["f32"])
    # Feed 0 does not depend on how many feeds were asked for.
    np.testing.assert_array_equal(
        random_feeds(specs, shapes, seed=7)[0]["f32"], first[0]["f32"]
    )


def test_random_feeds_rejects_strings_and_bad_count() -> None:
    spec = InputSpec("s", np.dtype(object), (1,))
    with pytest.raises(ValidationError, match="input 's'"):
        random_feeds([spec], {"s": (1,)}, seed=0)
    with pytest.raises(InvalidOptionError):
        random_feeds([], {}, seed=0, count=0)
