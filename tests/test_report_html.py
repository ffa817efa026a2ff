"""The HTML report of real runs, read as a reviewer reads it: in a real headless Chromium at 1280 px.

One module-scoped scene, built once with the real CLI on the committed example model: ``edgeprep quantize`` (LiteRT
int8 with one layer kept in float: per-layer SQNR), then ``edgeprep bench`` twice on the same file names — a
baseline (fp32 / int8 TFLite, fp32 OpenVINO, ``--profile``) and a candidate whose int8 slot holds the fp32 model
(size +260 %) and whose fp32 slot holds the int8 model (agreement 0.996 under a 0.999 threshold) — and ``edgeprep
gate`` of the candidate against the baseline, with the run history of both. The pages are parsed with html.parser
and then rendered by Chromium (``--dump-dom`` after a probe script writes what it measured into the page, and
``--screenshot``): the verdict banner, the failed rows' class, that no value cell wraps and nothing overflows
1280 px, that every image decodes and nothing is fetched from the network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import EXAMPLE_MODEL, MANIFEST, ROOT, require

KEPT = ("fashion_mnist_cnn_1/block5_pw_relu_1/Relu6;fashion_mnist_cnn_1/block5_pw_1/BiasAdd;"
        "fashion_mnist_cnn_1/block5_pw_1/convolution;fashion_mnist_cnn_1/block5_pw_1/Squeeze1")
TARGET = """name = "report-html-test"
description = "the example CNN on LiteRT and OpenVINO, one thread"
formats = ["tflite"]
precisions = ["fp32", "int8"]
threads = 1
[bench]
runs = 50
repeats = 2
warmup = 10
[gates]
min_agreement = 0.999
max_size_growth_pct = 10.0
max_accuracy_drop_vs_baseline = 1.0
# the swapped slots move latency by about x2 (fp32 in the int8 slot), which a 100 % threshold split on CI: a bound the
# swap cannot reach, so only size and agreement fail whatever the machine
max_latency_regression_pct = 400.0
"""
COMMITS = {"base": "1111111aaaaaaaa", "cand": "2222222bbbbbbbb"}
WIDTH = 1280


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from edgeprep.cli import main
    from edgeprep.config.formats import OpenVINOOptions, TFLiteOptions
    from edgeprep.models import load_model
    from edgeprep.stages.convert import convert

    root = tmp_path_factory.mktemp("report_html")
    history = root / "history.sqlite"
    # the converter's own PTQ, whose node names KEPT are (the shipped profile uses edgeprep's, named by layers)
    shipped = (ROOT / "edgeprep" / "profiles" / "litert-cpu.toml").read_text()
    (root / "litert-vendor.toml").write_text(shipped.replace('engine = "edgeprep"', 'engine = "vendor"'))
    assert main(["-q", "quantize", str(EXAMPLE_MODEL), "-d", str(MANIFEST), "-t", str(root / "litert-vendor.toml"),
                 "--keep-float", KEPT, "-o", str(root / "quantize")]) == 0
    int8 = root / "quantize" / "fashion_mnist_cnn.int8.tflite"
    model = load_model(EXAMPLE_MODEL)
    fp32 = convert(model, "tflite", "fp32", TFLiteOptions(), root / "fp32.tflite").path
    convert(model, "openvino", "fp32", OpenVINOOptions(), root / "m.fp32.xml", workdir=root)
    (root / "target.toml").write_text(TARGET)
    for name, (in_fp32, in_int8) in (("base", (fp32, int8)), ("cand", (int8, fp32))):
        arts = root / f"{name}-artifacts"
        arts.mkdir()
        shutil.copy(in_fp32, arts / "m.fp32.tflite")
        shutil.copy(in_int8, arts / "m.int8.tflite")
        for f in ("m.fp32.xml", "m.fp32.bin"):
            shutil.copy(root / f, arts / f)
        os.environ["EDGEPREP_COMMIT"] = COMMITS[name]
        try:
            code = main(["-q", "bench", *(str(arts / f) for f in ("m.fp32.tflite", "m.int8.tflite", "m.fp32.xml")),
                         "--target", str(root / "target.toml"), "--data", str(MANIFEST), "--model",
                         str(EXAMPLE_MODEL), "--profile", "--history", str(history), "--out", str(root / name)])
        finally:
            os.environ.pop("EDGEPREP_COMMIT")
        assert code == 1        # the int8 model fails min_agreement 0.999 in both: a failed row on each page
    code = main(["-q", "gate", str(root / "cand"), "--baseline", str(root / "base"), "--no-rebench", "--history",
                 str(history), "--html", str(root / "gate.html"), "--json", str(root / "gate.json")])
    assert code == 1
    return root


def page(scene: Path, name: str) -> Path:
    return {"quantize": scene / "quantize" / "report.html", "run": scene / "cand" / "report.html",
            "gate": scene / "gate.html"}[name]


class _Dom(HTMLParser):
    """The parts of a page the tests read: elements by id, table rows (class, data-artifact, cells with their
    classes and text) and images."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: dict[str, dict] = {}
        self.tables: dict[str, list[dict]] = {}
        self.images: list[dict] = []
        self._open: list[dict] = []
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        node = {"tag": tag, "attrs": a, "text": ""}
        if tag == "img":
            self.images.append(a)
            return
        if tag in ("meta", "br"):
            return
        self._open.append(node)
        if "id" in a:
            self.ids[a["id"]] = node
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id") or a.get("class") or f"t{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = {"class": a.get("class", ""), "artifact": a.get("data-artifact"), "cells": []}
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"class": a.get("class", ""), "text": ""}
            self._row["cells"].append(self._cell)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()["tag"] == tag:
                break
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        for node in self._open:
            node["text"] += data
        if self._cell is not None:
            self._cell["text"] += data


