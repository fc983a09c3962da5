"""The report's first screen: the verdict matrix agrees cell for cell with the records, an allowed
inconclusive verdict is never shown as passed, and at 1400 px in Chromium neither the first screen
nor the accuracy table scrolls sideways. Records: tests/data/results-v1-verdicts.jsonl (real runs
of issue 14's verdicts: pass, fail, inconclusive failed and allowed, not applicable) and the seeds'
310P figures run through the suite (test_report's ``seed_results``, a real run)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from suite_runner import ROOT

from harness.records.results import load_results
from harness.report.build import write_report
from harness.report.matrix import verdict_matrix, words
from harness.report.paths import as_typed
from harness.report.verdicts import status_of

V1 = ROOT / "tests" / "data" / "results-v1-verdicts.jsonl"


class _Matrix(HTMLParser):
    """The first ``table.matrix`` of a page: headers, and per row each cell's classes, text and link."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: list[list[dict[str, str]]] = []
        self._in, self._done = False, False
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and "matrix" in (a.get("class") or "") and not self._done:
            self._in = True
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = {"tag": tag, "class": a.get("class") or "", "text": "", "href": ""}
        elif self._in and tag == "a" and self._cell is not None:
            self._cell["href"] = a.get("href") or ""
        elif self._in and tag == "br" and self._cell is not None:
            self._cell["text"] += "\n"

    def handle_endtag(self, tag: str) -> None:
        if self._in and tag in ("td", "th") and self._cell is not None:
            if self._cell["tag"] == "th":
                self.headers.append(self._cell["text"])
            else:
                self.rows[-1].append(self._cell)
            self._cell = None
        elif tag == "table" and self._in:
            self._in, self._done = False, True

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def parsed_matrix(page: str) -> _Matrix:
    parser = _Matrix()
    parser.feed(page)
    parser.rows = [row for row in parser.rows if row]  # the header row holds th cells only
    return parser


@pytest.fixture(scope="module")
def merged(seed_results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeds' perf run and the six verdict runs of results-v1, merged into one report."""
    folder = tmp_path_factory.mktemp("merged")
    shutil.copy(seed_results, folder / "perf.jsonl")
    shutil.copy(V1, folder / "verdicts.jsonl")
    return folder


@pytest.mark.parametrize("which", ["v1", "merged"])
def test_the_matrix_agrees_cell_for_cell_with_the_records(which: str, merged: Path, tmp_path: Path) -> None:
    source = V1 if which == "v1" else merged
    results = load_results(source)
    page = write_report(results, tmp_path).html.read_text()
    shown = parsed_matrix(page)
    matrix = verdict_matrix(load_results(source))
    assert shown.headers == ["model", *(c.title for c in matrix.columns)]
    assert [row[0]["text"] for row in shown.rows] == list(matrix.models)
    placed = 0
    for row in shown.rows:
        model = row[0]["text"]
        for col, td in zip(matrix.columns, row[1:], strict=True):
            record = matrix.cells.get((model, col))
            if record is None:
                assert td["text"] == "\u2014" and not td["class"]
                continue
            placed += 1
            assert td["class"] == status_of(record), (model, col.title, td)  # the colour: the recorded verdict
            assert td["text"].split("\n")[0] == words(record)
            assert td["href"].startswith("#") and f'id="{td["href"][1:]}"' in page  # a link to its details
    # every newest test of a model is in exactly one cell (two tests in one cell: none in these files)
    assert placed == len([r for r in results.latest_tests() if r.model])
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_allowed_inconclusive_is_never_shown_as_passed(tmp_path: Path) -> None:
    results = load_results(V1)
    allowed = [r for r in results.latest_tests() if r.verdict == "inconclusive" and r.outcome == "passed"]
    assert len(allowed) == 1  # --limit 100 openvino fp32, allowed by --inconclusive allow
    paths = write_report(results, tmp_path)
    md, page = paths.markdown.read_text(), paths.html.read_text()
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in summary.splitlines() if "| cpu openvino fp32 |" in line]
    assert len(rows) == 1 and "| inconclusive (allowed) |" in rows[0] and "passed" not in rows[0]
    history = md.split("### History", 1)[1].split("\n## ", 1)[0]
    assert "89.00 / 97.00 on 100<br>inconclusive (allowed)" in history  # the history cell carries the verdict
    assert "83.38 / 95.46 on 1,300<br>inconclusive" in history  # and the one the policy failed on
    assert "6 model(s)" not in md and "0 certified, 0 inconclusive (allowed), 1 not certified" in md
    matrix = parsed_matrix(page)
    (cell,) = [td for td in matrix.rows[0] if td["text"].startswith("inconclusive (allowed)")]
    assert cell["class"] == "allowed"
    assert '<td class="r allowed">89.00 / 97.00 on 100<br>inconclusive (allowed)</td>' in page


