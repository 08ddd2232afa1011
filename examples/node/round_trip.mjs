// request -> confirm -> details -> refund through linepay-sidecar.
//
// No channel secret and no signing code: the sidecar at LINEPAY_SIDECAR_URL (default
// http://127.0.0.1:8080) adds LINE Pay's headers and signature. Node 18+ (global
// fetch), no packages. Prints one line per step, "<step>: <returnCode> <returnMessage>",
// and exits 1 as soon as a step does not answer 0000.

import { randomUUID } from "node:crypto";

const SIDECAR = (process.env.LINEPAY_SIDECAR_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");

// Above the sidecar's longest read timeout (capture: 60 s), so that a slow LINE Pay is
// reported by the sidecar, which says whether the call may have been processed.
const TIMEOUT_MS = 65_000;

// transactionId and refundTransactionId have 19 digits: JSON.parse would round them to
// the nearest double (2^53 is about 9.0e15) and the next confirm or refund would name a
// transaction that does not exist. The sidecar writes them as JSON strings when asked
// (this header on each call, or `response.ids_as_strings: true` in its config for every
// call), touching nothing else in LINE Pay's answer, so plain JSON.parse keeps every digit.
const EXACT_IDS = { "X-LinePay-Ids-As-Strings": "true" };

async function linepay(method, path, body) {
  const response = await fetch(SIDECAR + path, {
    method,
    headers: body === undefined ? EXACT_IDS : { ...EXACT_IDS, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await response.text();
  if (response.status !== 200) {
    // LINE Pay answers 200 even for business errors, so anything else is the sidecar's
    // own refusal: {"error": {"code": ..., "message": ..., "retry_safe": ...}}.
    console.error(`${method} ${path}: HTTP ${response.status} ${text}`);
    process.exit(1);
  }
  return JSON.parse(text);
}

function step(name, answer) {
  console.log(`${name}: ${answer.returnCode} ${answer.returnMessage}`);
  if (answer.returnCode !== "0000") process.exit(1);
  return answer.info;
}

const amount = 100;
const currency = "TWD";
const order = {
  amount,
  currency,
  orderId: `example-node-${randomUUID().slice(0, 12)}`,
  packages: [
    { id: "package-1", amount, products: [{ name: "Coffee", quantity: 1, price: amount }] },
  ],
  redirectUrls: {
    confirmUrl: "https://shop.example/linepay/confirm",
    cancelUrl: "https://shop.example/linepay/cancel",
  },
};
const info = step("request", await linepay("POST", "/v3/payments/request", order));
const transactionId = info.transactionId; // a string, every digit kept
if (typeof transactionId !== "string" || !/^\d{19}$/.test(transactionId)) {
  console.error(`request: transactionId ${JSON.stringify(transactionId)} is not a 19-digit string`);
  process.exit(1);
}
console.log(`  transactionId ${transactionId}, pay at ${info.paymentUrl.web}`);

// In a shop, this runs when LINE Pay redirects the buyer to confirmUrl.
step("confirm", await linepay("POST", `/v3/payments/${transactionId}/confirm`, { amount, currency }));

const details = step("details", await linepay("GET", `/v3/payments?transactionId=${transactionId}`));
if (details[0].transactionId !== transactionId) {
  console.error(`details: transactionId ${details[0].transactionId} != ${transactionId}`);
  process.exit(1);
}

const refund = step("refund", await linepay("POST", `/v3/payments/${transactionId}/refund`, { refundAmount: 40 }));
console.log(`  refundTransactionId ${refund.refundTransactionId}`);
