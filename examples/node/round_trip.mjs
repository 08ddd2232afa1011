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

// The next move after one of the sidecar's own error answers.
function whatToDo(error) {
  if (error.retry_safe) return "the call never reached LINE Pay: it is safe to send it again";
  switch (error.reconciled?.state) {
    case "applied":
      return "LINE Pay applied it (the answer was lost): record it as done, never send it again";
    case "not_applied":
      return "LINE Pay has no record of it: send it again with the same Idempotency-Key (the sidecar will not double it)";
    default:
      return "it may have been processed: read the payment details before doing anything";
  }
}

// One LINE Pay call through the sidecar: { answer, replayed, text }.
async function linepay(method, path, body, idempotencyKey) {
  const headers = body === undefined ? { ...EXACT_IDS } : { ...EXACT_IDS, "Content-Type": "application/json" };
  // Same key + same body later (a retry, a double click): the sidecar replays the
  // stored answer instead of calling LINE Pay twice. Never forwarded to LINE Pay.
  if (idempotencyKey !== undefined) headers["Idempotency-Key"] = idempotencyKey;
  const response = await fetch(SIDECAR + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const text = await response.text();
  if (response.status !== 200) {
    const code = response.headers.get("X-LinePay-Sidecar-Error");
    if (code === null) {
      // No marker: the HTTP error is LINE Pay's own.
      console.error(`${method} ${path}: LINE Pay answered HTTP ${response.status}: ${text}`);
      process.exit(1);
    }
    // The marker: the sidecar's own answer, {"error": {code, message, retry_safe,
    // reconciled?}}. LINE Pay's business errors come as 200 + returnCode.
    const error = JSON.parse(text).error ?? {};
    console.error(`${method} ${path}: sidecar ${code} (HTTP ${response.status}): ${error.message}`);
    console.error(`  -> ${whatToDo(error)}`);
    process.exit(1);
  }
  return {
    answer: JSON.parse(text),
    replayed: response.headers.get("Idempotent-Replayed") === "true",
    text,
  };
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
const info = step("request", (await linepay("POST", "/v3/payments/request", order)).answer);
const transactionId = info.transactionId; // a string, every digit kept
if (typeof transactionId !== "string" || !/^\d{19}$/.test(transactionId)) {
  console.error(`request: transactionId ${JSON.stringify(transactionId)} is not a 19-digit string`);
  process.exit(1);
}
console.log(`  transactionId ${transactionId}, pay at ${info.paymentUrl.web}`);

// In a shop, this runs when LINE Pay redirects the buyer to confirmUrl. The key is
// derived from the order, so a retried or doubled confirm can never confirm twice.
const confirm = await linepay("POST", `/v3/payments/${transactionId}/confirm`, { amount, currency },
  `${order.orderId}-confirm`);
step("confirm", confirm.answer);

const details = step("details",
  (await linepay("GET", `/v3/payments?transactionId=${transactionId}`)).answer);
if (details[0].transactionId !== transactionId) {
  console.error(`details: transactionId ${details[0].transactionId} != ${transactionId}`);
  process.exit(1);
}

const refundKey = `${order.orderId}-refund-1`;
const first = await linepay("POST", `/v3/payments/${transactionId}/refund`, { refundAmount: 40 }, refundKey);
const refund = step("refund", first.answer);
console.log(`  refundTransactionId ${refund.refundTransactionId}`);

// The same refund again (a retrying job): answered from the sidecar's journal.
const again = await linepay("POST", `/v3/payments/${transactionId}/refund`, { refundAmount: 40 }, refundKey);
if (!again.replayed || again.text !== first.text) {
  console.error("refund again: expected the stored answer, replayed");
  process.exit(1);
}
console.log("  refund again with the same Idempotency-Key: replayed from the sidecar's journal, LINE Pay not called");
