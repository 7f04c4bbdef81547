"""Open a run's report.html in a real headless Chromium and check that it works as a page, not only as text.

Why: the tests parse report.html, but only a browser runs its script and decodes its pictures.
This opens OUT/report.html from disk (file://, no server, no network), then checks that

  * every picture loaded (the data URI decoded: naturalWidth > 0),
  * no console error (a broken script, or a Content-Security-Policy refusal) was logged,
  * every filter (each language, each check, and each language with each check) leaves visible
    exactly the rows that answers.jsonl says it should, and the page's "showing N" says so too.

The expected counts are computed here from answers.jsonl itself, independently of lensml's page code.

    make check-html                      # runs/default
    make check-html RUN_DIR=runs/mine
    python benchmarks/check_report_html.py runs/default [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

SIDES = ("enhanced", "base")
CHECKS = ("clean", "unclean", "wrong-language", "echo", "loop", "empty")

VISIBLE_ROWS = """
return Array.prototype.filter.call(document.querySelectorAll('#answers tbody tr'),
                                   function (r) { return r.getClientRects().length > 0; }).length;
"""
IMAGES = """
return Array.prototype.map.call(document.images, function (i) {
  return [i.alt, i.complete, i.naturalWidth, i.naturalHeight];
});
"""


def holds(row: dict, side: str, check: str) -> bool:
    """Whether an answers.jsonl row's side passes a check, read from the row's own fields."""
    c = row[f"{side}_check"]
    return {"clean": bool(c["clean"]), "unclean": not c["clean"], "wrong-language": not c["right_language"],
            "echo": bool(c["echo"]), "loop": bool(c["loop"]), "empty": bool(c["empty"])}[check]


def expected(rows: list[dict], lang: str, flag: str) -> int:
    side, _, check = flag.partition(":")
    return sum(1 for r in rows if (not lang or r["lang"] == lang) and (not flag or holds(r, side, check)))


def driver_for(chromium: str, chromedriver: str):
    from selenium import webdriver  # the one dependency, installed by `make check-html`
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver: Selenium Manager would otherwise try to download one.
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", default="runs/default", help="a run folder holding report.html")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    ap.add_argument("--screenshot", help="save a PNG of the page as first opened")
    args = ap.parse_args(argv)
    run = Path(args.run_dir)
    page, answers = run / "report.html", run / "answers.jsonl"
    for path in (page, answers):
        if not path.is_file():
            print(f"{path} does not exist: make a run first (make run, or lens run --out {run})", file=sys.stderr)
            return 2
    for tool in (args.chromium, args.chromedriver):
        if not Path(tool).is_file():
            print(f"{tool} not found: install Debian's chromium and chromium-driver (make check-html does)",
                  file=sys.stderr)
            return 2
    rows = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines() if line.strip()]
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    flags = [f"{side}:{check}" for side in SIDES for check in CHECKS]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    failures: list[str] = []
    checked = 0
    start = time.perf_counter()
    driver = driver_for(args.chromium, args.chromedriver)
    try:
        driver.get(page.resolve().as_uri())
        print(f"opened {page} ({page.stat().st_size / 1e3:.0f} kB) in {driver.capabilities.get('browserName')} "
              f"{driver.capabilities.get('browserVersion')}, {len(rows)} answer pairs, languages {', '.join(langs)}")
        if args.screenshot:
            driver.save_screenshot(args.screenshot)
        images = driver.execute_script(IMAGES)
        for alt, complete, width, height in images:
            checked += 1
            ok = complete and width > 0
            print(f"  picture {alt}: {width}x{height} {'loaded' if ok else 'NOT LOADED'}")
            if not ok:
                failures.append(f"picture {alt} did not load")
        if not images:
            failures.append("the page has no pictures")
        language, flag = Select(driver.find_element(By.ID, "filter-language")), \
            Select(driver.find_element(By.ID, "filter-flag"))
        offered = [o.get_attribute("value") for o in flag.options if o.get_attribute("value")]
        if offered != flags:
            failures.append(f"the check filter offers {offered}, expected {flags}")
        combos = [(lang, "") for lang in ["", *langs]] + [("", f) for f in flags] + \
                 [(lang, f) for lang in langs for f in flags]
        for lang, f in combos:
            language.select_by_value(lang)
            flag.select_by_value(f)
            visible = driver.execute_script(VISIBLE_ROWS)
            shown = driver.find_element(By.ID, "shown").text
            want = expected(rows, lang, f)
            checked += 1
            if visible != want or shown != str(want):
                failures.append(f"language={lang or 'all'} check={f or 'any'}: {visible} rows visible, page says "
                                f"{shown}, answers.jsonl says {want}")
            elif not lang or not f:
                print(f"  filter language={lang or 'all':<4} check={f or 'any':<24} {visible:3d} rows (expected {want})")
        print(f"  {len([c for c in combos if c[0] and c[1]])} language x check combinations checked as well")
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        checked += 1
        for e in errors:
            failures.append(f"console error: {e.get('message')}")
    finally:
        driver.quit()
    for f in failures:
        print(f"FAIL {f}")
    print(f"{'FAILED' if failures else 'OK'}: {checked - len(failures)}/{checked} checks passed "
          f"in {time.perf_counter() - start:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