def test_the_reasons_are_grouped_one_line_each(merged: Path, tmp_path: Path) -> None:
    md = write_report(load_results(merged), tmp_path).markdown.read_text()
    verdicts = md.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in verdicts.splitlines() if line.startswith("- [")]
    assert lines and len(lines) == len(set(lines))
    numbers = [int(re.match(r"- \[(\d+)\]", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert numbers == list(range(1, len(lines) + 1))
    counted = [line for line in lines if re.search(r", [2-9]\d* models \(", line)]
    assert counted, lines  # several models' identical reason is one line naming them all
    for r in load_results(merged).latest_tests():  # a skip's reason is shown whole, never cut
        if r.outcome == "skipped" and r.model:
            reason = r.meta.reason or ""
            if "\n" in reason and reason.split("\n")[0].endswith("..."):
                reason = reason.split("\n", 1)[1]  # a dashboard's cut headline, then the whole message
            whole = " ".join(reason.split()).replace(r.model, "<model>").replace("<", "&lt;")
            assert any(whole in line for line in lines), whole


def test_paths_are_shown_as_the_run_typed_them() -> None:
    rewrite = as_typed(["-m", "accuracy", "--imagenet", "../shared/datasets/imagenet-val-1300", "--limit", "50",
                        "--results=reports/r.jsonl"])
    text = ("subset: 50 images under /work/shared/datasets/imagenet-val-1300/val; labels "
            "(val_label.txt: /work/shared/datasets/imagenet-val-1300/val_label.txt); other /data/imagenet-val-13000")
    assert rewrite(text) == (
        "subset: 50 images under ../shared/datasets/imagenet-val-1300/val; labels "
        "(val_label.txt: ../shared/datasets/imagenet-val-1300/val_label.txt); other /data/imagenet-val-13000")
    assert as_typed(["--imagenet", "/abs/path"])("/abs/path/val") == "/abs/path/val"  # typed absolute: as is


# --------------------------------------------------------------------------------------------
# In Chromium at 1400 px

PROBE = """<script>
(() => {
  const se = document.scrollingElement;
  const acc = document.querySelector("table.accuracy");
  const matrix = document.querySelector("table.matrix");
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify({
    page: [se.scrollWidth, se.clientWidth],
    accuracy: acc ? [acc.parentElement.scrollWidth, acc.parentElement.clientWidth, acc.getBoundingClientRect().right]
                  : null,
    matrix: [matrix.parentElement.scrollWidth, matrix.parentElement.clientWidth,
             matrix.getBoundingClientRect().bottom, matrix.tBodies[0].rows.length],
    verdict: acc ? [...acc.tHead.rows[0].cells].find(c => c.innerText === "verdict").getBoundingClientRect().right
                 : null,
    width: window.innerWidth,
  });
  document.body.appendChild(out);
})();
</script>"""


def _browser() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome")
                 if (found := shutil.which(name))), None)


def measured(page: Path, tmp_path: Path) -> dict[str, Any]:
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH; install chromium: "
                    "apt-get install -y chromium")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--window-size=1400,900", "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the measuring script did not run"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.parametrize("which", ["v1", "merged"])
def test_no_sideways_scroll_at_1400_px(which: str, merged: Path, tmp_path: Path) -> None:
    page = write_report(load_results(V1 if which == "v1" else merged), tmp_path / "report").html
    m = measured(page, tmp_path)
    assert m["width"] == 1400
    scroll, client = m["page"]
    assert scroll <= client, m  # the page itself
    scroll, client, bottom, rows = m["matrix"]
    assert scroll <= client, m  # the first screen: the verdict matrix
    assert rows == len(verdict_matrix(load_results(V1 if which == "v1" else merged)).models)
    scroll, client, right = m["accuracy"]
    assert scroll <= client and right <= 1400, m  # the accuracy table, verdict column included
    assert m["verdict"] <= 1400
