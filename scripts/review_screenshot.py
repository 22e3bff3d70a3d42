"""Screenshot of a review page for docs/images/review.png (needs chromium, chromedriver, selenium).

    labelaudit scan sample_data/fashion_mnist_noisy/images --out /tmp/sample-run
    labelaudit review /tmp/sample-run
    python scripts/review_screenshot.py /tmp/sample-run/review/index.html docs/images/review.png

Opens the page in headless Chromium with a fresh profile, clicks the T cell holding the most
flagged samples, decides three of them (accept by key, remove by click, another class from
the list) and saves a 256-colour PNG of the window.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import WebDriverWait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path, help="review/index.html")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tempfile.mkdtemp()}",
        f"--window-size={args.width},{args.height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(args.index.resolve().as_uri())
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1"
        )
        cells = driver.find_elements("css selector", "table.matrix td:not(.diagonal) button")
        busiest = max(
            cells,
            key=lambda b: int(
                (b.find_elements("css selector", ".count") or [None])[0].text.strip("()")
                if b.find_elements("css selector", ".count")
                else 0
            ),
        )
        busiest.click()
        ActionChains(driver).send_keys("j").send_keys("a").perform()
        cards = driver.find_elements("css selector", "#grid .card")
        cards[1].find_element("css selector", "button[data-decision='remove']").click()
        cards[2].find_element("css selector", "button.pick").click()  # the card's class list
        options = cards[2].find_elements("css selector", ".picker button.pick-class")
        next(o for o in options if "(given)" not in o.text and "(suggested)" not in o.text).click()
        cards[3].find_element("css selector", ".meta").click()
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.5)  # thumbnails load lazily
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"{args.out}: {image.size[0]}x{image.size[1]}, {args.out.stat().st_size / 1000:.0f} KB")


if __name__ == "__main__":
    main()
