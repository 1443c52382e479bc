"""``midefend review`` end to end in a real headless Chromium (Selenium + the system chromedriver).

A person's session on the synthetic run (tests/review_fixtures.py): answer by clicking and by
keyboard, reload mid-way and resume, then check ``human.json`` and the verdict (accuracy, its
Wilson interval, the judges' agreement) against values computed by hand. Skips, with the reason,
only when no Chromium/chromedriver is installed (``.ci/run`` installs them from Debian).

``MIDEFEND_REVIEW_SCREENSHOT=docs/review.png`` also saves a screenshot of the page there
(that is how docs/review.png is made).
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from midefend.review.server import make_server
from midefend.review.session import ReviewOptions, open_review
from midefend.review.store import load_review, review_path
from midefend.review.verdict import human_verdict
from tests.review_fixtures import FACENET_PRED, LABELS, make_run

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)",
)

# The person's answers by trial number: the true slot, a wrong slot, or "none".
PLAN = ["right", "right", "wrong", "right", "none", "right", "wrong", "right", "none", "right"]


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    (tmp_path / "downloads").mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"), "download.prompt_for_download": False})
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,760", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def served(tmp_path):
    run = make_run(tmp_path)
    srv = make_server(open_review(run, ReviewOptions(trials=10, k=4, seed=0)), port=0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield run, srv
    srv.shutdown()
    srv.server_close()


def _shown_trial(driver, expect: int) -> int:
    """Wait until trial ``expect`` (0-based) is on screen with its images loaded; return its number."""
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "number").text == f"{expect + 1} / 10")
    WebDriverWait(driver, 15).until(lambda d: d.execute_script(
        "return Array.from(document.images).every(function (i) { return i.complete && i.naturalWidth > 0; })"))
    return expect


def _slot(trial, plan: str) -> int | None:
    true_slot = trial.candidates.index(trial.label)
    return {"right": true_slot, "wrong": (true_slot + 1) % 4, "none": None}[plan]


def _answer(driver, trial, plan: str, *, by_click: bool) -> None:
    slot = _slot(trial, plan)
    if by_click:
        target = driver.find_element(By.ID, "none") if slot is None else driver.find_element(By.CSS_SELECTOR, f'#candidates .candidate[data-slot="{slot}"]')
        target.click()
    else:
        key = "0" if slot is None else str(slot + 1)
        driver.find_element(By.TAG_NAME, "body").send_keys(key)


def test_review_in_a_browser(served, browser, tmp_path):
    run, srv = served
    trials = load_review(review_path(run)).trials  # the truth: on disk, never sent to the page
    browser.get(srv.url)
    WebDriverWait(browser, 15).until(lambda d: "private training images" in d.find_element(By.ID, "notice").text)
    for n in range(5):  # trials 1-3 by click, 4-5 by keyboard
        _shown_trial(browser, n)
        if n == 0:
            # the page's markup without the image URLs (random tokens, which may spell anything)
            dom = browser.execute_script(
                "var c = document.documentElement.cloneNode(true); c.querySelectorAll('img').forEach(function (i) { i.removeAttribute('src'); });"
                "return c.outerHTML;")
            assert "data-slot" in dom
            for leak in ("class", "label", "c0", "c1", "c2", "c3", "c4", "correct", "ppa", "true"):
                assert leak not in dom.lower().replace('class="', "").replace("aria-label", ""), leak
            urls = browser.execute_script("return Array.from(document.images).map(function (i) { return i.src; })")
            assert len(urls) == 1 + 4 * 3 and all("/img/" in u for u in urls)
            assert browser.execute_script("return Object.keys(window).filter(function (k) { return /answer|truth|label/i.test(k); })") == []
            shot = os.environ.get("MIDEFEND_REVIEW_SCREENSHOT")
            browser.save_screenshot(str(tmp_path / "review.png"))
            if shot:
                browser.save_screenshot(shot)
        _answer(browser, trials[n], PLAN[n], by_click=n < 3)
    _shown_trial(browser, 5)
    assert browser.find_element(By.ID, "count").text == "5 of 10 answered"
    assert len(load_review(review_path(run)).answers) == 5  # saved as given

    browser.refresh()  # close and come back: resume at the first open trial
    _shown_trial(browser, 5)
    assert browser.find_element(By.ID, "count").text == "5 of 10 answered"
    assert browser.find_element(By.ID, "bar").get_attribute("style").replace(" ", "") == "width:50%;"
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("\ue012")  # left arrow: back to trial 5, its answer shown
    _shown_trial(browser, 4)
    assert browser.find_element(By.ID, "none").get_attribute("class").split() == ["none", "chosen"]
    body.send_keys("\ue014")  # right arrow
    _shown_trial(browser, 5)
    for n in range(5, 10):
        _shown_trial(browser, n)
        _answer(browser, trials[n], PLAN[n], by_click=n % 2 == 0)
    WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "done").is_displayed())
    assert browser.find_element(By.ID, "count").text == "10 of 10 answered"

    stored = load_review(review_path(run))
    assert [stored.answers[t.id].slot for t in trials] == [_slot(t, p) for t, p in zip(trials, PLAN)]
    # By hand: 6 right of 10, chance 1/4; Wilson 95 % for 6/10 (scipy binomtest ... method="wilson").
    verdict = human_verdict(run)["attacks"]["ppa"]
    assert (verdict["n"], verdict["correct"], verdict["accuracy"], verdict["chance"]) == (10, 6, 0.6, 0.25)
    assert verdict["ci95"] == pytest.approx((0.3126737697336583, 0.8318196702937639), abs=1e-12)
    assert verdict["above_chance"] is True and verdict["none_of_these"] == 2
    # The evaluation model is always right: it agrees on the 6 the person got, 4 of its hits unconfirmed.
    ev = verdict["judges"]["eval"]
    assert (ev["agreement"], ev["judge_hits"], ev["judge_hits_not_confirmed"]) == (0.6, 10, 4)
    # FaceNet is right on even reconstruction indices only.
    right = [p == "right" for p in PLAN]
    face_hits = [FACENET_PRED[t.index] == LABELS[t.index] for t in trials]
    assert face_hits == [t.index % 2 == 0 for t in trials]
    fn = verdict["judges"]["facenet"]
    assert fn["agreement"] == sum(h == r for h, r in zip(face_hits, right)) / 10
    # By hand for seed 0: trials show reconstructions 9,1,2,6,8,4,5,3,0,7; FaceNet hits trials 3-6 and 9 (1-based),
    # the person is right on 1,2,4,6,8,10: they agree on trials 4, 6, 7 only; FaceNet's hits 3, 5, 9 are unconfirmed.
    assert [t.index for t in trials] == [9, 1, 2, 6, 8, 4, 5, 3, 0, 7]
    assert (fn["agreement"], fn["judge_hits"], fn["judge_hits_not_confirmed"]) == (0.3, 5, 3)
    assert fn["judge_hits_not_confirmed"] == sum(h and not r for h, r in zip(face_hits, right))


def test_exported_page_offline_and_import(tmp_path, browser):
    """The self-contained page works from a file (no server), and its downloaded answers import into the run."""
    import time

    from tests.reliability_fixtures import invoke

    run = make_run(tmp_path / "ws")
    page = tmp_path / "page.html"
    assert invoke("review", str(run), "--export", str(page), "--trials", "3", "--reviewer", "mail").exit_code == 0
    trials = load_review(review_path(run, "mail")).trials
    browser.get(page.as_uri())
    plan = ["right", "none", "wrong"]
    for n in range(3):
        WebDriverWait(browser, 15).until(lambda d, n=n: d.find_element(By.ID, "number").text == f"{n + 1} / 3")
        _answer(browser, trials[n], plan[n], by_click=False)
    WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "done").is_displayed())
    browser.find_element(By.ID, "download").click()
    deadline = time.monotonic() + 20
    while not list((tmp_path / "downloads").glob("answers-*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    (answers,) = (tmp_path / "downloads").glob("answers-*.json")
    result = invoke("review", str(run), "--import", str(answers), "--reviewer", "mail")
    assert result.exit_code == 0, result.output
    stored = load_review(review_path(run, "mail"))
    assert [stored.answers[t.id].slot for t in trials] == [_slot(t, p) for t, p in zip(trials, plan)]
    assert human_verdict(run)["attacks"]["ppa"]["correct"] == 1
