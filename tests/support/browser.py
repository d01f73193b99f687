"""Headless Chromium driven through chromedriver (Selenium), for tests of the web pages.

``Browser`` starts Debian's ``chromium`` with flags that work as root in a container, a fresh
profile each time, certificate errors ignored (the server's certificate is self-signed) and,
optionally, JavaScript turned off to test the no-script path.
"""

from __future__ import annotations

import shutil
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--ignore-certificate-errors", "--disable-dev-shm-usage", "--window-size=412,915")


def available() -> bool:
    """Whether Chromium and chromedriver are installed."""
    return bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))


class Browser:
    """One headless Chromium with its own profile; use as a context manager."""

    def __init__(self, javascript: bool = True):
        self.profile = tempfile.mkdtemp(prefix="cbs-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={self.profile}")
        if not javascript:
            opts.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(30)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Quit Chromium and delete its profile."""
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str) -> None:
        """Load a page and wait for it."""
        self.driver.get(url)

    def find(self, css: str):
        """The first element matching a CSS selector."""
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        """Every element matching a CSS selector."""
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def fill(self, fields: dict[str, str]) -> None:
        """Type into the inputs named by the keys, after clearing them."""
        for name, value in fields.items():
            el = self.find(f"form.callback [name='{name}']")
            el.clear()
            el.send_keys(value)

    def click_text(self, text: str, css: str = "a, button") -> None:
        """Click the link or button whose visible text is ``text``."""
        for el in self.find_all(css):
            if el.text.strip() == text:
                el.click()
                return
        raise AssertionError(f"no {css} reading {text!r}")

    def js(self, script: str, *args):
        """Run JavaScript in the page and return its value."""
        return self.driver.execute_script(script, *args)

    @property
    def url(self) -> str:
        """The address bar."""
        return self.driver.current_url

    def text(self, css: str = "body") -> str:
        """The visible text of an element."""
        return self.find(css).text

    def wait_for(self, check, timeout: float = 20.0, interval: float = 0.1, what: str = ""):
        """Call ``check()`` until it returns something true; tolerate pages being swapped."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
            except WebDriverException as e:  # the page reloaded under us: try again
                last = e
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what or check}; last error: {last}; "
                             f"url={self.url}")
