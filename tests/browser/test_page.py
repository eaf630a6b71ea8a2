"""The page, in a real headless Chromium, against the web backend and the real service.

What a person does: choose pictures with known shapes, wait for the boxes, read the
labels, move the threshold, untick a class, drop and paste pictures, and see the error
when the inference service goes away. Each count on the page is checked against the API
for the same picture and options. Screenshots go to out/browser/. Order matters: the last
test stops the inference server.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import SHOTS
from tests.support.servers import DEMO_MODEL_DIR, Server, start_server
from tests.support.web_app import WebApp, shapes_png, start_web

pytestmark = [pytest.mark.integration, pytest.mark.browser]

WAIT_S = 60


@pytest.fixture(scope="module")
def inference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("page-inference"), DEMO_MODEL_DIR)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(inference: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    app = start_web(inference.http_url, tmp_path_factory.mktemp("page-web"),
                    "--health-interval", "1")
    yield app
    app.stop()


def api(web: WebApp, picture: Path, threshold: float = 0.5,
        classes: list[str] | None = None) -> list[dict[str, Any]]:
    """The API's detections for one picture, as the page asks for them."""
    fields = {"score_threshold": f"{threshold:.2f}"}
    if classes is not None:
        fields["classes"] = ",".join(classes)
    r = httpx.post(f"{web.http_url}/api/detect", data=fields, timeout=60,
                   files=[("file", (picture.name, picture.read_bytes(), "image/png"))])
    assert r.status_code == 200, r.text
    detections: list[dict[str, Any]] = r.json()["results"][0]["detections"]
    return detections


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory, web: WebApp) -> list[Path]:
    """Three pictures of shapes; the first has more detections at 0.05 than at 0.5, so
    moving the threshold must change what the page draws."""
    folder = tmp_path_factory.mktemp("page-pictures")
    chosen: list[Path] = []
    for seed in range(40, 80):
        path = folder / f"shapes-{seed}.png"
        path.write_bytes(shapes_png(seed, objects=4))
        at_half, at_low = len(api(web, path, 0.5)), len(api(web, path, 0.05))
        if at_half >= 2 and (chosen or at_low > at_half):
            chosen.append(path)
        if len(chosen) == 3:
            return chosen
    raise AssertionError("no synthetic picture with the detections these tests need")


# ---- page helpers ----------------------------------------------------------------------
def wait_until(browser: Any, condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / "timeout.png"))
        raise AssertionError(f"{what}: not so after {timeout:.0f} s (out/browser/timeout.png)"
                             ) from None


def cards(browser: Any) -> dict[str, Any]:
    """The picture cards by file name."""
    return {card.find_element("css selector", ".filename").text: card
            for card in browser.find_elements("css selector", ".card")}


def all_done(browser: Any) -> bool:
    states = [c.get_attribute("data-state") for c in cards(browser).values()]
    return bool(states) and all(s == "done" for s in states)


def drawn(card: Any) -> int:
    return len(card.find_elements("css selector", "svg.overlay rect.box"))


def open_page(browser: Any, web: WebApp) -> None:
    browser.get(web.http_url)
    wait_until(browser, lambda b: b.find_element("id", "service").get_attribute("data-state")
               == "ready", "the service badge saying ready")


def choose(browser: Any, *paths: Path) -> None:
    browser.find_element("id", "file").send_keys("\n".join(str(p) for p in paths))


def set_threshold(browser: Any, key: str) -> None:
    """Moves the slider with the keyboard, as a person can (fires input and change)."""
    browser.find_element("id", "threshold").send_keys(key)


