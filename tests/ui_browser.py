"""Headless Chromium for the web console's tests: a browser, and a Page that waits on conditions
(never sleeps) and saves a screenshot per state, named in assertion messages."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
    "--proxy-server=direct://",
    "--proxy-bypass-list=*",
    "--window-size=1280,1000",
]


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for 401s
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(options=options, service=Service(driver_path))


class Page:
    """One browser on the console: waits on conditions, saves a screenshot per state."""

    def __init__(self, shots: Path) -> None:
        self.driver = browser()
        self.shots = shots
        self.wait = WebDriverWait(self.driver, 120, poll_frequency=0.2)  # generous: 2 cores, many runs

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def shot(self, name: str) -> str:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return str(path)

    def until(self, what: str, check: Callable[[], Any]) -> None:
        try:
            self.wait.until(lambda d: check())
        except TimeoutException:
            path = self.shot(f"timeout-{what}")
            raise AssertionError(f"the page never showed {what}; see {path}") from None

    def view(self) -> str:
        view: str = self.js("return document.body.dataset.view")
        return view

    def text(self, selector: str) -> str:
        text: str = self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector
        )
        return text

    def rows(self, selector: str, attribute: str) -> list[str]:
        found: list[str] = self.js(
            "return [...document.querySelectorAll(arguments[0])].filter((r) => r.offsetParent !== null)"
            ".map((r) => r.getAttribute(arguments[1]))",
            selector,
            attribute,
        )
        return found

    def unauthorized(self) -> list[str]:
        """Console lines since the last call that tell of a refused request."""
        return [e["message"] for e in self.driver.get_log("browser") if "status of 401" in e["message"]]

    def type_into(self, selector: str, text: str) -> None:
        field = self.driver.find_element(By.CSS_SELECTOR, selector)
        field.clear()
        field.send_keys(text)

    def click(self, selector: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, selector).click()

    def quit(self) -> None:
        self.driver.quit()
