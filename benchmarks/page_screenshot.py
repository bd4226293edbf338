"""A screenshot of a history page in headless Chromium, as README's picture is made.

    .venv/bin/python -m pplgate history --storage .benchmarks --html /tmp/history.html
    .venv/bin/python benchmarks/page_screenshot.py /tmp/history.html docs/history-page.png

README's picture: seven nights of the tiny case on this machine
(``pytest tests -k "tiny and cpu and not tf32" --gate-sources=../shared/data
--benchmark-autosave``, seven times), then the two commands above.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path, help="the page pplgate history --html wrote")
    parser.add_argument("png", type=Path, help="where the screenshot goes")
    parser.add_argument("--size", default="1400,1500", help="the window, in pixels (default: %(default)s)")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={args.size}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(args.page.resolve().as_uri())
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.drawn"))
        browser.save_screenshot(str(args.png))
    finally:
        browser.quit()
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
