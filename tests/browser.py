"""Open a page in headless Debian chromium (through playwright) and read back what a user sees.

Needs ``/usr/bin/chromium`` (``make browser`` installs it) and the ``playwright`` package (the
``dev`` extra); playwright never downloads a browser here. Without chromium a test using it
fails, unless ``DEEPSEG_SKIP_BROWSER=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def browser():
    """A playwright context manager; fails (or skips on DEEPSEG_SKIP_BROWSER=1) without chromium."""
    if not CHROMIUM.exists():
        if os.environ.get("DEEPSEG_SKIP_BROWSER") == "1":
            pytest.skip(f"{CHROMIUM} missing and DEEPSEG_SKIP_BROWSER=1")
        pytest.fail(f"{CHROMIUM} not found: `make browser` installs Debian's chromium (apt-get install chromium); "
                    f"set DEEPSEG_SKIP_BROWSER=1 to skip this test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) drives chromium")
    return sync_api.sync_playwright()


def view(path: str | Path, screenshot: Path, sections: list[str]) -> dict:
    """Load file `path`; return its console/page ``errors``, every image's ``alt`` and ``ok``
    (loaded, non-empty), and per id in `sections` its ``heading`` (first h2/h3), ``text`` and ``images``
    count. A full-page screenshot goes to `screenshot` (kept as a CI artefact)."""
    with browser() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(Path(path).as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))")
            found = {}
            for name in sections:
                section = page.locator(f"#{name}")
                found[name] = None if section.count() == 0 else {
                    "heading": section.locator("h2, h3").first.inner_text(), "text": section.inner_text(),
                    "images": section.locator("img").count()}
            scripts = page.locator("script").count()
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"report screenshot: {screenshot}")
        finally:
            chromium.close()
    return {"errors": errors, "images": images, "sections": found, "scripts": scripts}
