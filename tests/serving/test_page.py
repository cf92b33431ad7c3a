"""The chat page in a real headless Chromium: a typed message gets chat.py's streamed answer."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from lit_sft.chat import Chat, Sampling
from lit_sft.model import GPT
from lit_sft.prompts import prompt_style
from tests.helpers.tiny_gpt import tiny_model
from tests.serving.running import Probe, running_server, wait_until

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="chromium and chromium-driver are not installed (.ci/install-browser installs them)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MESSAGE = "What is the capital of France?"
# Records every text the last answer shows, so the test sees it grow (streamed, not at once).
WATCH_ANSWERS = """
window.shown = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('.answer');
  if (answers.length) window.shown.push(answers[answers.length - 1].textContent);
}).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def chat_py_answer(model: GPT, message: str, max_new_tokens: int) -> str:
    """What `python chat.py message=...` prints for `message` (greedy), without the newline."""
    chat = Chat(model, prompt_style("alpaca"), Sampling(max_new_tokens=max_new_tokens))
    return "".join(chat.answer(message))


def last_answer(driver: object) -> dict:
    return driver.execute_script(  # type: ignore[attr-defined]
        "const a = [...document.querySelectorAll('.answer')].pop();"
        "return {text: a.textContent, done: a.dataset.done, stopped: a.dataset.stopped || ''};"
    )


def send(driver: object, message: str, max_tokens: int) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "max-tokens")  # type: ignore[attr-defined]
    box.clear()
    box.send_keys(str(max_tokens))
    driver.find_element(By.ID, "message").send_keys(message)  # type: ignore[attr-defined]
    driver.find_element(By.ID, "send").click()  # type: ignore[attr-defined]


def test_the_page_streams_chat_py_answer_stops_and_clears(browser: object) -> None:
    from selenium.webdriver.common.by import By

    model = tiny_model()
    expected = chat_py_answer(model, MESSAGE, 40)
    probe = Probe(model, delay_s=0.01)
    with running_server(model) as server:
        browser.get(server.url + "/")  # type: ignore[attr-defined]
        browser.execute_script(WATCH_ANSWERS)  # type: ignore[attr-defined]
        send(browser, MESSAGE, 40)
        wait_until(lambda: last_answer(browser)["done"] == "true", timeout_s=60)
        assert last_answer(browser)["text"] == expected
        shown = browser.execute_script("return window.shown;")  # type: ignore[attr-defined]
        partial = {s for s in shown if s and s != expected}
        assert len(partial) >= 3 and all(expected.startswith(s) for s in partial)

        # Clear empties the page and the chat, so the next prompt holds no earlier turn.
        browser.find_element(By.ID, "clear").click()  # type: ignore[attr-defined]
        log = browser.find_element(By.ID, "log")  # type: ignore[attr-defined]
        assert log.get_attribute("textContent") == ""

        probe.delay_s = 0.1  # slow enough to stop half-way
        steps = len(probe.rows)
        send(browser, "Tell me a long story.", 80)
        wait_until(lambda: len(last_answer(browser)["text"]) > 0, timeout_s=60)
        browser.find_element(By.ID, "stop").click()  # type: ignore[attr-defined]
        wait_until(lambda: last_answer(browser)["done"] == "true")
        assert last_answer(browser)["stopped"] == "true"
        wait_until(lambda: server.engine.running == 0, timeout_s=10)  # its row left the batch
        assert len(probe.rows) - steps < 40  # stopped well before its 80 tokens
        errors = browser.find_elements(By.CSS_SELECTOR, ".error")  # type: ignore[attr-defined]
        assert errors == []
