"""The zero-oracle on a real LLM in the forms whose pruning goes through contrib ops and KV caches:
SmolLM2-135M as onnxruntime-genai's builder writes it (GroupQueryAttention with rotary inside, packed
QKV, SkipSimplifiedLayerNormalization) and as Optimum exports it with its cache (past_key_values.N.*
in, present.N.* out). One KV group of three and 20% of every FFN go; the zeroed original and the
pruned model then read a real prompt with an empty cache and take one more token from their own
caches, the pruned one fed and compared on the kept heads.

The forms are built by models/llm (minutes, cached in $ONNXPRUNE_CACHE/llm): the test uses them when
they are there and says so when not. The bound is 1e-4 of each output's largest magnitude: thirty
layers of float32 GEMMs whose widths changed move the logits by up to 3e-5 (FFN pruning alone on the
plain export gives 1.1e-5), a wrong head or block moves them by far more than that.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from oracle import zero_channels

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.io.saving import save_model

llm = pytest.importorskip("models.llm")
feeds = pytest.importorskip("models.llm.feeds")

PROMPT_IDS = [504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 6532, 314]  # "The capital of France is ..."
TOLERANCE = 1e-4


def _shapes(path) -> dict[str, tuple[int, ...]]:
    """Concrete dims for prune's own shape probe: 8 new tokens after 8 cached ones."""
    shapes = {}
    for info in feeds.graph_inputs(path):
        if info.name in ("input_ids", "position_ids"):
            shapes[info.name] = (1, 8)
        elif info.name == "attention_mask":
            shapes[info.name] = (1, 16)
        elif feeds.PAST.match(info.name):
            shapes[info.name] = (1, info.shape[1], 8, feeds.HEAD_DIM)
    return shapes


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _two_steps(path) -> list[dict[str, np.ndarray]]:
    """Outputs for the prompt with an empty cache, then for the next token with the model's own cache."""
    session, inputs = _session(path), feeds.graph_inputs(path)
    names = [o.name for o in session.get_outputs()]
    first = dict(zip(names, session.run(None, feeds.make_feeds(inputs, np.array([PROMPT_IDS])))))
    token = np.array([[int(first["logits"][0, -1].argmax())]])
    past = feeds.presents_to_past(names, [first[n] for n in names])
    second = dict(zip(names, session.run(None, feeds.make_feeds(inputs, token, past))))
    return [first, second]


@pytest.mark.parametrize("form", ["genai", "optimum"])
def test_real_llm_kv_groups_and_ffn(tmp_path, form):
    source = llm.form_dir(form) / "model.onnx"
    if not source.exists():
        pytest.skip(f"SmolLM2 '{form}' is not built here: python -m models.llm build {form} (minutes)")
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    report = prune(source, out, PruneOptions(structured=0.2, heads=0.34, validate=False, round_to=1,
                                             allocation="uniform", shapes=_shapes(source)))
    plan = {s["id"]: np.array(s["removed"], np.int64) for s in report["spaces"] if s["removed"]}
    kinds = {(s["kind"], len(s["removed"])) for s in report["spaces"] if s["removed"]}
    assert kinds == {("heads", 1), ("channels", 307)}, kinds  # every layer: 1 of 3 KV groups, 307 of 1536

    model = Model.load(source)
    graph = build_channel_graph(model)
    boundary = set(model.input_names) | set(model.output_names)
    cut = {key: idx for key, idx in graph.removal({k: list(v) for k, v in plan.items()}).items() if key[0] in boundary}
    zero_channels(model, plan)
    zeroed = tmp_path / "zeroed.onnx"
    save_model(model, zeroed, external_data=True)
    del model, graph

    for step, (reference, got) in enumerate(zip(_two_steps(zeroed), _two_steps(out))):
        for (name, axis), indices in cut.items():
            if name in reference:
                reference[name] = np.delete(reference[name], indices, axis=axis)
        for name, expected in reference.items():
            error = float(np.max(np.abs(got[name] - expected))) / float(np.max(np.abs(expected)))
            assert error < TOLERANCE, f"step {step}, {name}: relative error {error:.2e}"

    config = {"genai": "genai_config.json", "optimum": "config.json"}[form]
    written = json.loads((out.parent / config).read_text())
    kv = written["model"]["decoder"]["num_key_value_heads"] if form == "genai" else written["num_key_value_heads"]
    assert kv == 2
