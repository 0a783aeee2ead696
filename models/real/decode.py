"""Turn raw model outputs into task outputs the way each shipping package does: CTC greedy
decoding with the wheel's character dictionary, YOLOX and PicoDet box decoding with NMS, DBNet
probability-map thresholding, CRF Viterbi tags, diacritic classes.
"""

from __future__ import annotations

import ast
import functools
import json

import numpy as np

from .catalogue import CATALOGUE, Entry
from .fetch import fetch, fetch_file

# ---- dictionaries --------------------------------------------------------------------------


@functools.cache
def charset(name: str) -> tuple[str, ...]:
    """Class index -> character for a recognizer (index 0 is the CTC blank, or "" for ddddocr)."""
    entry = CATALOGUE[name]
    p = entry.params
    if "labels" in p and entry.kind == "ocr-rec":
        return tuple(p["labels"])
    if "charset" in p:  # ddddocr: a Python list literal in charsets.py; parsed, never imported
        src = fetch_file(entry.package, "ddddocr/charsets.py").read_text(encoding="utf-8")
        for node in ast.parse(src).body:
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == p["charset"]:
                return tuple(ast.literal_eval(node.value))
        raise KeyError(p["charset"])
    if p["dict"].startswith("metadata:"):  # rapidocr reads the dictionary from the model
        import onnx

        model = onnx.load(str(fetch(name)), load_external_data=False)
        meta = {m.key: m.value for m in model.metadata_props}
        chars = meta[p["dict"].split(":", 1)[1]].splitlines()
    else:  # PaddleOCR's CTCLabelDecode: readlines() of the bytes, one character per line
        data = fetch_file(entry.package, p["dict"]).read_bytes()
        lines = data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")
        chars = [ln.decode("utf-8").strip("\n").strip("\r\n") for ln in lines]
    return ("blank", *chars, " ")  # then " " (use_space_char=True)


@functools.cache
def json_file(package: str, path: str) -> dict:
    return json.loads(fetch_file(package, path).read_text(encoding="utf-8"))


# ---- recognition -----------------------------------------------------------------------------


def frames(entry: Entry, out: np.ndarray) -> np.ndarray:
    """Per-frame class scores [T, C] of one feed's recognizer output (batch 1)."""
    out = np.asarray(out)
    return out[:, 0, :] if entry.params.get("layout") == "TNC" else out[0]


def ctc_text(entry: Entry, out: np.ndarray) -> str:
    """Greedy CTC: argmax per frame, merge repeats, drop the blank (index 0)."""
    chars = charset(entry.name)
    best = frames(entry, out).argmax(-1)
    if entry.params.get("decode") == "captcha_whisperer":
        # captcha_whisperer's decode: argmax over classes 1.., label = index + 1, "_" removed
        text, prev, blank = [], len(chars) - 1, len(chars) - 1
        for o in frames(entry, out)[:, 1:].argmax(-1):
            if o != blank and o != prev:
                text.append(chars[o + 1])
            prev = o
        return "".join(text).replace("_", "").strip()
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    return "".join(chars[i] for i in best[keep] if 0 <= i < len(chars))


# ---- detection -----------------------------------------------------------------------------


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Greedy NMS (YOLOX demo flavour: +1 pixel areas)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        order = order[np.where(inter / (areas[i] + areas[order[1:]] - inter) <= thr)[0] + 1]
    return keep


def yolox_boxes(entry: Entry, outs: list[np.ndarray]) -> np.ndarray:
    """ddddocr's DetectionEngine.get_bbox before rescaling: grid/stride decoding, obj * cls
    scores, class-agnostic NMS. Returns [N, 6] (x1, y1, x2, y2, score, class) in input pixels."""
    p = entry.params
    pred = np.array(outs[0], dtype=np.float64)[0]
    grids, strides = [], []
    for s in (8, 16, 32):
        hs, ws = p["size"][0] // s, p["size"][1] // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((hs * ws, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(np.minimum(pred[:, 2:4], 30.0)) * stride
    scores = pred[:, 4:5] * pred[:, 5:]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    cls = scores.argmax(1)
    best = scores[np.arange(len(cls)), cls]
    mask = best > p["score_thr"]
    if not mask.any():
        return np.zeros((0, 6))
    keep = nms(boxes[mask], best[mask], p["nms_thr"])
    return np.concatenate([boxes[mask][keep], best[mask][keep, None], cls[mask][keep, None]], 1)


def _hard_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, top_k: int = 100,
              candidates: int = 200) -> list[int]:
    """rapid_layout's PPPostProcess.hard_nms (no +1 areas, at most 200 candidates)."""
    def area(a, b):
        hw = np.clip(b - a, 0.0, None)
        return hw[..., 0] * hw[..., 1]

    idx = np.argsort(scores)[-candidates:]
    picked: list[int] = []
    while len(idx):
        cur = idx[-1]
        picked.append(int(cur))
        if 0 < top_k == len(picked) or len(idx) == 1:
            break
        idx = idx[:-1]
        rest, box = boxes[idx], boxes[cur][None]
        ov = area(np.maximum(rest[:, :2], box[:, :2]), np.minimum(rest[:, 2:], box[:, 2:]))
        iou = ov / (area(rest[:, :2], rest[:, 2:]) + area(box[:, :2], box[:, 2:]) - ov + 1e-5)
        idx = idx[iou <= thr]
    return picked


