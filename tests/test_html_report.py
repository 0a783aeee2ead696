"""The HTML report: reports of real prunes become one self-contained, well-formed page whose plots a
real browser draws (headless Debian chromium; that test skips only when chromium is absent)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import models
from onnxprune.api import PruneOptions, prune
from onnxprune.errors import InvalidOptionError
from onnxprune.report.html import render_html, write_html
from onnxprune.report.summary import summary
from onnxprune.report.svg_plots import AFTER, BEFORE, P90, REMOVED, SERIES

EVIL = '<img src="http://evil.example/x.png" onerror="alert(1)">&amp;"\''


@pytest.fixture(scope="module")
def reports(zoo, tmp_path_factory) -> dict[str, dict]:
    """name -> report of a real prune, one per mode the page has sections for."""
    folder = tmp_path_factory.mktemp("html")
    calib = folder / "resnet_calib.npz"
    np.savez(calib, **models.example_inputs("resnet", batch=8))
    mlp_calib = folder / "mlp3d_calib.npz"
    np.savez(mlp_calib, **models.example_inputs("mlp3d", batch=16))
    runs = {
        "structured": ("resnet", PruneOptions(structured=0.4, latency_runs=5)),
        "heads": ("bert", PruneOptions(heads=0.5, latency_runs=5)),
        "drop_layers": ("bert", PruneOptions(drop_layers=1, latency_runs=5)),
        "target_flops": ("resnet", PruneOptions(target_flops=0.6, calib=str(calib), latency_runs=5)),
        "calibrated": ("mlp3d", PruneOptions(structured=0.4, calib=str(mlp_calib), validate=False)),
    }
    return {name: prune(zoo(model), folder / f"{name}.onnx", options) for name, (model, options) in runs.items()}


class _References(HTMLParser):
    """Every attribute or tag through which a page could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "link", "img", "iframe", "object", "embed", "image", "use", "video", "audio", "base"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "poster", "data", "srcset", "background"):
                self.found.append(f"{tag} {name}={value}")
            if name.startswith("on"):
                self.found.append(f"{tag} {name}")


def check_page(text: str, urls_in_text: bool = False) -> ET.Element:
    """Well-formed (strict XML parse), no script, nothing fetched from anywhere; returns the tree.
    `urls_in_text`: the report itself holds URLs (as escaped text they load nothing)."""
    assert text.startswith("<!DOCTYPE html>")
    root = ET.fromstring(text.split("\n", 1)[1])
    parser = _References()
    parser.feed(text)
    assert parser.found == []
    assert "url(" not in text and "@import" not in text
    # The SVG namespace is a name, not a reference; no other URL may appear.
    without_namespace = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert urls_in_text or re.findall(r"(?:https?|file|ftp)://", without_namespace) == []
    return root


def rect_area(text: str, colour: str) -> float:
    return sum(float(w) * float(h) for w, h in
               re.findall(rf'<rect [^>]*width="([\d.]+)" height="([\d.]+)" fill="{colour}"', text))


def test_pages_of_real_prunes_are_self_contained(reports, tmp_path):
    for name, report in reports.items():
        path = tmp_path / f"{name}.html"
        write_html(report, path)
        text = path.read_text(encoding="utf-8")
        check_page(text)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
        assert "Sizes" in text and "Options and run" in text, name
        if "validation" in report:
            assert "Latency" in text and rect_area(text, P90) > 0, name
            for output in report["validation"]["outputs"]:
                assert f"<td>{output['name']}</td>" in text
    structured = render_html(reports["structured"])
    prunable = [s for s in reports["structured"]["spaces"] if s["prunable"]]
    assert structured.count(f'fill="{AFTER}"><title>') >= len(prunable) + 3 + 2  # spaces, sizes, latency
    for space in reports["structured"]["spaces"]:
        if not space["prunable"]:
            assert space["pinned_by"][0].replace("'", "&#x27;") in structured  # pins say why
    heads = render_html(reports["heads"])
    assert "Heads kept per prunable space" in heads and "2/4" in heads  # 4 heads a layer, half removed
    dropped = render_html(reports["drop_layers"])
    assert rect_area(dropped, REMOVED) > 0 and "Residual blocks" in dropped
    assert "Sensitivity" in render_html(reports["target_flops"])
    calibrated = render_html(reports["calibrated"])
    assert "wanda" in calibrated and "least-squares" in calibrated and "Sensitivity" not in calibrated


