"""The kiosk page in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's chromedriver,
with fake camera and microphone devices fed from the demo clip (y4m video, WAV audio); the test clicks Start, waits
until text, audio, vision and the fused estimate are all on the page, and saves a screenshot (its path is printed)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or \
    "/usr/bin/chromedriver"
OUTPUT = Path(__file__).resolve().parent / "output"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"),
    pytest.mark.skipif(importlib.util.find_spec("selenium") is None, reason="pip install selenium"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None,
                       reason="needs ffmpeg and espeak-ng for the demo clip (apt-get install ffmpeg espeak-ng)"),
]
pytest.importorskip("websockets", reason="pip install 'lfmim-edge[serve]'")
pytest.importorskip("pocketsphinx", reason="pip install pocketsphinx")


def test_the_kiosk_page_shows_all_three_modalities_in_chromium(starter_build, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By

    from edge.demo import make_demo_clip
    from edge.serve.app import BackgroundServer, Service
    from edge.serve.config import ServeConfig
    from edge.serve.resources import open_shared
    from edge.stream.config import RunConfig

    clip = make_demo_clip()
    y4m, wav = tmp_path / "demo.y4m", tmp_path / "demo.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-vf", "scale=320:240,fps=10",
                    "-pix_fmt", "yuv420p", str(y4m)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(clip), "-vn", "-ac", "1", "-ar", "48000",
                    "-c:a", "pcm_s16le", str(wav)], check=True)  # 48 kHz: the page's worklet resamples to 16 kHz
    run = RunConfig(engines=str(starter_build), threads=1)
    models = open_shared(run)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={y4m}",
                f"--use-file-for-fake-audio-capture={wav}", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        with BackgroundServer(Service(ServeConfig(port=0), run, models, None)) as server:
            driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
            try:
                driver.get(server.url + "/")
                assert driver.find_element(By.ID, "capturing").get_attribute("hidden") is not None
                driver.find_element(By.ID, "start").click()
                seen: dict[str, str] = {}
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    seen = {m: driver.find_element(By.ID, f"m-{m}").get_attribute("data-available")
                            for m in ("fused", "text", "audio", "vision")}
                    if all(v == "true" for v in seen.values()):
                        break
                    time.sleep(0.5)
                OUTPUT.mkdir(exist_ok=True)
                shot = OUTPUT / "serve-browser.png"
                driver.save_screenshot(str(shot))
                print(f"\nscreenshot of the kiosk page: {shot}")
                console = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert all(v == "true" for v in seen.values()), (seen, console)
                assert driver.find_element(By.ID, "capturing").get_attribute("hidden") is None  # the indicator
                assert driver.find_element(By.ID, "transcript").text not in ("", "-")
                assert int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-results")) > 0
                assert not console, console
                driver.find_element(By.ID, "stop").click()
                deadline = time.monotonic() + 20
                while server.service.sessions and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert not server.service.sessions, "Stop ends the session"
                assert driver.find_element(By.ID, "capturing").get_attribute("hidden") is not None
            finally:
                driver.quit()
    finally:
        models.close()
