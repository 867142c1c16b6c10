"""The demo page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`) through Selenium.

Serves demo/app.py's page (as `python demo/app.py` does, in a thread) on a free loopback port, uploads a bundled clip, moves the depth slider and checks that
the transcript and the timing appear and change with depth, runs "Compare all depths", and saves a screenshot
(to tmp_path; also to $DEMO_SCREENSHOT when set, which is how reports/demo_page/screenshot.png was made).
Skips, saying what is missing, without gradio, selenium, a Chromium binary or chromedriver.
"""

import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"
CLIP = ROOT / "demo" / "clips" / "and-unto-him.flac"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'gradio>=6,<7')")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")


def find_browser():
    for name in CHROMIUM_NAMES:
        if shutil.which(name):
            return shutil.which(name)
    return None


BROWSER = find_browser()
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    BROWSER is None or DRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver "
           "(apt-get install -y chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_app():
    """demo/app.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_app"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def app_url(tmp_path, monkeypatch):
    # Nothing may reach the network: Gradio's analytics and version check off, the Hub offline.
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = load_app()
    started = time.monotonic()
    page = app.build_ui(app.load_demo_model(app.default_model()))
    port = free_port()
    # The same launch settings as `python demo/app.py`, in a server thread of this process (saves importing torch
    # and gradio a second time).
    app.launch(page, "127.0.0.1", port, block=False)
    print(f"the demo served its page after {time.monotonic() - started:.1f} s")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = BROWSER
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1500",
                 # Everything but the app's loopback address resolves to nothing: a page that tried to fetch fonts
                 # or scripts from the internet would show it as missing content, not hang.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver, elem_id: str) -> str:
    return driver.find_element("css selector", f"#{elem_id} textarea").get_attribute("value") or ""


def wait_until(driver, condition, what: str, timeout_s: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda d: condition(d))
    except Exception as error:
        raise AssertionError(f"timed out waiting for {what}; transcript {text_of(driver, 'transcript')!r}, "
                             f"timing {text_of(driver, 'timing')!r}") from error


def test_upload_slider_compare_and_screenshot(app_url, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    started = time.monotonic()
    browser.get(app_url)
    wait_until(browser, lambda d: d.find_elements("css selector", "#audio input[type=file]"), "the upload input")

    # Upload at the initial (full) depth.
    browser.find_element("css selector", "#audio input[type=file]").send_keys(str(CLIP))
    wait_until(browser, lambda d: "depth 8 of 8" in text_of(d, "timing"), "the full-depth transcription")
    deep_text, deep_timing = text_of(browser, "transcript"), text_of(browser, "timing")
    assert deep_text == "AND UNTO HIM HATH HE GIVEN ALL THAT HE HATH"
    assert " ms" in deep_timing and "RTF" in deep_timing

    # Move the slider to the shallowest depth with the keyboard, as a user would.
    slider = browser.find_element("css selector", "#depth input[type=range]")
    slider.send_keys(Keys.HOME)
    wait_until(browser, lambda d: "depth 1 of 8" in text_of(d, "timing"), "the depth-1 transcription")
    shallow_text, shallow_timing = text_of(browser, "transcript"), text_of(browser, "timing")
    assert shallow_text and shallow_text != deep_text
    assert "(layers 1)" in shallow_timing and "(layers 1-8)" in deep_timing

    # A bundled clip from the dropdown brings its reference transcript, so the comparison gets a WER column.
    clip_input = browser.find_element("css selector", "#clip input")
    clip_input.click()
    clip_input.send_keys(CLIP.name, Keys.ENTER)
    wait_until(browser, lambda d: text_of(d, "reference") == deep_text, "the bundled clip's reference transcript")

    # Compare all depths: one row per depth, the deepest matching the single transcription.
    browser.find_element("css selector", "#compare").click()
    wait_until(browser, lambda d: d.find_elements("css selector", "#comparison [role=grid][aria-rowcount='9']"),
               "the all-depths table (a header and 8 rows)", timeout_s=60)
    table = browser.find_element("css selector", "#comparison").text
    assert shallow_text in table and deep_text in table and "RTF" in table and "WER %" in table

    # The whole page, for people (and the README).
    for target in [tmp_path / "demo_page.png"] + ([Path(os.environ["DEMO_SCREENSHOT"])]
                                                   if os.environ.get("DEMO_SCREENSHOT") else []):
        assert browser.save_screenshot(str(target)), f"could not save {target}"
        assert target.stat().st_size > 10_000
    print(f"browser part took {time.monotonic() - started:.1f} s")