def dom(path: Path) -> _Dom:
    return _Dom(path.read_text())


def rows_of(d: _Dom, table: str) -> dict[str, dict]:
    return {r["artifact"]: r for r in d.tables[table] if r["artifact"]}


# ---------------------------------------------------------------- the pages' content (html.parser)


def test_the_quantize_page_ranks_layers_worst_first_and_marks_the_kept_float_layer(scene):
    report = json.loads((scene / "quantize" / "report.json").read_text())
    [a] = report["artifacts"]
    assert a["quantization"]["kept_float"] == [KEPT]
    d = dom(page(scene, "quantize"))
    assert "VERIFIED" in d.ids["verdict"]["text"] and "pass" in d.ids["verdict"]["attrs"]["class"].split()
    layers = d.tables["layers"][1:]
    sqnr = [float(r["cells"][2]["text"]) for r in layers]
    assert sqnr == sorted(sqnr) and len(layers) == 8
    assert sqnr[0] == round(min(r["sqnr_db"] for r in a["layer_errors"]["layers"]), 1)
    kept = [r for r in layers if r["class"] == "kept"]
    assert [r["cells"][0]["text"] for r in kept] == ["block5_pw_relu_1/Relu6"]
    assert kept[0]["cells"][-1]["text"] == "kept float"
    assert all(r["cells"][-1]["text"] == "int8" for r in layers if r["class"] != "kept")
    alts = [img["alt"] for img in d.images]
    assert "per-layer SQNR of fashion_mnist_cnn.int8.tflite, worst first" in alts
    assert alts.index("per-layer SQNR of fashion_mnist_cnn.int8.tflite, worst first") == 0   # quantize: first
    [row] = rows_of(d, "artifacts").values()
    agreement = row["cells"][5]
    assert agreement["text"] == f"{a['metrics']['agreement']:.4f}≥ 0.97"       # the threshold beside the value