# ---- tests -----------------------------------------------------------------------------
def test_the_page_loads_from_the_backend_alone(browser: Any, web: WebApp) -> None:
    open_page(browser, web)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources, "the page loaded no script or style"
    assert all(name.startswith(web.http_url) for name in resources), resources  # no CDN
    assert browser.find_element("id", "service-text").text == \
        "inference service (detector, v2): ready"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_chosen_pictures_get_their_boxes_and_labels(browser: Any, web: WebApp,
                                                    pictures: list[Path]) -> None:
    open_page(browser, web)
    choose(browser, *pictures)
    wait_until(browser, lambda b: len(cards(b)) == 3 and all_done(b), "three pictures done")
    total = 0
    for path in pictures:
        card = cards(browser)[path.name]
        expected = api(web, path, 0.5)
        assert drawn(card) == len(expected) > 0, path.name
        assert card.get_attribute("data-count") == str(len(expected))
        labels = [tag.text for tag in card.find_elements("css selector", ".labels .label")]
        assert sorted(label.split()[0] for label in labels) == sorted(d["label"] for d in expected)
        first = card.find_element("css selector", ".labels .label")
        assert first.is_displayed()
        assert first.text == f"{expected[0]['label']} {expected[0]['score']:.2f}"
        counts = {li.get_attribute("data-label"): int(li.get_attribute("data-count"))
                  for li in card.find_elements("css selector", ".counts li")}
        assert counts == {label: [d["label"] for d in expected].count(label)
                          for label in {d["label"] for d in expected}}
        timing = card.find_element("css selector", ".timing").text
        assert timing.startswith("inference service ")
        assert "backend + network" in timing
        total += len(expected)
    summary = browser.find_element("id", "summary").text
    assert f"3 of 3 pictures done, {total} objects" in summary
    browser.save_screenshot(str(SHOTS / "boxes.png"))


def test_moving_the_threshold_asks_again_and_redraws(browser: Any, web: WebApp,
                                                     pictures: list[Path]) -> None:
    from selenium.webdriver.common.keys import Keys

    first = pictures[0]
    before = drawn(cards(browser)[first.name])
    set_threshold(browser, Keys.HOME)  # the slider's lowest value, 0.05
    assert browser.find_element("id", "threshold-value").text == "0.05"
    expected = {path.name: len(api(web, path, 0.05)) for path in pictures}
    assert expected[first.name] != before
    wait_until(browser, lambda b: all_done(b) and {name: drawn(card) for name, card
                                                   in cards(b).items()} == expected,
               "every picture redrawn at threshold 0.05")
    browser.save_screenshot(str(SHOTS / "threshold-0.05.png"))
    set_threshold(browser, Keys.END)  # 1.0: nothing scores above it
    wait_until(browser, lambda b: all_done(b) and all(drawn(c) == 0 for c in cards(b).values()),
               "no box left at threshold 1.0")
    for _ in range(10):
        set_threshold(browser, Keys.ARROW_LEFT)  # back to 0.5
    assert browser.find_element("id", "threshold-value").text == "0.50"
    wait_until(browser, lambda b: all_done(b) and {name: drawn(card) for name, card
                                                   in cards(b).items()}
               == {p.name: len(api(web, p, 0.5)) for p in pictures}, "back at 0.5")


def test_unticking_a_class_filters_it_out(browser: Any, web: WebApp,
                                          pictures: list[Path]) -> None:
    boxes = browser.find_elements("css selector", "#classes input[type=checkbox]")
    classes = [box.get_attribute("value") for box in boxes]
    assert len(classes) >= 2, classes
    dropped = classes[0]
    boxes[0].click()
    kept = [c for c in classes if c != dropped]
    expected = {p.name: len(api(web, p, 0.5, kept)) for p in pictures}
    wait_until(browser, lambda b: all_done(b) and {name: drawn(card) for name, card
                                                   in cards(b).items()} == expected,
               f"pictures redrawn without {dropped}")
    shown = {rect.get_attribute("data-label")
             for rect in browser.find_elements("css selector", "svg.overlay rect.box")}
    assert dropped not in shown
    boxes[0].click()
    wait_until(browser, lambda b: all_done(b) and {name: drawn(card) for name, card
                                                   in cards(b).items()}
               == {p.name: len(api(web, p, 0.5)) for p in pictures}, "every class back")


