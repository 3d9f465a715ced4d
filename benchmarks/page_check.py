"""The leaderboard page (``peftzoo table --html``) in a real browser: headless Chromium (Debian's package
``chromium``) renders it once, a probe script clicks column headers, and the rendered DOM is checked: one table row
per board row with its values, the sort the address asks for (``#sort=<column>``) and the ones two clicks give, the
cell's runs linked, every task's figures drawn as SVG.

    python benchmarks/page_check.py results/cpu/leaderboard.html [--screenshot page.png]

tests/test_html_page.py runs ``check`` on a page it builds, and skips where there is no Chromium.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # no network at all
PROBE = """<script>(function () {
  const order = () => [...document.querySelectorAll("#board > tbody > tr")].map(r => r.dataset.i).join(" ");
  const th = document.querySelector('#board th[data-key="KEY"]'), b = document.body;
  b.dataset.afterHash = order();
  th.click(); b.dataset.click1 = order(); b.dataset.sort1 = th.getAttribute("aria-sort");
  th.click(); b.dataset.click2 = order(); b.dataset.sort2 = th.getAttribute("aria-sort");
})();</script>"""


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float) -> str:
    exe = browser()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH: `apt-get install chromium` (Debian's package)")
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                           timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"chromium exited {p.returncode}: {p.stderr[-2000:]}")
    return p.stdout


def render(page: Path, fragment: str = "", click: str | None = None, timeout: float = 120) -> str:
    """The DOM after load (``fragment``: e.g. "#sort=avg"); ``click``: a column key the probe clicks twice, each
    step's row order recorded on <body> (data-after-hash, data-click1/2, data-sort1/2)."""
    page = Path(page).resolve()
    text = page.read_text(encoding="utf-8")
    if click is not None:  # a copy beside the page, with the probe after the page's own script
        text = text.replace("</body>", PROBE.replace("KEY", click) + "</body>")
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=page.parent, delete=False, encoding="utf-8") as f:
        f.write(text)
    try:
        return _run(["--dump-dom", Path(f.name).as_uri() + fragment], timeout)
    finally:
        Path(f.name).unlink()


def screenshot(page: Path, out: Path, size: str = "1600,2400", timeout: float = 120) -> None:
    _run([f"--window-size={size}", f"--screenshot={Path(out).resolve()}", Path(page).resolve().as_uri()], timeout)


class Dom(HTMLParser):
    """What the check reads from the rendered DOM."""

    def __init__(self, dom: str):
        super().__init__()
        self.body, self.heads, self.rows, self.links, self.sections = {}, [], [], [], []
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = {k[5:]: v for k, v in a.items() if k.startswith("data-")}
        elif tag == "th" and "data-key" in a:
            self.heads.append(a)
        elif tag == "tr" and "data-i" in a:
            self.rows.append({"i": a["data-i"], "method": a.get("data-method"), "v": []})
        elif tag == "td" and self.rows and "data-v" in a:  # only the board's own cells carry data-v
            self.rows[-1]["v"].append(a["data-v"])
        elif tag == "a" and a.get("href", "").endswith(".json"):
            self.links.append(a["href"])
        elif tag == "section" and "task" in (a.get("class") or ""):
            self.sections.append({"id": a.get("id"), "svg": 0})
        elif tag == "svg" and self.sections:
            self.sections[-1]["svg"] += 1


def expected(rows: list[dict], col: int, numeric: bool, desc: bool) -> str:
    """The order the page's script must give: by the column's value, missing ones last, ties in the board's order."""
    def value(r):
        return float(r["v"][col]) if numeric else r["v"][col]
    board = sorted(rows, key=lambda r: int(r["i"]))
    have = sorted([r for r in board if r["v"][col]], key=value, reverse=desc)  # stable: ties keep the board's order
    return " ".join(r["i"] for r in have + [r for r in board if not r["v"][col]])


def check(page: Path, sort: str | None = None, click: str = "method") -> Dom:
    """Render ``page`` sorted by ``sort`` (default: its first task column) and clicked on ``click``; raise
    AssertionError naming what the browser shows wrong. Returns the parsed DOM for more checks."""
    first = Dom(Path(page).read_text(encoding="utf-8"))
    keys = [h["data-key"] for h in first.heads]
    sort = sort or next(h["data-key"] for h in first.heads[3:] if h.get("data-type") == "num")
    dom = Dom(render(page, f"#sort={sort}", click))
    assert dom.rows, "the rendered page has no table rows"
    assert len(dom.rows) == len(first.rows), f"{len(dom.rows)} rows rendered, the file has {len(first.rows)}"
    assert all(len(r["v"]) == len(keys) for r in dom.rows), "a row lacks a cell of some column"
    s, c = keys.index(sort), keys.index(click)
    num = {h["data-key"]: h.get("data-type") == "num" for h in dom.heads}
    want = expected(first.rows, s, num[sort], desc=num[sort])
    assert dom.body.get("after-hash") == want, f"#sort={sort}: rows {dom.body.get('after-hash')}, expected {want}"
    first_dir = num[click]  # a first click sorts numbers descending, text ascending; the second reverses
    assert dom.body.get("click1") == expected(first.rows, c, num[click], desc=first_dir), f"click on {click}"
    assert dom.body.get("click2") == expected(first.rows, c, num[click], desc=not first_dir), f"2nd click on {click}"
    assert {dom.body.get("sort1"), dom.body.get("sort2")} == {"ascending", "descending"}, dom.body
    assert dom.links, "no cell links to its runs' JSON"
    assert dom.sections and all(x["svg"] >= 1 for x in dom.sections), f"a task without a figure: {dom.sections}"
    return dom


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page", nargs="?", default="results/cpu/leaderboard.html")
    p.add_argument("--sort", default=None, help="column key to sort by through the address (default: first task)")
    p.add_argument("--screenshot", default=None, help="also write a PNG of the page here")
    a = p.parse_args(argv)
    dom = check(Path(a.page), a.sort)
    missing = [h for h in dom.links if not (Path(a.page).parent / h).is_file()]
    if missing:
        print(f"{len(missing)} run links point at no file, e.g. {missing[0]}", file=sys.stderr)
        return 1
    if a.screenshot:
        screenshot(Path(a.page), Path(a.screenshot))
    shot = f"; screenshot {a.screenshot}" if a.screenshot else ""
    print(f"{a.page}: {len(dom.rows)} rows, sorted by the address and by two clicks as expected, "
          f"{len(dom.links)} run links (all resolve), {len(dom.sections)} task sections with "
          f"{sum(x['svg'] for x in dom.sections)} SVG figures{shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
