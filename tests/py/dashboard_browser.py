"""Drives Vigil's SOC dashboard in headless Chromium (Playwright, with
Debian's chromium): signs in with a token, waits for an anomaly to arrive
live, opens it, presses "False positive" and waits for the page to say the
feedback was recorded, then opens its agent's page and checks the activity
chart is drawn against a learnt baseline. Screenshots go to SHOTS_DIR.
Prints the anomaly id.

Usage: dashboard_browser.py URL TOKEN SHOTS_DIR
"""
import sys

from playwright.sync_api import sync_playwright

# The flags that work on a machine without a network (no background
# connections, no GPU).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main():
    url, token, shots = sys.argv[1:4]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("#signin-form")
        page.fill("#token", token)
        page.click("#signin-form button")
        page.wait_for_selector("#anomalies")
        row = page.wait_for_selector("tr.anomaly.live", timeout=240_000)
        page.screenshot(path=f"{shots}/dashboard-live.png")
        anomaly = row.get_attribute("data-id")
        # The list is drawn again on every live event: click through a
        # locator, which finds the row again if it was replaced.
        page.locator(f'tr.anomaly[data-id="{anomaly}"] td:nth-child(6)').click()
        page.wait_for_selector("#fp")
        page.click("#fp")
        page.wait_for_selector("text=feedback recorded: false_positive")
        page.screenshot(path=f"{shots}/dashboard-anomaly.png", full_page=True)
        page.locator(".kv a[href^='#/agent/']").first.click()
        chart = page.wait_for_selector("#activity")
        page.wait_for_selector("#baseline")
        hours = int(chart.get_attribute("data-hours"))
        marks = page.locator("#activity .slot b").count()
        if hours < 2 or marks != hours:
            raise SystemExit(f"agent page: {hours} hours drawn, {marks} with a baseline mark")
        page.screenshot(path=f"{shots}/dashboard-agent.png", full_page=True)
        browser.close()
    print(anomaly)


if __name__ == "__main__":
    main()
