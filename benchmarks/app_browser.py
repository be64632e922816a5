"""Drive app.py in headless Chromium (Selenium): what the end-to-end test does, and how the
README's screenshot of the app is made.

    python benchmarks/app_browser.py --checkpoint demo_data/run/generator.pt \
        --clip /work/shared/data/clips/bigbuckbunny.mp4 --key_frame 0 --out images/app.png

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``)
and ``selenium`` from PyPI. The app is started in this process on a free localhost port.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("chromedriver",)


def browser_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, or None where either is missing."""
    browser = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver = next((shutil.which(d) for d in CHROMEDRIVER if shutil.which(d)), None)
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_driver(download_dir: Path, width: int = 1280, height: int = 1500):
    """Headless Chromium that saves downloads into ``download_dir`` without asking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return chrome


def wait_for(chrome, condition, timeout: float = 60.0, what: str = "the page"):
    """``condition(chrome)`` until it is truthy; a toast with an error fails at once."""
    from selenium.webdriver.common.by import By

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        errors = [e.text for e in chrome.find_elements(By.CSS_SELECTOR, ".toast-body") if e.text.strip()]
        if errors:
            raise AssertionError(f"the app showed: {errors[0]}")
        value = condition(chrome)
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def text_of(chrome, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = chrome.find_elements(By.ID, elem_id)
    return found[0].text if found else ""


def open_shot(chrome, url: str, clip: Path) -> None:
    """Load the page and upload ``clip`` (a video or a zip of frames) into the Open box."""
    from selenium.webdriver.common.by import By

    chrome.get(url)
    upload = wait_for(chrome, lambda c: c.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
                      what="the upload box")
    upload[0].send_keys(str(clip))
    wait_for(chrome, lambda c: "frames" in text_of(c, "status") and "Shot" in text_of(c, "status"),
             what="the shot to open")


def outside_requests(chrome, url: str) -> list[str]:
    """What the page loaded from anywhere but the app (fonts, scripts, analytics)."""
    names = chrome.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith(url.rstrip("/"))]


def set_own_keyframe(chrome, index: int) -> None:
    """Click frame ``index`` in the filmstrip, then 'Use this frame's own colours'."""
    from selenium.webdriver.common.by import By

    thumbs = wait_for(chrome, lambda c: c.find_elements(By.CSS_SELECTOR, "#filmstrip .thumbnail-item"),
                      what="the filmstrip")
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'});", thumbs[index])
    thumbs[index].click()
    wait_for(chrome, lambda c: c.find_element(By.CSS_SELECTOR, "#frame input").get_attribute("value") == str(index),
             what=f"frame {index} to be picked")
    chrome.find_element(By.ID, "own_colours").click()
    wait_for(chrome, lambda c: f"Keyframes: {index} (" in text_of(c, "status"), what=f"keyframe {index}")


def colour_and_wait(chrome, timeout: float = 120.0) -> None:
    from selenium.webdriver.common.by import By

    chrome.find_element(By.ID, "colour").click()
    wait_for(chrome, lambda c: "Coloured" in text_of(c, "speed"), timeout, what="the colouring")


def download(chrome, elem_id: str, download_dir: Path, suffix: str, timeout: float = 30.0) -> Path:
    """Click the download link of a file output; -> the file the browser saved."""
    from selenium.webdriver.common.by import By

    link = wait_for(chrome, lambda c: c.find_elements(By.CSS_SELECTOR, f"#{elem_id} a[download]"),
                    what=f"the {elem_id} link")[0]
    link.click()
    return wait_for(chrome, lambda c: next((p for p in download_dir.glob(f"*{suffix}")), None), timeout,
                    what=f"the {suffix} download")


def screenshot(chrome, path: Path) -> None:
    """The whole page as a PNG, shrunk to keep the README light."""
    from PIL import Image

    for _ in range(3):  # the page grows as its lower parts lay out in a taller window
        height = chrome.execute_script("return document.documentElement.scrollHeight")
        chrome.set_window_size(1280, min(max(height + 120, 800), 2400))
        time.sleep(1.0)
    chrome.save_screenshot(str(path))
    with Image.open(path) as image:
        small = image.convert("RGB").resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
    small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(args) -> int:
    import tempfile

    import app

    if browser_paths() is None:
        raise SystemExit("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    port = free_port()
    app_args = app.build_parser().parse_args(["--checkpoint", args.checkpoint, "--port", str(port),
                                              "--device", args.device])
    with tempfile.TemporaryDirectory() as work:
        blocks, url = app.serve(app_args, Path(work))
        chrome = start_driver(Path(work))
        try:
            open_shot(chrome, url, Path(args.clip))
            set_own_keyframe(chrome, args.key_frame)
            colour_and_wait(chrome, timeout=600)
            slider = chrome.find_element("css selector", "#compare_slider input[type=number]")
            slider.clear()
            slider.send_keys(str(args.compare_frame), "\t")
            time.sleep(2.0)
            screenshot(chrome, Path(args.out))
        finally:
            chrome.quit()
            blocks.close()
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--clip", required=True, help="a video or a zip of frames")
    p.add_argument("--key_frame", type=int, default=0, help="the frame whose own colours become the keyframe")
    p.add_argument("--compare_frame", type=int, default=10, help="frame shown in the comparison")
    p.add_argument("--out", default="images/app.png")
    p.add_argument("--device", default="auto")
    return p


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
