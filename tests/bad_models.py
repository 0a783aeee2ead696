"""A corpus of broken and hostile model files, each written into a folder by one small function.

Each builder returns the model's file name (relative to the folder) and a piece of the message the
error must contain, so tests can check the error names the problem and not just that one happened.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tiny import tiny_model

Builder = Callable[[Path], tuple[str, str]]


def _write(folder: Path, proto: onnx.ModelProto, name: str = "bad.onnx") -> str:
    (folder / name).write_bytes(proto.SerializeToString())
    return name


def _external(folder: Path, name: str = "bad.onnx") -> onnx.ModelProto:
    """tiny_model saved with every weight in `name`.data; returns the graph without the data loaded."""
    onnx.save(tiny_model(), str(folder / name), save_as_external_data=True, all_tensors_to_one_file=True,
              location=f"{name}.data", size_threshold=0)
    return onnx.load(str(folder / name), load_external_data=False)


def _set_external(tensor: TensorProto, key: str, value: str) -> None:
    for entry in tensor.external_data:
        if entry.key == key:
            entry.value = value
            return
    entry = tensor.external_data.add()
    entry.key, entry.value = key, value


def empty(folder: Path) -> tuple[str, str]:
    (folder / "bad.onnx").write_bytes(b"")
    return "bad.onnx", "empty"


def random_bytes(folder: Path) -> tuple[str, str]:
    (folder / "bad.onnx").write_bytes(np.random.default_rng(7).bytes(5000))
    return "bad.onnx", "not a valid ONNX model"


def truncated(folder: Path) -> tuple[str, str]:
    data = tiny_model().SerializeToString()
    (folder / "bad.onnx").write_bytes(data[: len(data) * 2 // 3])
    return "bad.onnx", "not a valid ONNX model"


def tensor_not_model(folder: Path) -> tuple[str, str]:
    tensor = numpy_helper.from_array(np.arange(64, dtype=np.float32), "t")
    (folder / "bad.onnx").write_bytes(tensor.SerializeToString())
    return "bad.onnx", "not a valid ONNX model"


def graph_not_model(folder: Path) -> tuple[str, str]:
    (folder / "bad.onnx").write_bytes(tiny_model().graph.SerializeToString())
    return "bad.onnx", "not a valid ONNX model"


def cycle(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    nodes = proto.graph.node
    # relu1 reads conv2's output, which itself reads relu1's: a loop no order can execute.
    nodes[2].input[0] = "c2"
    return _write(folder, proto), "cycle"


def dangling_input(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    proto.graph.node[3].input[0] = "nobody_makes_this"
    return _write(folder, proto), "nobody_makes_this"


def dangling_output(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    proto.graph.output.append(helper.make_tensor_value_info("ghost", TensorProto.FLOAT, [1]))
    return _write(folder, proto), "ghost"


def duplicate_tensor(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    proto.graph.node[2].output[0] = "c1"  # relu1 now writes conv1's output name too
    return _write(folder, proto), "'c1' is produced twice"


def duplicate_initializer(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    proto.graph.initializer.append(numpy_helper.from_array(np.zeros(8, np.float32), "b1"))
    return _write(folder, proto), "'b1'"


def old_opset(folder: Path) -> tuple[str, str]:
    return _write(folder, tiny_model(opset=9)), "opset 9"


def future_opset(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    proto.opset_import[0].version = 99
    return _write(folder, proto), "opset 99"


def no_default_opset(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    proto.opset_import[0].domain = "com.example"
    return _write(folder, proto), "opset"


def initializer_wrong_size(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    tensor = next(t for t in proto.graph.initializer if t.name == "w2")
    tensor.raw_data = tensor.raw_data[:-8]
    return _write(folder, proto), "'w2'"


def initializer_wrong_dims(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    tensor = next(t for t in proto.graph.initializer if t.name == "w2")
    tensor.dims[:] = [16, 8, 3, 4]
    return _write(folder, proto), "'w2'"


def initializer_huge_dims(folder: Path) -> tuple[str, str]:
    """Dims whose product overflows int64: must be refused, not wrapped around to a small size."""
    proto = tiny_model()
    tensor = next(t for t in proto.graph.initializer if t.name == "b1")
    tensor.dims[:] = [2**32, 2**32, 2]
    return _write(folder, proto), "'b1'"


def initializer_negative_dims(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    tensor = next(t for t in proto.graph.initializer if t.name == "b1")
    tensor.dims[:] = [-8]
    return _write(folder, proto), "'b1'"


def missing_external_file(folder: Path) -> tuple[str, str]:
    _external(folder)
    (folder / "bad.onnx.data").unlink()
    return "bad.onnx", "bad.onnx.data"


def external_wrong_length(folder: Path) -> tuple[str, str]:
    proto = _external(folder)
    tensor = next(t for t in proto.graph.initializer if t.name == "w2")
    _set_external(tensor, "length", "12")
    return _write(folder, proto), "'w2'"


def external_short_file(folder: Path) -> tuple[str, str]:
    _external(folder)
    data = folder / "bad.onnx.data"
    data.write_bytes(data.read_bytes()[:-64])
    return "bad.onnx", "does not match"


def _escaping(folder: Path, location: Callable[[Path], str]) -> str:
    """Every weight's location rewritten; the place it points to holds the right bytes, so only the
    location check can refuse it."""
    proto = _external(folder)
    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(folder / "bad.onnx.data", outside / "stolen.data")
    (folder / "bad.onnx.data").unlink()
    where = location(outside / "stolen.data")
    for tensor in proto.graph.initializer:
        _set_external(tensor, "location", where)
    return _write(folder, proto)


def external_dotdot(folder: Path) -> tuple[str, str]:
    return _escaping(folder, lambda target: f"../{target.parent.name}/{target.name}"), "outside the model's folder"


def external_absolute(folder: Path) -> tuple[str, str]:
    return _escaping(folder, lambda target: str(target)), "outside the model's folder"


def external_etc_passwd(folder: Path) -> tuple[str, str]:
    proto = _external(folder)
    for tensor in proto.graph.initializer:
        _set_external(tensor, "location", "../../../../../../../../etc/passwd")
    return _write(folder, proto), "outside the model's folder"


def external_symlink(folder: Path) -> tuple[str, str]:
    def link(target: Path) -> str:
        (folder / "innocent.data").symlink_to(target)
        return "innocent.data"

    return _escaping(folder, link), "outside the model's folder"


def external_symlinked_folder(folder: Path) -> tuple[str, str]:
    def link(target: Path) -> str:
        (folder / "weights").symlink_to(target.parent, target_is_directory=True)
        return f"weights/{target.name}"

    return _escaping(folder, link), "outside the model's folder"


def unknown_op(folder: Path) -> tuple[str, str]:
    proto = tiny_model()
    proto.graph.node[2].op_type = "Rleu"
    return _write(folder, proto), "Rleu"


CORPUS: dict[str, Builder] = {
    builder.__name__.replace("_", "-"): builder
    for builder in (
        empty, random_bytes, truncated, tensor_not_model, graph_not_model, cycle, dangling_input, dangling_output,
        duplicate_tensor, duplicate_initializer, old_opset, future_opset, no_default_opset,
        initializer_wrong_size, initializer_wrong_dims, initializer_huge_dims, initializer_negative_dims,
        missing_external_file, external_wrong_length, external_short_file, external_dotdot, external_absolute,
        external_etc_passwd, external_symlink, external_symlinked_folder, unknown_op,
    )
}