def test_the_gate_page_colours_each_row_by_its_worst_check_and_plots_what_was_gated(scene):
    gate = json.loads((scene / "gate.json").read_text())
    failed = {(v["artifact"], v["check"]) for v in gate["verdicts"] if v["status"] == "fail"}
    assert gate["status"] == "failed" and failed == {("m.int8.tflite", "max_size_growth_pct"),
                                                     ("m.fp32.tflite", "min_agreement")}
    d = dom(page(scene, "gate"))
    banner = d.ids["verdict"]
    assert banner["text"].startswith("GATE FAILED: 2 regressed, 0 could not be judged, 10 passed")
    assert "fail" in banner["attrs"]["class"].split() and "FAILED: 1 failed, 2 verified of 3" in banner["text"]
    rows = rows_of(d, "artifacts")
    assert {k: r["class"] for k, r in rows.items()} == {"m.fp32.tflite": "fail", "m.int8.tflite": "fail",
                                                        "m.fp32.xml": "pass"}
    head = [c["text"] for c in d.tables["artifacts"][0]["cells"]]
    size = rows["m.int8.tflite"]["cells"][head.index("size")]
    growth = next(v["value"] for v in gate["verdicts"] if v["check"] == "max_size_growth_pct"
                  and v["artifact"] == "m.int8.tflite")
    assert "bad" in size["class"].split() and size["text"].endswith(f"MiB{growth:+.1f} % ≤ +10 %")
    agreement = rows["m.fp32.tflite"]["cells"][head.index("agreement")]
    value = next(v["value"] for v in gate["verdicts"] if v["check"] == "min_agreement"
                 and v["artifact"] == "m.fp32.tflite")
    assert "bad" in agreement["class"].split() and agreement["text"] == f"{value:.4f}≥ 0.999"
    ratio = next(v for v in gate["verdicts"] if v["artifact"] == "m.fp32.xml" and v["check"].startswith("max_lat"))
    assert rows["m.fp32.xml"]["cells"][head.index("p50 ms")]["text"].endswith(
        f"×{1 + ratio['value'] / 100:.2f} ≤ ×5.00")
    assert "gate: min_agreement" in rows["m.fp32.tflite"]["cells"][-1]["text"]
    alts = [img["alt"] for img in d.images]
    for title in ("Size", "Top-1 accuracy", "Agreement with the float model", "Median latency against the baseline"):
        assert f"{title}: this run, the baseline and the threshold per artifact" in alts
    assert "median latency over the recorded runs, by date and commit" in alts
    verdicts = d.tables["verdicts"][1:]
    assert [r["class"] for r in verdicts[:2]] == ["fail", "fail"] and len(verdicts) == len(gate["verdicts"])


def test_the_trend_is_one_integer_position_per_run_labelled_by_date_and_commit(scene):
    from edgeprep import history
    from edgeprep.report.html import trend_axis

    rows = history.trend(scene / "history.sqlite", "report-html-test")
    labels, series = trend_axis(rows)
    dates = sorted({r["created"][:10] for r in rows})
    assert labels == [f"{dates[0]}\n1111111", f"{dates[-1]}\n2222222"]
    assert set(series) == {"m.fp32.tflite", "m.int8.tflite", "m.fp32.xml"}
    assert all([x for x, _ in pts] == [0, 1] and all(type(x) is int for x, _ in pts) for pts in series.values())


def test_the_profile_is_a_table_in_the_html_and_in_the_markdown(scene):
    report = json.loads((scene / "cand" / "report.json").read_text())
    by = {Path(a["path"]).name: a["bench"]["profile"] for a in report["artifacts"]}
    ov, lite = by["m.fp32.xml"], by["m.int8.tflite"]
    assert ov["available"] and not lite["available"]
    md = (scene / "cand" / "summary.md").read_text()
    top = ov["by_type"][0]
    assert f"| {top['type']} | {top['count']} | {top['ms']:.4f} | {top['share']:.1%} |" in md
    assert f"Where the time goes, openvino fp32: {ov['total_ms']:.3g} ms per inference" in md
    assert f"No per-op profile for tflite int8: {lite['reason']}." in md
    d = dom(page(scene, "run"))
    profile = d.tables["profile"]
    assert [c["text"] for c in profile[1]["cells"]][:3] == [top["type"], str(top["count"]), f"{top['ms']:.4f}"]
    assert f"tflite int8 (m.int8.tflite): no per-op profile: {lite['reason']}" in d.ids["profile"]["text"]


# ---------------------------------------------------------------- in a real browser

