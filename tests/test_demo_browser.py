"""The demo page in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`) through Selenium.

Serves demo/app.py's page (as `python demo/app.py` does, in a thread) on a free loopback port, uploads a bundled
clip, moves the depth slider and checks that the transcript and the timing appear and change with depth, runs
"Compare all depths", and saves a screenshot (to tmp_path; also to $DEMO_SCREENSHOT when set, which is how
reports/demo_page/screenshot.png was made). The microphone tab is driven on a tiny chunk-aware model with Chromium's
fake microphone playing a bundled clip: the partial transcript grows, and moving the slider mid-stream changes the
depth of the chunks that follow. Skips, saying what is missing, without gradio, selenium, a Chromium binary or
chromedriver.
"""

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
from test_demo_app import load_app

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


def serve(tmp_path, monkeypatch, model: str):
    """Serve the page for `model` in a server thread; yields its address."""
    # Nothing may reach the network: Gradio's analytics and version check off, the Hub offline.
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = load_app()
    started = time.monotonic()
    page = app.build_ui(app.load_demo_model(model))
    port = free_port()
    # The same launch settings as `python demo/app.py`, in a server thread of this process (saves importing torch
    # and gradio a second time).
    app.launch(page, "127.0.0.1", port, block=False)
    print(f"the demo served its page after {time.monotonic() - started:.1f} s")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


def start_browser(tmp_path, *extra_flags):
    """Headless Chromium that reaches nothing but the loopback address; yields the driver."""
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
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", *extra_flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def app_url(tmp_path, monkeypatch):
    yield from serve(tmp_path, monkeypatch, load_app().default_model())


@pytest.fixture
def browser(tmp_path):
    yield from start_browser(tmp_path)


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


# The microphone tab.

@pytest.fixture
def streaming_app_url(tmp_path, monkeypatch):
    from test_cli_stream import save_streaming_folder

    yield from serve(tmp_path, monkeypatch, str(save_streaming_folder(tmp_path / "model", chunk_size=4)))


@pytest.fixture
def microphone_browser(tmp_path):
    """Chromium whose microphone plays the bundled clip (48 kHz 16-bit WAV, looped), permission granted."""
    import soundfile as sf

    from hf_prunable_ctc.data.audio import load_audio

    wav = tmp_path / "microphone.wav"
    sf.write(wav, load_audio(CLIP, 48000), 48000, subtype="PCM_16")
    yield from start_browser(tmp_path, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                             f"--use-file-for-fake-audio-capture={wav}")


def stream_state(driver):
    """(partial transcript, status line) of the microphone tab."""
    return tuple(driver.find_element("css selector", f"#{elem_id} textarea").get_attribute("value") or ""
                 for elem_id in ("stream-transcript", "stream-status"))


def wait_for_stream(driver, condition, what: str, timeout_s: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda d: condition(*stream_state(d)))
    except Exception as error:
        raise AssertionError(f"timed out waiting for {what}; the tab shows {stream_state(driver)}") from error


def chunks(status: str) -> int:
    return int(status.split(" chunks of ")[0].rsplit(" ", 1)[1]) if " chunks of " in status else 0


def test_microphone_stream_grows_and_follows_the_slider(streaming_app_url, microphone_browser):
    from selenium.webdriver.common.keys import Keys

    driver = microphone_browser
    driver.get(streaming_app_url)
    wait_until(driver, lambda d: [t for t in d.find_elements("css selector", "button[role=tab]")
                                  if "Stream" in t.text], "the microphone tab")
    next(t for t in driver.find_elements("css selector", "button[role=tab]") if "Stream" in t.text).click()
    wait_until(driver, lambda d: d.find_elements("css selector", "#microphone button.record-button"),
               "the record button")
    driver.find_element("css selector", "#microphone button.record-button").click()

    wait_for_stream(driver, lambda text, status: chunks(status) >= 3 and "depth 4 of 4" in status,
                    "three chunks at full depth")
    early_text, early_status = stream_state(driver)
    driver.find_element("css selector", "#stream-depth input[type=range]").send_keys(Keys.HOME)
    wait_for_stream(driver, lambda text, status: "last chunk: depth 1 of 4" in status
                    and chunks(status) >= chunks(early_status) + 3, "three more chunks at depth 1")
    late_text, late_status = stream_state(driver)
    assert late_text.startswith(early_text.rstrip()) and len(late_text) > len(early_text)

    driver.find_element("css selector", "#microphone button.stop-button").click()
    wait_for_stream(driver, lambda text, status: status.startswith("final"), "the final transcript")
    final_text, final_status = stream_state(driver)
    assert final_text.startswith(late_text.rstrip())
    runs = final_status.split("depth per chunk: ")[1].split(" · ")[0]
    assert runs.startswith("4×") and runs.endswith(tuple(f", 1×{n}" for n in range(3, 1000)))
