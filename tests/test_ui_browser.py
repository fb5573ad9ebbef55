"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, `make tools`),
against a real gateway: upload a photo, wait for the overlay and the pose table, keep
screenshots under test-artifacts/ for a person to look at."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, gateway
from tests.images import astronaut, encode

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(it is in the dev extras: pip install -e '.[dev]')")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="no Chromium: install Debian's chromium and chromium-driver "
                              "(`make tools` does, as root with apt-get)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000", "--force-device-scale-factor=1",
                     # Chromium's own test camera (a moving pattern), allowed without asking.
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(argument)
    # The driver is Debian's; nothing is downloaded.
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "astronaut.jpg"
    path.write_bytes(encode(astronaut()))
    return path


# The table's rows of numbers, one a face (each face's expression is a line of its own).
FACE_ROWS = "#poses tbody tr:not(.expression)"


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 0
    return path


def wait_for_result(driver: webdriver.Chrome, timeout: float = 60) -> None:
    """Until the page shows a rendered overlay and the table, or an error."""
    def settled(d: webdriver.Chrome) -> bool:
        return bool(d.execute_script(
            "const img = document.getElementById('overlay');"
            "const status = document.getElementById('status');"
            "return status.classList.contains('error')"
            " || (img.complete && img.naturalWidth > 0"
            "     && !document.getElementById('overlay-figure').hidden"
            "     && document.querySelectorAll('#poses tbody tr').length > 0);"))
    try:
        WebDriverWait(driver, timeout).until(settled)
    except TimeoutException:
        screenshot(driver, "ui-timeout.png")
        raise


def upload(driver: webdriver.Chrome, photo: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(photo))
    wait_for_result(driver)


def status_text(driver: webdriver.Chrome) -> str:
    return str(driver.find_element(By.ID, "status").text)


def test_upload_shows_overlay_pose_table_and_json(browser: webdriver.Chrome, photo: Path,
                                                  server_url: str) -> None:
    browser.set_window_size(1280, 1000)
    browser.get(f"{server_url}/")
    assert browser.title == "facepose"
    # Every control has a label a screen reader can read.
    unlabelled = browser.execute_script(
        "return [...document.querySelectorAll('input, select')]"
        ".filter(e => e.labels.length === 0).map(e => e.id);")
    assert unlabelled == []
    upload(browser, photo)
    assert "1 face" in status_text(browser), status_text(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, FACE_ROWS)
    assert len(rows) == 1
    (expression,) = browser.find_elements(By.CSS_SELECTOR, "#poses tbody tr.expression")
    assert expression.text.startswith("Expression: mouthSmile"), expression.text
    cells = [cell.text for cell in rows[0].find_elements(By.CSS_SELECTOR, "th, td")]
    yaw, pitch, roll = (float(text) for text in cells[2:5])
    assert abs(yaw) < 20 and abs(pitch) < 25 and abs(roll) < 15
    assert cells[5].startswith("±") and 0 < float(cells[5][1:]) < 10  # uncertainty
    assert cells[7].endswith("of 468")
    size = browser.execute_script(
        "const img = document.getElementById('overlay');"
        "return [img.naturalWidth, img.naturalHeight];")
    assert size == [512, 512]
    raw = browser.execute_script("return document.getElementById('json').textContent;")
    assert '"faces"' in raw and '"euler_deg"' in raw
    screenshot(browser, "ui-desktop.png")