PROBE = """<script>
window.addEventListener('load', () => {
  const oneLine = el => {            // every line box of the cell's content on one line
    const r = document.createRange(); r.selectNodeContents(el);
    const boxes = [...r.getClientRects()].filter(b => b.width > 0 && b.height > 0);
    return !boxes.length || Math.max(...boxes.map(b => b.top)) < Math.min(...boxes.map(b => b.bottom));
  };
  const b = document.getElementById('verdict');
  const box = b.getBoundingClientRect();
  const out = {
    banner: {text: b.innerText, cls: b.className, top: box.top, right: box.right, height: box.height},
    rows: [...document.querySelectorAll('#artifacts tr[data-artifact]')].map(
      tr => [tr.dataset.artifact, tr.className, getComputedStyle(tr.cells[1]).backgroundColor]),
    wrapped: [...document.querySelectorAll('td:not(.text), th:not(.text)')].filter(c => !oneLine(c))
      .map(c => c.innerText),
    width: document.documentElement.scrollWidth, viewport: window.innerWidth,
    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 21)]),
    external: [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
      .filter(u => !u.startsWith('data:')),
    fetched: performance.getEntriesByType('resource').map(e => e.name).filter(u => !u.startsWith('data:')),
  };
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require(found is not None, "chromium (Debian: apt-get install chromium), to render the HTML report")
    return found


def chromium(binary: str, profile: Path, *args: str, timeout: float = 60) -> str:
    """One headless Chromium run in its own process group, killed with everything it started when it is done."""
    proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--no-first-run", f"--user-data-dir={profile}", f"--window-size={WIDTH},2000",
                             "--host-resolver-rules=MAP * ~NOTFOUND", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out, err = "", f"chromium did not finish within {timeout} s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0 or out, err[-2000:]
    return out


BANNER_COLOUR = {"fail": (0xfb, 0xda, 0xda), "pass": (0xe3, 0xf3, 0xe3)}
ROW_COLOUR = {"fail": "rgb(253, 228, 228)", "pass": "rgb(236, 247, 236)"}


@pytest.mark.parametrize("name, banner, classes", [
    ("quantize", ("pass", "VERIFIED: 1 artifact verified against 2 thresholds"),
     {"fashion_mnist_cnn.int8.tflite": "pass"}),
    ("run", ("fail", "FAILED: 1 failed, 2 verified of 3 artifacts"),
     {"m.fp32.tflite": "fail", "m.int8.tflite": "pass", "m.fp32.xml": "pass"}),
    ("gate", ("fail", "GATE FAILED: 2 regressed"),
     {"m.fp32.tflite": "fail", "m.int8.tflite": "fail", "m.fp32.xml": "pass"}),
])
def test_the_page_in_headless_chromium_at_1280_px(scene, tmp_path, name, banner, classes):
    import matplotlib.image

    binary = chromium_binary()
    probed = tmp_path / "probed.html"
    probed.write_text(page(scene, name).read_text().replace("</body>", PROBE + "</body>"))
    dumped = chromium(binary, tmp_path / "profile", "--run-all-compositor-stages-before-draw",
                      "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    probe = json.loads(_Dom(dumped).ids["probe"]["text"])
    assert probe["banner"]["text"].startswith(banner[1]) and banner[0] in probe["banner"]["cls"].split()
    assert {k: cls for k, cls, _ in probe["rows"]} == classes
    assert all(colour == ROW_COLOUR[cls] for _, cls, colour in probe["rows"]), probe["rows"]
    assert probe["wrapped"] == [], f"value cells wrapped over two lines at {WIDTH} px: {probe['wrapped']}"
    assert probe["viewport"] == WIDTH and probe["width"] <= WIDTH, "the page is wider than the window"
    assert len(probe["images"]) >= 3
    for alt, complete, natural_width, src in probe["images"]:
        assert complete and natural_width > 400 and src == "data:image/png;base64", alt
    assert probe["external"] == [] and probe["fetched"] == []

    shot = tmp_path / "page.png"
    chromium(binary, tmp_path / "profile", "--screenshot=" + str(shot), page(scene, name).as_uri())
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[1] == WIDTH
    b = probe["banner"]
    y, x = int(b["top"] + b["height"] / 2), int(b["right"]) - 12       # right of the banner's text
    got = [round(255 * v) for v in pixels[y, x, :3]]
    assert max(abs(g - e) for g, e in zip(got, BANNER_COLOUR[banner[0]])) <= 3, (got, banner[0])
