"""The manager UI in a real browser: headless Chromium drives the app served on 127.0.0.1.

Debian's ``chromium`` and ``chromium-driver`` packages are used as installed
(.ci/run installs them on a fresh CI machine); Selenium gets both paths, so its
Selenium Manager never looks for or downloads a driver. Without them the tests
are skipped with the reason.

Waits are explicit (a condition polled until it holds, with a generous limit for a
shared 2-core machine); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from copilot.settings import load_settings
from serve.api.app import create_app
from serve.service import CopilotService
from serve.ui.workshop import SAMPLE_OBJECTIONS
from tests.serve.live_server import live_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Wide enough that all five tabs show in the tab bar, not in an overflow menu.
    "--window-size=1400,1000",
)
PAGE_S = 60  # page loads and quick callbacks
MODEL_S = 600  # the first preview loads the embedder and the generator in the server

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="no /usr/bin/chromium and /usr/bin/chromedriver; install Debian's chromium and "
    "chromium-driver (`apt-get install -y chromium chromium-driver`, as .ci/run does)",
)


class Site:
    """The running app and the keys and records the tests use."""

    def __init__(self, service: CopilotService, url: str):
        self.service = service
        self.url = url
        self.manager_key = service.keys.create("manager", name="dana")
        self.rep_key = service.keys.create("rep", team="Central", name="rob")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("browser") / "data")
    service = CopilotService(settings)
    with live_server(create_app(service)) as url:
        yield Site(service, url)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[WebDriver]:
    # Depends on ``site`` so the browser closes first: an open page keeps gradio's event
    # stream open, and the server's shutdown would wait for it.
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait(driver: WebDriver, seconds: float = PAGE_S) -> WebDriverWait:
    return WebDriverWait(driver, seconds)


def sign_in(driver: WebDriver, site: Site, username: str, key: str) -> None:
    """Open /ui as a new visitor and submit gradio's login form."""
    driver.delete_all_cookies()
    driver.get(f"{site.url}/ui/")
    password = wait(driver).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "input[type=password]"))
    )
    driver.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys(username)
    password.send_keys(key)
    driver.find_element(By.XPATH, "//button[normalize-space()='Login']").click()


def open_tab(driver: WebDriver, name: str) -> None:
    tab = wait(driver).until(
        ec.element_to_be_clickable(
            (By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']")
        )
    )
    tab.click()
    wait(driver).until(lambda d: tab.get_attribute("aria-selected") == "true")


def text_of(driver: WebDriver, elem_id: str) -> str:
    return driver.find_element(By.ID, elem_id).text


def table_rows(driver: WebDriver, elem_id: str) -> list[list[str]]:
    """The body cells of a gradio Dataframe, as shown (its <table> only sizes the columns)."""
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} div[role=row]")
    return [
        [cell.text.strip() for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")]
        for row in rows
    ]


def type_into(driver: WebDriver, elem_id: str, text: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    field.clear()
    field.send_keys(text)


def test_a_rep_key_is_refused_in_the_browser(browser: WebDriver, site: Site) -> None:
    sign_in(browser, site, "rob", site.rep_key)
    wait(browser).until(
        ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "Incorrect Credentials")
    )
    # Still the login form, and none of the UI behind it.
    assert browser.find_elements(By.CSS_SELECTOR, "input[type=password]")
    assert not browser.find_elements(By.XPATH, "//button[@role='tab']")
    assert "manager or admin API key" in browser.find_element(By.TAG_NAME, "body").text


def test_a_manager_opens_every_tab(browser: WebDriver, site: Site) -> None:
    sign_in(browser, site, "dana", site.manager_key)
    for name, shows in [
        ("Calls", "Stored calls"),
        ("Objection playground", "Customer says"),
        ("Train", "Preview dataset"),
        ("Prompt workshop", "Chat uses the built-in prompt."),
        ("A/B dashboard", "Conversion over time"),
    ]:
        open_tab(browser, name)
        wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), shows))


@pytest.mark.slow
def test_save_a_version_and_preview_its_replies(browser: WebDriver, site: Site) -> None:
    sign_in(browser, site, "dana", site.manager_key)
    open_tab(browser, "Prompt workshop")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "workshop-active"), "Chat uses"))

    type_into(browser, "workshop-name", "续约")
    type_into(
        browser,
        "workshop-prompt",
        "You are a sales copilot. Reply in one short sentence, in the customer's language.",
    )
    browser.find_element(By.ID, "workshop-save").click()
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "workshop-versions"), "续约@1"))
    saved = site.service.prompts.get("续约@1")
    assert saved.author == "dana"  # the signed-in key's name
    assert saved.system_prompt.startswith("You are a sales copilot. Reply in one short sentence")

    browser.find_element(By.ID, "workshop-preview-run").click()
    wait(browser, MODEL_S).until(
        ec.text_to_be_present_in_element((By.ID, "workshop-preview-summary"), "Replies from")
    )
    assert "续约@1" in text_of(browser, "workshop-preview-summary")
    rows = table_rows(browser, "workshop-preview")
    assert [row[0] for row in rows] == list(SAMPLE_OBJECTIONS)
    for objection, reply in rows:
        assert reply and reply != "(no usable reply)" and reply != objection


def test_the_dashboard_shows_an_experiment_and_its_warning(browser: WebDriver, site: Site) -> None:
    service = site.service
    version = service.prompts.save("dashboard-test", "Be brief.", [], "dana")
    running = service.experiments.running()
    if running is not None:  # one runs at a time; this test makes its own
        service.experiments.stop(running.id)
    experiment = service.experiments.create(
        "price replies 价格",
        [
            {"name": "control", "adapter": "base"},
            {"name": "brief", "adapter": "base", "prompt_version": version.ref},
        ],
        created_by="dana",
    )
    for rep, variant in [("rep-a", "control"), ("rep-b", "brief"), ("rep-b", "brief")]:
        sid = service.decisions.record_suggestion(
            "objection",
            rep_id=rep,
            team="Central",
            account_id="acct-1",
            model="base",
            input_text="太贵了",
            proposed="年付更划算。",
            experiment_id=experiment.id,
            variant=variant,
        )
        service.decisions.record_feedback(sid, "accepted", by_rep=rep)

    sign_in(browser, site, "dana", site.manager_key)
    open_tab(browser, "A/B dashboard")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "ab-warnings"), "too little data"))
    description = text_of(browser, "ab-experiment")
    assert "price replies 价格" in description and experiment.id in description
    assert "brief" in description and version.ref in description
    warnings = text_of(browser, "ab-warnings")
    assert "Read before deciding" in warnings
    assert "too little data in variant 'control': 1 exposures (fewer than 100)" in warnings
    stats = table_rows(browser, "ab-stats")
    assert [row[0] for row in stats] == ["control (control)", "brief"]
    assert [row[3] for row in stats] == ["1", "2"]  # exposures
    assert [row[5] for row in stats] == ["100.0%", "100.0%"]  # conversion
