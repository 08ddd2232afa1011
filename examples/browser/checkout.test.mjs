// The shop's checkout in a real browser: Debian's chromium driven by playwright-core
// (no browser download: executablePath), against linepay-sidecar in front of the
// emulator started with --wait-for-buyer, so every payment waits on its payment page.
//
//   linepay-sidecar emulator --listen 127.0.0.1:9090 --wait-for-buyer &
//   linepay-sidecar --upstream-url http://127.0.0.1:9090 ... &      (docs/emulator.md)
//   LINEPAY_SIDECAR_URL=http://127.0.0.1:8080 npm test
//
// CHROMIUM overrides the browser's path (default /usr/bin/chromium).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startShop } from "./shop.mjs";

const SIDECAR = process.env.LINEPAY_SIDECAR_URL || "http://127.0.0.1:8080";
const run = `${process.pid}-${Date.now()}`; // orderIds are single use at LINE Pay

let shop, browser;

before(async () => {
  shop = await startShop(SIDECAR);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    // As root (CI containers) chromium needs --no-sandbox; the rest keep it off the
    // network it would otherwise call home to.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  shop?.server.close();
});

test("the buyer approves and the shop confirms", async () => {
  const page = await browser.newPage();
  await page.goto(`${shop.url}/checkout?order=pw-${run}-1`);
  // The emulator's payment page: the order, a method choice, Approve and Cancel.
  await page.getByRole("heading", { name: "Pay 300 TWD" }).waitFor();
  await page.getByLabel("Credit card").check();
  await page.getByRole("button", { name: "Approve payment" }).click();
  await page.waitForURL(`${shop.url}/confirm?**`);
  assert.match(await page.locator("#result").innerText(), /confirm 0000$/);
  await page.close();
});

test("the buyer cancels and lands on the shop's cancel page", async () => {
  const page = await browser.newPage();
  await page.goto(`${shop.url}/checkout?order=pw-${run}-2`);
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.waitForURL(`${shop.url}/cancel?**`);
  assert.match(await page.locator("#result").innerText(), /cancelled$/);
  await page.close();
});