def test_summary_table_names_the_key_facts(reports):
    text = summary(reports["calibrated"])
    assert "criterion wanda" in text and "compensation" in text and "channels removed" in text
    assert "heads removed: 4" in summary(reports["heads"])
    assert "residual blocks removed: 1 of" in summary(reports["drop_layers"])
    assert "target flops 0.6" in summary(reports["target_flops"])
    assert "speedup" in summary(reports["structured"])


def test_schema_doc_lists_every_key_of_real_reports(reports):
    doc = (Path(__file__).parents[1] / "docs" / "report-schema.md").read_text()
    documented = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", doc, re.M):
        documented |= set(re.findall(r"`([a-z_0-9]+)`", cell))
    for name, report in reports.items():
        assert set(report) - documented == set(), name
        for side in ("before", "after"):
            assert set(report[side]) - documented == set(), name
        assert set(report["validation"] if "validation" in report else {}) - documented == set(), name


def test_names_from_the_model_are_escaped():
    report = {
        "input": EVIL, "notes": [EVIL],
        "spaces": [{"id": 0, "kind": "channels", "label": f"Conv '{EVIL}' output channels", "size": 8, "kept": 4,
                    "prunable": True, "removed": [0, 1, 2, 3]},
                   {"id": 1, "kind": EVIL, "label": EVIL, "size": 3, "prunable": False, "pinned_by": [EVIL]}],
        "validation": {"outputs": [{"name": EVIL, "shape": [1, 2], "max_abs": 0.5, "cosine": 0.9}],
                       "latency_ms": {EVIL: {"median_ms": 1.0, "p90_ms": 2.0}}},
        "sensitivity": [{"space": 0, "label": EVIL, "ratios": [0.1], "errors": [0.2]}],
        EVIL: {EVIL: [EVIL]},
    }
    text = render_html(report)
    check_page(text, urls_in_text=True)
    assert "<img" not in text  # check_page found no tag or on* attribute: the payload stays text
    assert text.count("&lt;img src=&quot;http://evil.example/x.png&quot;") >= 8


def test_validate_bench_and_sparsity_results_render():
    stats = {"median_ms": 1.5, "p90_ms": 1.8, "mean_ms": 1.6, "min_ms": 1.4, "runs": 50}
    validate = {"kind": "validate", "outputs": [
        {"name": "logits", "shape": [1, 1000], "ok": True, "max_abs": 0.01, "cosine": 0.99998, "ref_nan": 0},
        {"name": "aux", "shape": [1, 10], "ok": False, "reason": "shape mismatch", "got_shape": [1, 9]}],
        "latency_ms": {"original": stats, "pruned": {**stats, "median_ms": 1.0}}, "speedup": 1.5}
    text = render_html(validate)
    check_page(text)
    assert "validation report" in text and "shape mismatch" in text and "1\u00d71000" in text
    assert "ref_nan" not in text  # all-zero counters stay out of the table
    assert text.count(f'fill="{AFTER}"><title>') == 2  # one median bar per model
    bench = {"bench": {"results": [
        {"provider": "CPUExecutionProvider", "original": stats, "pruned": stats, "speedup": 1.0},
        {"provider": "CUDAExecutionProvider", "available": False, "reason": "onnxruntime-gpu is not installed"},
        {"provider": "TensorrtExecutionProvider", "original": stats, "pruned": stats}]}}
    text = render_html(bench)
    check_page(text)
    assert "Latency: results / CPUExecutionProvider" in text and "Latency: results / TensorrtExecutionProvider" in text
    assert "onnxruntime-gpu is not installed" in text
    rows = {"kind": "onnxprune.bench", "results": [  # the layout `onnxprune bench --json` writes
        {"model": model, "provider": "cpu", "latency_ms": stats, "speedup": 1.0} for model in ("a.onnx", "b.onnx")]}
    text = render_html(rows)
    check_page(text)
    assert "benchmark report" in text and text.count("Latency: results / cpu</text>") == 1  # one chart, a bar per model
    assert text.count(f'fill="{AFTER}"><title>') == 2
    weights = [{"name": f"w{i}", "op": "MatMul", "eligible": i != 2, "reason": "too small" if i == 2 else None,
                "pattern_ok": i % 2 == 0, "density": 0.5} for i in range(4)]
    for sparsity in (weights, {"pattern": "2:4", "weights": weights}):
        text = render_html({"sparsity": sparsity})
        check_page(text)
        assert "too small" in text and "<td>w3</td>" in text
        assert text.count(f'fill="{AFTER}"><title>') == 2 and text.count(f'fill="{BEFORE}"><title>') == 2