def picodet_boxes(entry: Entry, outs: list[np.ndarray]) -> np.ndarray:
    """rapid_layout's PPPostProcess: 4 score maps then 4 box-distribution maps (strides
    8/16/32/64), softmax over reg_max+1 bins, top 1000 per level, per-class hard NMS.
    Returns [N, 6] (x1, y1, x2, y2, score, class) in input pixels."""
    p = entry.params
    h, w = p["size"]
    k = len(outs) // 2
    all_boxes, all_scores = [], []
    for stride, score, dist in zip((8, 16, 32, 64), outs[:k], outs[k:]):
        score, dist = np.asarray(score[0], np.float64), np.asarray(dist[0], np.float64)
        reg = dist.shape[-1] // 4
        ww, hh = np.meshgrid(np.arange(math_ceil(w / stride)), np.arange(math_ceil(h / stride)))
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        d = dist.reshape(-1, reg)
        d = np.exp(d - d.max(1, keepdims=True))
        d = (d / d.sum(1, keepdims=True) * np.arange(reg)).sum(1).reshape(-1, 4) * stride
        top = np.argsort(score.max(1))[::-1][:1000]
        centers = np.stack([cx, cy, cx, cy], 1)[top]
        all_boxes.append(centers + np.array([-1, -1, 1, 1]) * d[top])
        all_scores.append(score[top])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    found = []
    for c in range(scores.shape[1]):
        mask = scores[:, c] > p["score_thr"]
        if mask.any():
            keep = _hard_nms(boxes[mask], scores[mask, c], p["nms_thr"])
            b = np.clip(boxes[mask][keep], 0, [w, h, w, h])
            found.append(np.concatenate([b, scores[mask, c][keep, None], np.full((len(keep), 1), c)], 1))
    return np.concatenate(found) if found else np.zeros((0, 6))


def math_ceil(x: float) -> int:
    return int(-(-x // 1))


def boxes(entry: Entry, outs: list[np.ndarray]) -> np.ndarray:
    return (yolox_boxes if entry.params["decoder"] == "yolox" else picodet_boxes)(entry, outs)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, >=4] with every box of ``b`` [M, >=4] (x1, y1, x2, y2)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a, b = np.asarray(a, np.float64)[:, None, :4], np.asarray(b, np.float64)[None, :, :4]
    wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def match(pred: np.ndarray, ref: np.ndarray, thr: float = 0.5, classes: bool = True) -> int:
    """Greedy one-to-one matches of ``pred`` to ``ref`` at IoU >= ``thr`` (same class), highest
    score first: the true positives of detection F1."""
    if len(pred) == 0 or len(ref) == 0:
        return 0
    iou = iou_matrix(pred, ref)
    if classes and pred.shape[1] > 5 and ref.shape[1] > 5:
        iou = np.where(pred[:, None, 5] == ref[None, :, 5], iou, 0.0)
    order = np.argsort(-pred[:, 4]) if pred.shape[1] > 4 else range(len(pred))
    used, tp = set(), 0
    for i in order:
        j = next((j for j in np.argsort(-iou[i]) if iou[i, j] >= thr and j not in used), None)
        if j is not None:
            used.add(int(j))
            tp += 1
    return tp


# ---- tagging ---------------------------------------------------------------------------------


def viterbi(emissions: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[int]:
    """khmersm's _viterbi_decode: best CRF tag path for emissions [T, C]."""
    score = start + emissions[0]
    back = []
    for t in range(1, len(emissions)):
        cand = score[:, None] + transitions
        back.append(cand.argmax(0))
        score = cand.max(0) + emissions[t]
    best = [int((score + end).argmax())]
    for bp in reversed(back):
        best.append(int(bp[best[-1]]))
    return best[::-1]


def tags(entry: Entry, outs: list[np.ndarray], feed: dict | None) -> np.ndarray:
    """One label per position of a tagger: CRF Viterbi (khmersm, over the unmasked positions),
    gated argmax (rawi v3: value class where sigmoid(presence) > 0.5), the int64 class output
    (rawi ensemble), or argmax of the logits."""
    if entry.params.get("crf"):
        cfg = json_file(entry.package, entry.params["config"])
        em = np.asarray(outs[0])[0]
        n = int(feed["mask"].sum()) if feed is not None else len(em)
        return np.array(viterbi(em[:n], np.array(cfg["crf_transitions"], np.float32),
                                np.array(cfg["crf_start_transitions"], np.float32),
                                np.array(cfg["crf_end_transitions"], np.float32)))
    if entry.params.get("gate") == "presence":
        presence, value = np.asarray(outs[0])[0], np.asarray(outs[1])[0]
        return np.where(1.0 / (1.0 + np.exp(-presence)) > 0.5, value.argmax(-1), 0)
    out = np.asarray(outs[0])[0]
    return out if out.ndim == 1 else out.argmax(-1)
