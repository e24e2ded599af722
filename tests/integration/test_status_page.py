"""The status page (/ui) in a real headless browser: Debian's chromium, driven by selenium.

The test installs ``chromium`` and ``chromium-driver`` with apt when they are missing (CI runs
as root and reaches Debian's mirrors) and fails, not skips, when it cannot. Chromium runs
headless with every name but the loopback unresolvable, so the page cannot reach the network;
selenium talks to chromedriver on 127.0.0.1. Selenium is synchronous: it runs in a thread
while the gateway and the fake neuron serve on this test's event loop.
"""

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from cortex_core.config import AuthOptions
from cortex_gateway.testing import FakeNeuron, fleet_config, running_gateway

pytestmark = pytest.mark.timeout(90)

CLIENT, ADMIN = "client-key", "admin-key"
PACKAGES = ("chromium", "chromium-driver")
RENDER_S = 10.0
"""Bound on the first render (the browser starting); the unload's own deadline is 2 s."""
REDRAWN = (StaleElementReferenceException,)
"""The page redraws its tables every second: an element found may be gone a moment later."""


def _wait(driver: WebDriver, seconds: float) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, seconds, poll_frequency=0.05, ignored_exceptions=REDRAWN)


def _click(driver: WebDriver, selector: str) -> None:
    def press(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    _wait(driver, RENDER_S).until(press)


def _install() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    if os.geteuid() != 0:
        pytest.fail(f"{' and '.join(PACKAGES)} are missing and only root may install them")
    quiet = ["env", "DEBIAN_FRONTEND=noninteractive"]
    for command in ([*quiet, "apt-get", "update"], [*quiet, "apt-get", "install", "-y", *PACKAGES]):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser, "apt installed no chromium"
    assert driver, "apt installed no chromedriver"
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver_path = _install()
    options = webdriver.ChromeOptions()
    options.binary_location = binary  # given both paths, Selenium Manager downloads nothing
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _log_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(url + "/ui")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    form = _wait(driver, RENDER_S).until(lambda d: d.find_element(By.ID, "login"))
    _wait(driver, RENDER_S).until(lambda d: form.is_displayed())
    driver.find_element(By.ID, "key").send_keys(key)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(driver, RENDER_S).until(lambda d: not form.is_displayed())


def _model_row(driver: WebDriver, model: str, node: str) -> str:
    return f'#models tr[data-model="{model}"][data-node="{node}"]'


def _admin_session(
    driver: webdriver.Chrome, url: str, shots: Path, status: Callable[[], str]
) -> list[str]:
    """``status``: the fake neuron's state of ``org/a`` (read from this thread: a plain read)."""
    _log_in(driver, url, ADMIN)
    wait = _wait(driver, RENDER_S)
    row = _model_row(driver, "org/a", "n1")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + " button[data-action=unload]"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#requests tbody tr"))
    # Read in one script: the cards are redrawn every second, between two commands too.
    nodes, bar = driver.execute_script(
        "return [[...document.querySelectorAll('.node')].map(n => n.dataset.node),"
        " document.querySelector('.node[data-node=n1] .bar .fill').style.width]"
    )
    assert nodes == ["n1", "n2"]
    assert bar == "4%"  # 1000 of 24000 MiB used
    assert driver.find_element(By.ID, "role").text == "admin key"
    rendered = shots / "status-page.png"
    assert driver.save_screenshot(str(rendered))
    assert rendered.stat().st_size > 0
    _click(driver, row + " button[data-action=unload]")
    _wait(driver, 2.0).until(
        lambda d: d.find_element(By.CSS_SELECTOR, row + " .state").text == "available"
    )
    assert status() == "available"
    unloaded = shots / "status-page-after-unload.png"
    assert driver.save_screenshot(str(unloaded))
    _click(driver, row + " button[data-action=load]")  # and back
    _wait(driver, RENDER_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, row + " .state").text == "loaded"
    )
    _click(driver, '.node[data-node="n2"] button[data-action=cordon]')
    _wait(driver, RENDER_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '.node[data-node="n2"] .badge.cordoned')
    )
    events = driver.find_element(By.CSS_SELECTOR, "#events tbody").text
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    # The one refusal expected: /ui/state before the key was given (a CSP or script error fails)
    assert [m for m in errors if "/ui/state" not in m or "status of 401" not in m] == []
    return [str(rendered), str(unloaded), events]


def _client_session(driver: WebDriver, url: str) -> int:
    _log_in(driver, url, CLIENT)
    _wait(driver, RENDER_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, _model_row(d, "org/a", "n1"))
    )
    assert driver.find_element(By.ID, "role").text == "read only"
    return len(driver.find_elements(By.CSS_SELECTOR, "button[data-action]"))


async def _chat(url: str, key: str) -> None:
    body = {"model": "org/a", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        assert r.status == 200
        await r.read()


async def test_an_admin_sees_the_fleet_and_unloads_a_model_from_the_page(browser, tmp_path):
    auth = AuthOptions(api_keys=(CLIENT,), admin_keys=(ADMIN,))
    async with (
        FakeNeuron(["org/a", "org/b"], loaded=["org/a"]) as n1,
        FakeNeuron(["org/b"], devices=2) as n2,
        running_gateway(fleet_config(n1, n2, auth=auth)) as gw,
    ):
        await _chat(gw.url, CLIENT)
        rendered, unloaded, events = await asyncio.to_thread(
            _admin_session, browser, gw.url, tmp_path, lambda: n1.models["org/a"].status
        )
        assert n1.models["org/a"].status == "loaded"  # unloaded, then loaded from the page
        assert [u.model_id for u in n1.unloads] == ["org/a"]
        assert [spec.model_id for spec in n1.loads] == ["org/a"]
    print(f"\nscreenshots: {rendered} {unloaded}")
    assert "unload" in events
    assert "admin" in events


async def test_a_client_key_sees_no_buttons(browser):
    auth = AuthOptions(api_keys=(CLIENT,), admin_keys=(ADMIN,))
    async with (
        FakeNeuron(["org/a", "org/b"], loaded=["org/a"]) as n1,
        running_gateway(fleet_config(n1, auth=auth)) as gw,
    ):
        buttons = await asyncio.to_thread(_client_session, browser, gw.url)
    assert buttons == 0