DISPATCH = """
const [kind, b64, name, done] = [arguments[0], arguments[1], arguments[2], arguments[3]];
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, {type: 'image/png'}));
const event = kind === 'drop'
  ? new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true})
  : new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true});
(kind === 'drop' ? document.getElementById('drop') : document.body).dispatchEvent(event);
done();
"""


@pytest.mark.parametrize("kind", ["drop", "paste"])
def test_dropped_and_pasted_pictures_are_detected(browser: Any, web: WebApp, kind: str,
                                                  tmp_path: Path) -> None:
    path = tmp_path / {"drop": "dropped.png", "paste": "pasted.png"}[kind]
    path.write_bytes(shapes_png(61))
    count = len(cards(browser))
    browser.execute_async_script(DISPATCH, kind, base64.b64encode(path.read_bytes()).decode(),
                                 path.name)
    wait_until(browser, lambda b: len(cards(b)) == count + 1 and all_done(b),
               f"the {path.stem} picture done")
    assert drawn(cards(browser)[path.name]) == len(api(web, path, 0.5))


def test_a_protected_api_asks_for_the_key_then_detects(
        browser: Any, web: WebApp, inference: Server, pictures: list[Path],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.common.keys import Keys

    folder = tmp_path_factory.mktemp("page-keyed")
    (folder / "key").write_text("page-key\n")
    keyed = start_web(inference.http_url, folder, "--api-key-file", str(folder / "key"),
                      "--protect-page-api", "--health-interval", "1")
    try:
        open_page(browser, keyed)
        assert not browser.find_element("id", "key-field").is_displayed()
        choose(browser, pictures[0])
        wait_until(browser, lambda b: any(c.get_attribute("data-state") == "error"
                                          for c in b.find_elements("css selector", ".card")),
                   "the picture refused without the key")
        card = cards(browser)[pictures[0].name]
        assert card.find_element("css selector", ".error").text.startswith(
            "this backend needs an API key")
        field = browser.find_element("id", "api-key")
        assert field.is_displayed()
        field.send_keys("page-key", Keys.TAB)  # a change event, as leaving the field fires
        r = httpx.post(f"{keyed.http_url}/api/detect", data={"score_threshold": "0.50",
                                                             "api_key": "page-key"},
                       files=[("file", (pictures[0].name, pictures[0].read_bytes()))],
                       timeout=60)
        expected = len(r.json()["results"][0]["detections"])
        wait_until(browser, lambda b: all_done(b)
                   and drawn(cards(b)[pictures[0].name]) == expected > 0,
                   "the picture detected once the key is typed")
    finally:
        keyed.stop()
        open_page(browser, web)  # back to the module's page for the last test


def test_the_error_shows_next_to_the_picture_when_the_service_stops(
        browser: Any, web: WebApp, inference: Server, pictures: list[Path]) -> None:
    """Runs last: stops the module's inference server."""
    assert inference.stop() == 0
    choose(browser, pictures[0])  # a new card for the same picture, after the stop
    wait_until(browser, lambda b: any(c.get_attribute("data-state") == "error"
                                      for c in b.find_elements("css selector", ".card")),
               "a picture showing the error")
    failed = [c for c in browser.find_elements("css selector", ".card")
              if c.get_attribute("data-state") == "error"][0]
    message = failed.find_element("css selector", ".error")
    assert message.is_displayed()
    assert message.text.startswith("the inference service cannot be reached")
    assert drawn(failed) == 0
    wait_until(browser, lambda b: b.find_element("id", "service").get_attribute("data-state")
               == "unreachable", "the badge saying unreachable", timeout=20)
    assert "unreachable" in browser.find_element("id", "service-text").text
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", failed)
    time.sleep(0.3)  # let the scroll settle for the picture
    browser.save_screenshot(str(SHOTS / "service-stopped.png"))
    assert httpx.get(f"{web.http_url}/healthz", timeout=5).status_code == 200
