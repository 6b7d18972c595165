"""The HTML report in a real browser: Debian's chromium, driven headless by Playwright for Python (no
browser download), opens report.html from a file with no console error and every embedded image
decodes. Skips where chromium or playwright is missing, except under CI=true, where it fails:
CI installs both (.ci/run), so a skip there would hide a broken page."""
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from bench.cli import main
from test_report_summary import T0, cpu_rows, gpu_rows, not_ok, write_run

CHROMIUM = Path(os.environ.get("CARDBENCH_CHROMIUM", "/usr/bin/chromium"))
# What a sandboxed root CI machine with a closed network needs: no sandbox (root), no GPU, and
# none of the background connections (updates, sync, field trials) chromium makes at start.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def missing_browser() -> list[str]:
    missing = [] if CHROMIUM.exists() else [f"{CHROMIUM} (Debian: apt-get install chromium)"]
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[test]')")
    return missing


def require_browser() -> None:
    missing = missing_browser()
    if not missing:
        return
    why = "the browser check of the HTML report needs " + " and ".join(missing)
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{why}; CI=true, so this fails instead of skipping (.ci/run installs both)")
    pytest.skip(why)


def open_in_chromium(page_path: Path) -> dict:
    """Load a file in headless chromium; the console errors, page errors, failed requests and images."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                        args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]} {r.failure}"))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
                                   "width: i.naturalWidth, height: i.naturalHeight}))")
            title = page.title()
        finally:
            browser.close()
    return {"problems": problems, "images": images, "title": title}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Every kind of figure: rooflines (GPU and CPU), history, % of claim, matmul in both units."""
    tmp_path = tmp_path_factory.mktemp("browser")
    d = tmp_path / "results"
    write_run(d / "h100-old.csv", gpu_rows(1900.0), start=T0 - timedelta(days=2))
    write_run(d / "h100.csv", gpu_rows() + [not_ok("transfer", "h2d", "pinned-1GiB", "error", "boom <b>")])
    write_run(d / "cpu.csv", cpu_rows(), index="", uuid="", name="AMD EPYC", host="ci")
    out = tmp_path / "r"
    assert main(["report", str(d), "--out", str(out)]) == 0
    return out / "report.html"


def test_html_report_loads_in_chromium_without_errors_and_every_image_decodes(built):
    require_browser()
    page = built
    seen = open_in_chromium(page)
    assert seen["title"] == "cardbench report"
    assert seen["problems"] == []
    embedded = page.read_text().count("<img ")
    assert embedded >= 6 and len(seen["images"]) == embedded  # 2 rooflines, history, % of claim, 2 matmul
    undecoded = [i["alt"] for i in seen["images"] if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert undecoded == []


def test_the_browser_check_catches_a_broken_image_and_console_errors(built, tmp_path):
    """The check above can fail: a damaged embedded PNG does not decode; a script error is seen."""
    require_browser()
    text = built.read_text()
    page = tmp_path / "broken.html"
    start = text.index("base64,") + len("base64,")
    text = text[:start] + "AAAA" + text[start + 4:]  # the first PNG's signature overwritten
    page.write_text(text.replace("</body>", "<script>console.error('seen'); no_such_function();</script></body>"))
    seen = open_in_chromium(page)
    assert [i["width"] for i in seen["images"]].count(0) == 1
    assert any("seen" in p for p in seen["problems"]) and any("no_such_function" in p for p in seen["problems"])


def outcome_of(check) -> BaseException | None:
    """What a check raised, skip and fail included (pytest.raises would let a skip through as a skip)."""
    try:
        check()
    except BaseException as e:  # pytest's skip and fail are BaseExceptions
        return e
    return None


def test_missing_browser_skips_locally_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.delenv("CI", raising=False)
    local = outcome_of(require_browser)
    assert type(local) is pytest.skip.Exception and "apt-get install chromium" in str(local)
    monkeypatch.setenv("CI", "true")
    ci = outcome_of(require_browser)
    assert type(ci) is pytest.fail.Exception and "CI=true" in str(ci)
