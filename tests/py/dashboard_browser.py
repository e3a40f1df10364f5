"""Drives Vigil's SOC dashboard in headless Chromium (Playwright, with
Debian's chromium): signs in with a token, waits for an anomaly to arrive
live (and the header to show the checkpoint's signature verified), opens
it, presses "False positive" and waits for the page to say the
feedback was recorded, then opens its agent's page and checks the activity
chart is drawn against a learnt baseline, and the hygiene findings page.
Screenshots go to SHOTS_DIR.
Prints the anomaly id.

Usage: dashboard_browser.py URL TOKEN SHOTS_DIR
"""
import base64
import hashlib
import os
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import sync_playwright

# The flags that work on a machine without a network (no background
# connections, no GPU).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def signed_note(name):
    """A C2SP signed note and its verifier key, whose base64 holds a '+'
    (the separator of the key's other parts)."""
    while True:
        key = Ed25519PrivateKey.generate()
        pub = key.public_key().public_bytes_raw()
        b64 = base64.b64encode(b"\x01" + pub).decode()
        if "+" in b64:
            break
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4]
    body = f"{name}\n5\n{base64.b64encode(os.urandom(32)).decode()}\n"
    sig = base64.b64encode(key_hash + key.sign(body.encode())).decode()
    return f"{body}\n\u2014 {name} {sig}\n", f"{name}+{key_hash.hex()}+{b64}"


def check_note_verification(page):
    """The page's checkpoint check: a good note verifies, a changed one
    does not."""
    note, vkey = signed_note("test.example/log")
    check = "([note, vkey]) => checkpointSigned(note, vkey)"
    if page.evaluate(check, [note, vkey]) is not True:
        raise SystemExit(f"a good signed note did not verify: {note!r} {vkey}")
    if page.evaluate(check, [note.replace("\n5\n", "\n6\n"), vkey]) is not False:
        raise SystemExit("a changed signed note verified")


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
        # The log's health, with the checkpoint's signature checked in the
        # browser against /v1/log-key.
        check_note_verification(page)
        try:
            page.wait_for_selector("#health:has-text('signature verified')", timeout=120_000)
        except Exception:
            raise SystemExit("the header says: " + page.inner_text("#health"))
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
        page.screenshot(path=f"{shots}/dashboard-agent.png")
        # Agent hygiene: the demo fleet's keys never expire.
        page.click("nav a[href='#/findings']")
        page.wait_for_selector("#findings tr.finding[data-kind='key_without_expiry']")
        page.screenshot(path=f"{shots}/dashboard-findings.png")
        browser.close()
    print(anomaly)


if __name__ == "__main__":
    main()
