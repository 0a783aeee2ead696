"""Judge the dense models themselves on their real inputs: does each one do its task (read the
rendered words, find the drawn characters, tell the speakers apart...)? If not, the inputs are
wrong, and a pruned model compared against it would be measured on noise. Also checks that
``task_metric(dense, dense)`` is perfect. ``python -m models.real check`` prints the results.
"""

from __future__ import annotations

import time
import unicodedata
from typing import Any

import numpy as np

from . import decode, metrics, sequence
from .catalogue import CATALOGUE, Entry
from .fetch import fetch
from .inputs import real_examples


def session(name: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # ddddocr's declared output shape is wrong: ORT warns every run
    return ort.InferenceSession(str(fetch(name)), so, providers=["CPUExecutionProvider"])


def check(name: str, n: int = 12, split: str = "eval") -> dict[str, Any]:
    """Run ``name`` on ``n`` real feeds: ``sanity`` (a sentence: the dense model against the
    ground truth), ``score`` (the same as a number in [0, 1] where one exists), ``perfect``
    (task_metric of the dense outputs against themselves), ``metric``, shapes and seconds."""
    t0 = time.time()
    entry = CATALOGUE[name]
    ex = real_examples(name, split, n)
    sess = session(name)
    outs = [sess.run(None, f) for f in ex.feeds]
    same = metrics.task_metric(name, outs, outs, ex.feeds)
    score, text = _SANITY[entry.recipe](entry, ex.feeds, ex.truths, outs, sess)
    shapes = {k: tuple(v.shape) for k, v in ex.feeds[0].items()}
    return {"name": name, "kind": entry.kind, "shapes": shapes, "n": len(ex), "score": score,
            "sanity": text, "metric": same["metric"], "perfect": same["value"] == 1.0,
            "seconds": round(time.time() - t0, 2)}


def _fold(s: str, entry: Entry) -> str:
    """ddddocr and captcha-whisperer read case-insensitively in practice (captcha answers)."""
    return s.lower() if entry.recipe.startswith("captcha") else s


def _rec(entry, feeds, truths, outs, sess):
    read = [decode.ctc_text(entry, o[0]) for o in outs]
    ok = [_fold(r, entry) == _fold(t, entry) for r, t in zip(read, truths)]
    shown = "; ".join(f"{t!r}->{r!r}" for t, r in list(zip(truths, read))[:4])
    return float(np.mean(ok)), f"{sum(ok)}/{len(ok)} read correctly ({shown})"


def _line_recall(entry, feeds, truths, outs, sess):
    thr, found, total, pos = entry.params["thresh"], 0, 0, []
    for boxes, o in zip(truths, outs):
        m = np.asarray(o[0])[0, 0] > thr
        pos.append(m.mean())
        for x1, y1, x2, y2 in boxes:
            inner = m[int(y1) + 1: int(y2), int(x1) + 1: int(x2)]
            found += inner.size > 0 and inner.mean() > 0.3
            total += 1
    return found / max(total, 1), (f"{found}/{total} rendered text boxes covered by the probability map "
                                   f"(> {thr}); {100 * np.mean(pos):.1f}% of pixels text")


def _boxes_found(entry, feeds, truths, outs, sess):
    tp = npred = nref = 0
    for ref, o in zip(truths, outs):
        pred = decode.boxes(entry, o)
        tp += decode.match(pred, np.asarray(ref), 0.5, classes=entry.recipe == "layout")
        npred, nref = npred + len(pred), nref + len(ref)
    what = "regions (same class)" if entry.recipe == "layout" else "characters"
    return tp / max(nref, 1), f"{tp}/{nref} drawn {what} found at IoU 0.5, {npred} boxes in all"


def _labels(entry, feeds, truths, outs, sess):
    got = [int(metrics.classes(entry, o[0])[0]) for o in outs]
    if entry.recipe == "file_bytes":
        names = decode.json_file(entry.package, entry.extras[0])["target_labels_space"]
        pred = [names[g] for g in got]
    elif entry.recipe == "char_pairs":
        pred = [bool(g) for g in got]
        s = [float(np.asarray(o[0]).ravel()[0]) for o in outs]
        same = np.mean([v for v, t in zip(s, truths) if t])
        diff = np.mean([v for v, t in zip(s, truths) if not t])
        ok = sum(p == t for p, t in zip(pred, truths))
        return ok / len(pred), f"{ok}/{len(pred)} pairs judged right; mean score same {same:.2f}, different {diff:.2f}"
    else:
        pred = [entry.params["labels"][g] for g in got]
    ok = sum(p == t for p, t in zip(pred, truths))
    wrong = "; ".join(f"{t}->{p}" for p, t in zip(pred, truths) if p != t)[:120]
    return ok / len(pred), f"{ok}/{len(pred)} labelled as the truth" + (f" (wrong: {wrong})" if wrong else "")


def _halves(entry, feeds, truths, outs, sess):
    """Semantic sanity: embed the first two thirds and the last two thirds of each sentence;
    the nearest of the latter to each of the former should be its own (retrieval accuracy).
    (Disjoint halves of these help-text sentences are too alike across sentences to retrieve.)"""
    length = entry.shapes["input_ids"][1]
    embs = []
    for part in (0, 1):
        rows = []
        for t in truths:
            w = t.split()
            k = len(w) // 3
            ids = sequence._tokenizer().encode(" ".join(w[: len(w) - k] if part == 0 else w[k:])).ids
            f = {"input_ids": np.zeros((1, length), np.int64), "attention_mask": np.zeros((1, length), np.int64)}
            f["input_ids"][0, : len(ids)] = ids[:length]
            f["attention_mask"][0, : len(ids)] = 1
            if "token_type_ids" in entry.shapes:
                f["token_type_ids"] = np.zeros((1, length), np.int64)
            e = metrics.embeddings(entry, sess.run(None, f), f)[0]
            rows.append(e / np.linalg.norm(e))
        embs.append(np.stack(rows))
    sim = embs[0] @ embs[1].T
    ok = int((sim.argmax(1) == np.arange(len(truths))).sum())
    off = sim[~np.eye(len(truths), dtype=bool)].mean()
    return ok / len(truths), (f"{ok}/{len(truths)} sentence heads matched to their own tail; "
                              f"cosine own {np.diag(sim).mean():.2f} vs others {off:.2f}")


def _speakers(entry, feeds, truths, outs, sess):
    e = np.stack([np.asarray(o[0])[0] for o in outs])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    ok = 0
    for i, t in enumerate(truths):  # leave-one-out nearest speaker centroid
        cents = {s: e[[j for j, u in enumerate(truths) if u == s and j != i]].mean(0) for s in set(truths)}
        cents = {s: c for s, c in cents.items() if np.isfinite(c).all()}
        ok += max(cents, key=lambda s: e[i] @ cents[s]) == t
    return ok / len(truths), f"{ok}/{len(truths)} windows closest to their own speaker's centroid"


def _segments(entry, feeds, truths, outs, sess):
    tp = npred = nref = 0
    for f, ref, o in zip(feeds, truths, outs):
        tags = decode.tags(entry, o, f)
        b = decode.json_file(entry.package, entry.params["config"])["tag2id"]["B"]
        pc, rc = ({i for i, v in enumerate(t) if v == b and i > 0} for t in (tags, ref))
        tp, npred, nref = tp + len(pc & rc), npred + len(pc), nref + len(rc)
    p, r = tp / max(npred, 1), tp / max(nref, 1)
    f1 = 2 * p * r / max(p + r, 1e-9)
    return f1, f"word-boundary F1 {f1:.2f} against the reference segmentation (P {p:.2f}, R {r:.2f})"


_MARKS = {chr(c) for c in range(0x64B, 0x653)}


def _marks(text: str) -> list[tuple[str, frozenset]]:
    out: list[tuple[str, set]] = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in _MARKS and out:
            out[-1][1].add(ch)
        elif "\u0621" <= ch <= "\u064a":
            out.append((ch, set()))
    return [(c, frozenset(m)) for c, m in out]


def diacritize(entry: Entry, text: str, outs, feed) -> str:
    """The package's output string: each base character followed by its class's marks."""
    chars = sequence.tashkeel_chars(entry, text)
    cls = decode.tags(entry, outs, feed)
    if entry.params["vocab"] == "bilstm":
        lab = {0: "", 1: "\u064e", 2: "\u064f", 3: "\u0650", 4: "\u0652", 5: "\u0651", 6: "\u064b", 7: "\u064c",
               8: "\u064d", 9: "\u0651\u064e", 10: "\u0651\u064f", 11: "\u0651\u0650", 12: "\u0651\u064b",
               13: "\u0651\u064c", 14: "\u0651\u064d"}
        return unicodedata.normalize("NFC", "".join(c + lab[int(k)] for c, k in zip(chars, cls)))
    i2d = {i: s for s, i in decode.json_file(entry.package, entry.params["vocab"])["diac_to_idx"].items()}
    return unicodedata.normalize("NFC", "".join(
        c + (i2d[int(k)] if unicodedata.category(c).startswith("L") else "") for c, k in zip(chars, cls)))


def _tashkeel(entry, feeds, truths, outs, sess):
    ok = tot = 0
    shown = ""
    for f, t, o in zip(feeds, truths, outs):
        if not any(c in _MARKS for c in t):
            continue
        out = diacritize(entry, t, o, f)
        ref, got = _marks(t), _marks(out)
        if len(ref) == len(got):
            ok += sum(a == b for a, b in zip(ref, got))
            tot += len(ref)
        shown = shown or f"{out}"
    if not tot:
        return None, "no diacritized reference in this split"
    return ok / tot, f"{ok}/{tot} letters with the reference diacritics ({shown})"


def _romanize(entry, feeds, truths, outs, sess):
    ok, shown = 0, []
    for f, t in zip(feeds, truths):
        lat, src = (t[0], t[2]) if isinstance(t, tuple) else (t, f)  # decoder truths carry the source
        got = sequence.greedy_romanize(entry, src)
        ok += got.lower() == lat.lower()
        if len(shown) < 4:
            shown.append(f"{lat}->{got}")
    return ok / len(feeds), f"{ok}/{len(feeds)} names romanized as attested, greedy ({'; '.join(shown)})"


def _mask(entry, feeds, truths, outs, sess):
    """The mask should be higher where the target speaks. The shipped model hardly reacts to its
    inputs at all (its mask is ~0.27 +- 0.01 on speech, silence and noise alike, and another
    speaker's d-vector moves it by < 1e-3): reported, not hidden."""
    masks = np.stack([np.asarray(o[0]) for o in outs])
    on = [float(np.mean(o[0])) for o, (_, share) in zip(outs, truths) if share > 0.5]
    off = [float(np.mean(o[0])) for o, (_, share) in zip(outs, truths) if share < 0.1]
    g = dict(feeds[0], dvec=-feeds[0]["dvec"])
    moved = float(np.abs(sess.run(None, g)[0] - outs[0][0]).max())
    text = (f"mask {masks.mean():.3f} +- {masks.std():.3f} over all frames; the opposite d-vector moves it "
            f"by {moved:.1e}")
    if on and off:
        text += f"; mean {np.mean(on):.3f} when the target speaks vs {np.mean(off):.3f} when not"
    return (float(np.mean(on) > np.mean(off)) if on and off else None), text


def _seal(entry, feeds, truths, outs, sess):
    thr, inside, total = entry.params["thresh"], 0, 0
    for boxes, o in zip(truths, outs):
        m = np.asarray(o[0])[0, 0] > thr
        x1, y1, x2, y2 = (int(v) for v in boxes[0])
        inside += int(m[y1:y2, x1:x2].sum())
        total += int(m.sum())
    return inside / max(total, 1), f"{100 * inside / max(total, 1):.0f}% of text pixels inside the seal's text band"


_SANITY = {"text_lines": _rec, "captcha_gray": _rec, "captcha_bgr": _rec, "text_det": _line_recall,
           "seal_det": _seal, "click_captcha": _boxes_found, "layout": _boxes_found,
           "text_direction": _labels, "doc_orientation": _labels, "file_bytes": _labels,
           "char_pairs": _labels, "sentences": _halves, "dvector_windows": _speakers,
           "khmer": _segments, "tashkeel": _tashkeel, "romanizer_src": _romanize,
           "romanizer_steps": _romanize, "voicefilter_frames": _mask}
assert set(_SANITY) >= {e.recipe for e in CATALOGUE.values()}
