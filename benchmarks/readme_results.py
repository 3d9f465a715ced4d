"""Copy the committed leaderboard tables into README.md's Results section (never typed by hand).

README.md holds, for each suite listed in SUITES, a block between ``<!-- results:<suite>:start -->`` and
``<!-- results:<suite>:end -->``; this script replaces it with the suite's ``results/<suite>/leaderboard.md``
(title dropped, headings demoted) and links to its figures. ``tests/test_readme_results.py`` fails when the README's
block differs from what this script would write, so a new table cannot land without its README.

    python benchmarks/readme_results.py [--check]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ("cpu",)


def block(suite: str, root: Path = ROOT) -> str:
    md = (root / "results" / suite / "leaderboard.md").read_text()
    body = md.split("\n", 1)[1].strip()  # drop the "# Leaderboard: ..." title
    figs = [f for f in ("leaderboard.png", "leaderboard-lr.png", "leaderboard.html") if (root / "results" / suite / f).exists()]
    links = " · ".join(f"[{f}](results/{suite}/{f})" for f in figs)
    return (f"<!-- results:{suite}:start -->\n"
            f"*Copied from [results/{suite}/leaderboard.md](results/{suite}/leaderboard.md) by "
            f"`python benchmarks/readme_results.py`; figures: {links}.*\n\n{body}\n"
            f"<!-- results:{suite}:end -->")


def render(readme: str, root: Path = ROOT) -> str:
    for suite in SUITES:
        pat = re.compile(rf"<!-- results:{suite}:start -->.*?<!-- results:{suite}:end -->", re.S)
        if not pat.search(readme):
            raise ValueError(f"README.md has no <!-- results:{suite}:start --> ... end block")
        readme = pat.sub(lambda _: block(suite, root), readme)
    return readme


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md is not up to date; write nothing")
    a = p.parse_args(argv)
    path = ROOT / "README.md"
    old = path.read_text()
    new = render(old)
    if a.check:
        if new != old:
            print("README.md's results blocks differ from results/: run python benchmarks/readme_results.py")
            return 1
        return 0
    from peftzoo.bench.store import write_text
    write_text(path, new)
    print("README.md " + ("updated" if new != old else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
