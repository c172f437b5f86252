"""The search page in a real headless browser (Debian chromium + chromedriver via selenium): type a query, get
ranked moments, take a screenshot. Skips when chromium, chromedriver or selenium is absent.

MILNCE_SEARCH_INDEX=DIR uses an existing index (e.g. one built from the demo checkpoint) instead of the tiny one;
MILNCE_SCREENSHOT=PATH also saves the screenshot there (docs/search_screenshot.png for the README);
MILNCE_SEARCH_QUERY sets the typed query.
"""
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--window-size=1100,900", "--mute-audio",
         "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture
def browser():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def index_dir(tmp_path):
    given = os.environ.get("MILNCE_SEARCH_INDEX")
    if given:
        return Path(given)
    from api_fakes import save_lightning_checkpoint, tiny_module, write_video
    from milnce.api import load_model
    from milnce.search.extract import extract

    ckpt = save_lightning_checkpoint(tiny_module(), tmp_path / "model.ckpt")
    videos = [write_video(tmp_path / "v" / f"{c}.mp4", seconds=2.0, colour=rgb)
              for c, rgb in (("red", (220, 20, 20)), ("blue", (20, 20, 220)))]
    extract(load_model(ckpt), [str(v) for v in videos], tmp_path / "index", window=1.0, stride=1.0, progress=False)
    return tmp_path / "index"


def test_type_query_see_moments_screenshot(browser, index_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from milnce.search.server import Searcher, make_server, page_url, serve_in_thread

    server = make_server(Searcher(index_dir), port=0, k=8)
    serve_in_thread(server)
    try:
        browser.get(page_url(server))
        box = browser.find_element(By.ID, "query")
        query = os.environ.get("MILNCE_SEARCH_QUERY", "the red circle <b>spins</b>")
        box.send_keys(query)
        box.send_keys(Keys.RETURN)
        wait = WebDriverWait(browser, 60)
        wait.until(EC.presence_of_element_located((By.ID, "results")))
        cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
        assert len(cards) >= 1
        # the query comes back as text, never as markup
        assert browser.find_element(By.CSS_SELECTOR, "#summary .query").text == query
        assert browser.find_element(By.ID, "query").get_attribute("value") == query
        assert not browser.find_elements(By.CSS_SELECTOR, "#summary .query b")
        video = cards[0].find_element(By.TAG_NAME, "video")
        assert "#t=" in video.get_attribute("src")
        # every poster thumbnail loads (a real JPEG from the server)
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('video')).every(v => v.poster)"))
        loaded = browser.execute_script(
            "const urls = Array.from(document.querySelectorAll('video')).map(v => v.poster);"
            "return Promise.all(urls.map(u => new Promise(r => {const i = new Image(); i.onload = () => r(i.width);"
            " i.onerror = () => r(0); i.src = u;})));")
        assert all(w > 0 for w in loaded), loaded
        # the first moment plays from its start second (media fragment), served with byte ranges
        start, end = (float(t) for t in video.get_attribute("src").split("#t=")[1].split(","))
        browser.execute_script("const v = arguments[0]; v.muted = true; v.play().catch(e => v.dataset.err = e);",
                               video)
        wait.until(lambda d: d.execute_script("return arguments[0].currentTime", video) > start + 0.2
                   or d.execute_script("return arguments[0].error || arguments[0].dataset.err", video))
        assert not browser.execute_script("return arguments[0].error || arguments[0].dataset.err", video)
        assert start + 0.2 < browser.execute_script("return arguments[0].currentTime", video) <= end + 0.5
        shot = tmp_path / "search.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 1000
        out = os.environ.get("MILNCE_SCREENSHOT")
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, out)
    finally:
        server.shutdown()
        server.server_close()
