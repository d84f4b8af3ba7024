"""Browser test: headless Chromium opens the dashboard, launches a run from the form and sees its
loss curve appear (live, over server-sent events) on the run page; then launches a (tiny) depth
transfer study from the studies page and waits for its drift table; then imports a CSV file
through the runs page's file picker.

Run against a live server: `bash .ci/with_server.sh python3 tests/browser/dashboard.py`
(needs Debian's chromium and chromium-driver, and `pip install selenium`).
Set SHAPEWISE_SCREENSHOT=path.png to keep a screenshot of the run page.
"""

import os
import re
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ.get("SHAPEWISE_URL", "http://127.0.0.1:8080")
# Live pages swap their chart and progress parts while they are read: look again.
LIVE = {"ignored_exceptions": [StaleElementReferenceException]}


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # The flags keep Chromium off the network this machine does not have.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1000"):
        options.add_argument(flag)
    # An explicit driver path keeps Selenium Manager from trying to download one.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


# A depth-transfer study small enough for CI: width 32, depths 1 and 2, three learning rates,
# one seed, ten steps per run.
TINY_STUDY = ('{"parameterizations": ["mup", "completep"], "width": 32, "depths": [1, 2], '
              '"lrs": [0.004, 0.016, 0.064], "tokens": 640, "d_head": 16, "context": 16, "batch": 4, '
              '"seeds": [0]}')


def csv_import(driver):
    """Imports two runs from a CSV file through the runs page's file picker."""
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("params,train_flops,loss\n6795600349.289497,9.99e18,3.1\n2979521172.2,9.2e18,3.2\n")
        path = f.name
    driver.get(URL + "/")
    driver.find_element(By.ID, "csv-file").send_keys(path)
    driver.find_element(By.ID, "csv-parameterization").send_keys("sp")
    driver.find_element(By.ID, "csv-tags").send_keys("browser-csv")
    driver.find_element(By.CSS_SELECTOR, "#csv-import button[type=submit]").click()
    result = WebDriverWait(driver, 15).until(
        lambda d: (lambda t: t if t.startswith(("Imported", "Refused", "Import failed")) else None)(
            d.find_element(By.ID, "csv-result").text))
    assert result.startswith("Imported 2 runs"), result
    driver.get(URL + "/?tag=browser-csv")
    rows = driver.find_elements(By.CSS_SELECTOR, "table tbody tr")
    assert len(rows) == 2, driver.page_source[:2000]
    os.unlink(path)
    print("browser: CSV import")


def depth_transfer_study(driver):
    driver.find_element(By.LINK_TEXT, "Studies").click()
    WebDriverWait(driver, 10).until(lambda d: d.current_url.endswith("/studies"))
    card = driver.find_element(By.ID, "card-depth-transfer").find_element(By.XPATH, "..")
    estimate = card.find_element(By.CSS_SELECTOR, "table.estimates").text
    assert "default" in estimate and ("min" in estimate or " h" in estimate), estimate
    card.find_element(By.TAG_NAME, "summary").click()
    card.find_element(By.ID, "name-depth-transfer").send_keys("browser study")
    card.find_element(By.ID, "settings-depth-transfer").send_keys(TINY_STUDY)
    card.find_element(By.XPATH, ".//button[starts-with(normalize-space(.), 'Launch')]").click()
    WebDriverWait(driver, 15).until(lambda d: re.search(r"/studies/\d+$", d.current_url))
    print("browser: study page", driver.current_url)
    # The page refreshes itself until every run has ended, then shows the drift table.
    WebDriverWait(driver, 120, poll_frequency=1, **LIVE).until(
        lambda d: "12 of 12 runs finished" in d.find_element(By.ID, "sweep-progress").text)
    results = WebDriverWait(driver, 30, poll_frequency=1, **LIVE).until(
        lambda d: (lambda t: t if "octaves per doubling" in t else None)(
            d.find_element(By.ID, "study-results").text))
    assert "mup" in results and "completep" in results, results
    print("browser: study results shown")


def sign_in(driver, token):
    """With auth on, pages redirect to the sign-in form; a token opens a session."""
    driver.get(URL + "/")
    WebDriverWait(driver, 10).until(lambda d: "/login" in d.current_url)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "token").submit()
    WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url)
    assert "Sign out" in driver.page_source, "signed in"
    print("browser: signed in")


def main():
    driver = browser()
    try:
        token = os.environ.get("SHAPEWISE_TOKEN")
        if token:
            sign_in(driver, token)
        driver.get(URL + "/")
        assert "shapewise" in driver.title.lower(), driver.title
        driver.find_element(By.LINK_TEXT, "New run").click()
        WebDriverWait(driver, 10).until(lambda d: d.current_url.endswith("/runs/new"))

        # Alpha applies only to the custom-alpha rule.
        rule = Select(driver.find_element(By.ID, "parameterization"))
        rule.select_by_value("alpha")
        assert driver.find_element(By.ID, "alpha").is_enabled()
        rule.select_by_value("completep")
        assert not driver.find_element(By.ID, "alpha").is_enabled()
        fields = {"width": "64", "depth": "2", "d_head": "32", "context": "32", "batch": "8",
                  "tokens": str(8 * 32 * 80), "lr": "0.01", "name": "browser test"}
        for name, value in fields.items():
            field = driver.find_element(By.ID, name)
            field.clear()
            field.send_keys(value)
        driver.find_element(By.ID, "width").submit()

        WebDriverWait(driver, 15).until(lambda d: re.search(r"/runs/\d+$", d.current_url))
        print("browser: run page", driver.current_url)

        def curve_drawn(d):
            svg = d.find_element(By.CSS_SELECTOR, "#chart svg").get_attribute("outerHTML")
            # A drawn series is a path or polyline with many coordinates.
            longest = max((len(m) for m in re.findall(r'(?:points|d)="([^"]*)"', svg)), default=0)
            return "no data yet" not in svg and longest > 100

        WebDriverWait(driver, 90, poll_frequency=0.5, **LIVE).until(curve_drawn)
        print("browser: loss curve drawn")
        WebDriverWait(driver, 90, poll_frequency=0.5, **LIVE).until(
            lambda d: d.find_element(By.ID, "run-status").text.strip() == "succeeded")
        print("browser: status succeeded")
        screenshot = os.environ.get("SHAPEWISE_SCREENSHOT")
        if screenshot:
            driver.save_screenshot(screenshot)
        depth_transfer_study(driver)
        csv_import(driver)
    except Exception:
        print("browser: FAILED on", driver.current_url, file=sys.stderr)
        print(driver.page_source[:3000], file=sys.stderr)
        raise
    finally:
        driver.quit()
    print("browser: OK")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"browser: done in {time.monotonic() - start:.1f} s")