def test_phone_width_and_keyboard(browser: webdriver.Chrome, photo: Path,
                                  server_url: str) -> None:
    # A phone's viewport (a desktop window cannot be made this narrow).
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    browser.get(f"{server_url}/")
    upload(browser, photo)
    assert len(browser.find_elements(By.CSS_SELECTOR, FACE_ROWS)) == 1
    # Nothing wider than the phone: no sideways scrolling of the page.
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    assert overflow <= 1
    # The table's caption is read whole at that width, not cut off by its sideways scroll.
    caption_right = browser.execute_script(
        "return document.getElementById('poses-caption').getBoundingClientRect().right;")
    assert caption_right <= 390
    # The controls are reachable with Tab, in order, each with a visible focus outline.
    browser.execute_script("document.activeElement.blur();")
    reached = {}
    for _ in range(12):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        reached[browser.execute_script("return document.activeElement.id;")] = (
            browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle;"))
    for control in ("file", "camera-start", "run"):
        assert control in reached, reached
        assert reached[control] not in ("", "none"), (control, reached[control])
    browser.execute_script("window.scrollTo(0, 0);")
    screenshot(browser, "ui-phone.png")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_webcam_picture_goes_through_the_api(browser: webdriver.Chrome,
                                            server_url: str) -> None:
    browser.set_window_size(1280, 1000)
    browser.get(f"{server_url}/")  # loopback is a secure context: getUserMedia is offered
    browser.find_element(By.ID, "camera-start").click()
    capture = browser.find_element(By.ID, "camera-capture")
    WebDriverWait(browser, 30).until(lambda d: capture.is_displayed() and d.execute_script(
        "return document.getElementById('video').videoWidth > 0;"))
    capture.click()
    # The test pattern has no face: the answer is an overlay without drawings and no rows.
    WebDriverWait(browser, 60).until(lambda d: status_text(d) not in ("", "Working…"))
    assert status_text(browser) == "Done: 0 faces found.", status_text(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "#poses tbody tr") == []
    browser.find_element(By.ID, "camera-stop").click()
    assert not browser.find_element(By.ID, "video").is_displayed()


def test_page_loads_with_api_keys_and_sends_the_key(browser: webdriver.Chrome,
                                                    photo: Path) -> None:
    with gateway({"FACEPOSE_API_KEYS": "ui-test-key"},
                 headers={"X-API-Key": "ui-test-key"}) as url:
        browser.set_window_size(1280, 1000)
        browser.get(f"{url}/")
        assert browser.title == "facepose"
        # The stylesheet and the script came through without a key.
        assert browser.execute_script(
            "return getComputedStyle(document.body).margin === '0px'"
            " && document.documentElement.dataset.ready === 'true';")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 60).until(
            lambda d: "unauthorized" in status_text(d))
        # The page opened its options and put the focus on the key field.
        assert browser.switch_to.active_element.get_attribute("id") == "api-key"
        browser.find_element(By.ID, "api-key").send_keys("ui-test-key")
        browser.find_element(By.ID, "run").click()
        wait_for_result(browser)
        assert "1 face" in status_text(browser), status_text(browser)
        screenshot(browser, "ui-api-key.png")


def test_the_api_docs_render_from_the_gateway_alone(browser: webdriver.Chrome,
                                                    server_url: str) -> None:
    """/docs loads Swagger UI's script and styles from the gateway (none from elsewhere) and
    shows the routes."""
    browser.get(f"{server_url}/docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    sources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);")
    assert sources and all(name.startswith(server_url) for name in sources), sources
    paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/v1/faces" in paths


def test_a_failed_upload_clears_the_previous_result(browser: webdriver.Chrome, photo: Path,
                                                    server_url: str,
                                                    tmp_path: Path) -> None:
    browser.set_window_size(1280, 1000)
    browser.get(f"{server_url}/")
    upload(browser, photo)
    assert len(browser.find_elements(By.CSS_SELECTOR, FACE_ROWS)) == 1
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo.read_bytes()[:2000])
    browser.find_element(By.ID, "file").send_keys(str(truncated))
    # Until the error shows (the previous result would satisfy wait_for_result at once).
    WebDriverWait(browser, 60).until(lambda d: "error" in (
        d.find_element(By.ID, "status").get_attribute("class") or ""))
    assert browser.find_elements(By.CSS_SELECTOR, "#poses tbody tr") == []
    assert not browser.find_element(By.ID, "overlay-figure").is_displayed()
    assert browser.find_element(By.ID, "json").text == ""


def test_the_table_fits_and_a_refused_option_is_said(browser: webdriver.Chrome, photo: Path,
                                                     server_url: str) -> None:
    browser.set_window_size(1280, 1000)
    browser.get(f"{server_url}/")
    # Before any upload: the table's header is not clipped.
    overflow = browser.execute_script(
        "const wrap = document.querySelector('.table-wrap');"
        "return wrap.scrollWidth - wrap.clientWidth;")
    assert overflow <= 0, overflow
    browser.find_element(By.CSS_SELECTOR, "#options summary").click()
    browser.find_element(By.ID, "fx").send_keys("-5")
    browser.find_element(By.ID, "file").send_keys(str(photo))
    WebDriverWait(browser, 60).until(lambda d: "error" in (
        d.find_element(By.ID, "status").get_attribute("class") or ""))
    caption = browser.find_element(By.ID, "poses-caption").text
    assert "fx" in caption and "could not be read" not in caption, caption
    # The browser's own request for the icon finds one.
    icon = browser.execute_script(
        "return fetch('/favicon.ico').then(r => [r.status, r.headers.get('content-type')]);")
    assert icon[0] == 200 and icon[1].startswith("image/"), icon
