"""The history page (pplgate/page): what it shows, decided in Python, and the page itself in a real browser."""

from __future__ import annotations

import json
import re

import pytest

from pplgate.history import accepted_levels, accuracy_history, judged
from pplgate.page import page_data, render, write_page
from pplgate.store import FolderStore
from saved import STEADY, accuracy, eventful, saved_run, with_accuracy, write_storage


def known_runs() -> list[dict]:
    """node-a: five steady nights, then three 25% longer (-20% tokens/s), the perplexity moving on the seventh, the
    runtime changing on the eighth; node-b: three nights, not enough for a verdict."""
    runs = []
    for i, seconds in enumerate([*STEADY, 0.625, 0.625, 0.625]):
        ppl = 1234.6 if i >= 6 else 1234.5
        ort = "1.32.0" if i == 7 else "1.31.1"
        runs.append(with_accuracy(saved_run(seconds, perplexity=ppl, onnxruntime=ort), accuracy(ppl, onnxruntime=ort)))
    for seconds in (0.40, 0.41, 0.40):
        run = saved_run(seconds, node="node-b")
        runs.append(with_accuracy(run, accuracy(1234.5)))
    return runs


@pytest.fixture
def store(tmp_path) -> FolderStore:
    folder = write_storage(tmp_path / "bench", known_runs())
    machine = next(p for p in folder.iterdir() if p.is_dir())
    (machine / "0012_abcdef01_20261127_000000.json").write_text('{"benchmarks": [')  # cut short: set aside
    return FolderStore(folder)


def data_of(store: FolderStore) -> dict:
    return page_data(judged(store), accuracy_history(store, accepted_levels(store.acceptances())), "bench", 0.1)


def test_the_morning_table_puts_what_needs_a_look_first_with_both_verdicts_and_what_changed(store):
    morning = data_of(store)["morning"]
    assert [(m["series"], m["look"]) for m in morning] == [
        ("tiny-cpu-fp32 on node-a", "look"),
        ("tiny-cpu-fp32 on node-b", "wait"),
    ]
    a = morning[0]
    assert (a["case"], a["device"], a["precision"], a["machine"]) == ("tiny", "cpu", "fp32", "node-a")
    assert a["accuracy"]["perplexity"] == 1234.6 and a["accuracy"]["expected"] == 1234.5
    assert a["accuracy"]["pct"] == pytest.approx(100 * (1234.6 / 1234.5 - 1))
    assert a["accuracy"]["moved"].startswith("+8.1e-05 from 1234.5 (run 0001) since run 0007")
    assert a["throughput"]["cell"] == "slower (-20.0% ± 1.2%) since run 0006"
    assert a["changed"] == ["onnxruntime 1.31.1 → 1.32.0"]
    assert morning[1]["throughput"]["cell"] == "baseline: 2 of 5"


def test_each_change_is_listed_once_newest_first_between_the_nights_it_happened(store):
    changes = data_of(store)["regressions"]
    assert [(c["kind"], c["series"], c["before"], c["run"], c["nights"], c["last"]) for c in changes] == [
        ("perplexity moved", "tiny-cpu-fp32 on node-a", "0006", "0007", 2, "0008"),
        ("slower", "tiny-cpu-fp32 on node-a", "0005", "0006", 3, "0008"),
    ]
    assert changes[1]["what"] == "tokens/s -20.0% ± 1.2%" and changes[1]["commits"] == "abcdef01 (the same)"


def test_runs_set_aside_are_named_with_their_reason(store):
    (aside,) = data_of(store)["set_aside"]
    assert aside["where"].endswith("0012_abcdef01_20261127_000000.json") and "not valid JSON" in aside["reason"]


def test_the_page_is_one_file_that_needs_no_network(store):
    text = render(data_of(store))
    assert not re.search(r"""(src|href)=["']?https?:""", text) and "<link" not in text
    payload = re.search(r'<script id="pplgate-data" type="application/json">(.*?)</script>', text, re.S)[1]
    assert json.loads(payload.replace("<\\/", "</"))["store"] == "bench"


def test_text_in_the_data_cannot_end_the_script(store):
    data = data_of(store)
    data["store"] = "</script><script>alert(1)</script>"
    text = render(data)
    assert text.count("</script>") == 3  # the data, uPlot and the page's own


@pytest.mark.e2e
def test_the_page_in_a_browser_shows_the_night_the_changes_and_details_on_hover(store, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page = tmp_path / "history.html"
    write_page(page, judged(store), accuracy_history(store, accepted_levels(store.acceptances())), "bench", 0.1)
    browser.get(page.as_uri())
    body = browser.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-charts") == "4"  # two a series: tokens/s and perplexity
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    rows = browser.find_elements(By.CSS_SELECTOR, "#morning tbody tr")
    assert [r.get_attribute("data-series") for r in rows] == ["tiny-cpu-fp32 on node-a", "tiny-cpu-fp32 on node-b"]
    first = rows[0].text
    assert "1234.6" in first and "+0.0081%" in first and "slower (-20.0% ± 1.2%) since run 0006" in first
    assert "onnxruntime 1.31.1 → 1.32.0" in first
    assert "baseline: 2 of 5" in rows[1].text
    changes = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#regressions li")]
    assert changes[1].startswith("slower tiny-cpu-fp32 on node-a, between run 0005 (2026-11-05 02:00) and run 0006")
    assert "held 3 nights, to run 0008" in changes[1]
    assert "0012_abcdef01" in browser.find_element(By.ID, "set-aside").text
    plot = browser.find_elements(By.CSS_SELECTOR, ".series .u-over")[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", plot)
    width = plot.size["width"]
    ActionChains(browser).move_to_element_with_offset(plot, width // 2 - 2, 0).perform()
    tip = browser.find_element(By.ID, "tooltip")
    assert tip.is_displayed()
    assert re.search(r"run 00\d\d · 2026-11-\d\d 02:00 · commit abcdef01 · machine node-a", tip.text), tip.text
    assert "runtime: onnxruntime 1.3" in tip.text and "settings: batch_size 1" in tip.text
    # Dragging across the tokens/s plot zooms both plots of the series into those nights.
    def x_range(i: int) -> list:
        return browser.execute_script(f"var x = window.pplgate.charts[{i}].scales.x; return [x.min, x.max];")

    whole = x_range(0)
    ActionChains(browser).move_to_element_with_offset(plot, -width // 4, 0).click_and_hold().move_by_offset(
        width // 4, 0
    ).release().perform()
    zoomed = x_range(0)
    assert whole[0] < zoomed[0] < zoomed[1] < whole[1] and x_range(1) == zoomed
    # The filters hide what does not match.
    browser.execute_script(
        "var s = document.getElementById('filter-machine'); s.value = 'node-b'; s.dispatchEvent(new Event('change'))"
    )
    assert [r.is_displayed() for r in browser.find_elements(By.CSS_SELECTOR, "#morning tbody tr")] == [False, True]
    shot = tmp_path / "history.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_series_are_grouped_by_case_device_precision_and_machine(tmp_path):
    store = FolderStore(write_storage(tmp_path / "bench", eventful(1)))
    data = page_data(judged(store), accuracy_history(store), "bench", 0.1)
    assert [s["id"] for s in data["series"]] == [
        "tiny-cpu-fp16 on node-a",
        "tiny-cpu-fp16 on node-b",
        "tiny-cpu-fp32 on node-a",
        "tiny-cpu-fp32 on node-b",
    ]