@pytest.mark.parametrize("report", [
    {}, [1, 2], {"spaces": "oops", "before": {"params": "x"}, "after": None, "validation": 3},
    {"layers": {"blocks": [{"influence": "bad"}], "removed": None}, "sensitivity": [{"ratios": [0.1], "errors": [0]}]},
    {"before": {"params": 10, "flops": 0, "weight_bytes": 40}, "after": {"params": 5, "flops": 0, "weight_bytes": 20},
     "validation": {"outputs": [{"name": "y", "cosine": float("nan")}], "latency_ms": {"a": {"median_ms": None}}}},
])
def test_missing_or_malformed_keys_degrade(report):
    check_page(render_html(report))


def test_write_html_refuses_a_folder_and_cli_writes_both_reports(zoo, tmp_path):
    with pytest.raises(InvalidOptionError, match="--html"):
        write_html({}, tmp_path)
    with pytest.raises(InvalidOptionError, match="does not exist"):
        write_html({}, tmp_path / "missing" / "r.html")
    from onnxprune.cli.app import main

    result = CliRunner().invoke(main, [str(zoo("mlp")), str(tmp_path / "out.onnx"), "--structured", "0.5", "--quiet",
                                       "--report", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    check_page(text)
    assert render_html(report).count("<rect") == text.count("<rect")


def _chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _screenshot(chromium: str, page: Path, png: Path) -> np.ndarray:
    """The page as Chromium draws it in a 1200x2400 window, as uint8 RGB."""
    import matplotlib.image

    with tempfile.TemporaryDirectory(prefix="onnxprune-chromium-") as profile:
        result = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--force-color-profile=srgb", "--force-device-scale-factor=1", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,2400", page.as_uri()],
            capture_output=True, text=True, timeout=120)
    assert png.exists(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    image = matplotlib.image.imread(png)
    return np.round(image[..., :3] * 255).astype(np.int16)


def _pixels(image: np.ndarray, colour: str, tolerance: int = 2) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image - rgb).max(axis=-1) <= tolerance).sum())


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_browser_draws_the_plots(reports, tmp_path):
    chromium = _chromium()
    for name in ("structured", "drop_layers", "target_flops"):
        page = tmp_path / f"{name}.html"
        write_html(reports[name], page)
        image = _screenshot(chromium, page, tmp_path / f"{name}.png")
        assert image.shape[:2] == (2400, 1200)
        text = page.read_text(encoding="utf-8")
        assert _pixels(image, "#222222", 60) > 5000, f"{name}: no text drawn"
        if name == "structured":  # the page fits the window: every kept/after bar is on screen, whole
            assert _pixels(image, AFTER) >= 0.9 * rect_area(text, AFTER)
            assert _pixels(image, BEFORE) > 5000 and _pixels(image, P90) > 2000
        if name == "drop_layers":
            assert _pixels(image, REMOVED) >= 0.9 * rect_area(text, REMOVED) > 0
        if name == "target_flops":  # the sensitivity curves, one colour each
            curves = len(reports[name]["sensitivity"])
            assert all(_pixels(image, colour) > 200 for colour in SERIES[1:min(curves, 6)])
