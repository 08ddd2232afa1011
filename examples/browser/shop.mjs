// A shop's checkout in a few lines of node:http, the way a real shop's pages work with
// LINE Pay online payments, through linepay-sidecar (no secret, no signing code here):
//
//   GET /checkout?order=ID  -> POST /v3/payments/request, then 303 to info.paymentUrl.web
//   GET /confirm?transactionId=..&orderId=..  (LINE Pay sends the buyer back here)
//                           -> POST /v3/payments/{transactionId}/confirm, shows the result
//   GET /cancel?order=ID    (the buyer cancelled on LINE Pay's page)
//
// Against the emulator, paymentUrl.web is the emulator's own payment page.

import http from "node:http";

const AMOUNT = 300;
// Ask the sidecar for 19-digit ids as JSON strings: JSON.parse would round numbers.
const EXACT_IDS = { "X-LinePay-Ids-As-Strings": "true" };

async function linepay(sidecar, path, body) {
  const response = await fetch(sidecar + path, {
    method: "POST",
    headers: { ...EXACT_IDS, "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(65_000),
  });
  return JSON.parse(await response.text());
}

function page(res, status, body, headers = {}) {
  res.writeHead(status, { "Content-Type": "text/html; charset=utf-8", ...headers });
  res.end(`<!doctype html><html lang="en"><title>Shop</title><body>${body}</body></html>`);
}

// Only digits, letters and - _ in the ids this shop makes and echoes.
const plain = (text) => String(text ?? "").replace(/[^0-9A-Za-z_-]/g, "");

// Starts the shop on 127.0.0.1 (port 0: any free one); resolves to its base URL and
// the server (close it when done).
export function startShop(sidecarUrl, port = 0) {
  const sidecar = sidecarUrl.replace(/\/+$/, "");
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://shop");
    const base = `http://${req.headers.host}`;
    try {
      if (url.pathname === "/checkout") {
        const order = plain(url.searchParams.get("order"));
        const answer = await linepay(sidecar, "/v3/payments/request", {
          amount: AMOUNT,
          currency: "TWD",
          orderId: order,
          packages: [{ id: "basket", amount: AMOUNT, name: "Tea",
            products: [{ name: "Oolong tea", quantity: 3, price: 100 }] }],
          redirectUrls: { confirmUrl: `${base}/confirm`, cancelUrl: `${base}/cancel?order=${order}` },
        });
        if (answer.returnCode !== "0000") return page(res, 502, `request: ${plain(answer.returnCode)}`);
        return page(res, 303, "", { Location: answer.info.paymentUrl.web });
      }
      if (url.pathname === "/confirm") {
        const id = plain(url.searchParams.get("transactionId"));
        const answer = await linepay(sidecar, `/v3/payments/${id}/confirm`, { amount: AMOUNT, currency: "TWD" });
        const order = plain(url.searchParams.get("orderId"));
        return page(res, 200, `<p id="result">order ${order} confirm ${plain(answer.returnCode)}</p>`);
      }
      if (url.pathname === "/cancel") {
        return page(res, 200, `<p id="result">order ${plain(url.searchParams.get("order"))} cancelled</p>`);
      }
      return page(res, 404, "no such page");
    } catch (error) {
      return page(res, 500, "the shop failed: see its log");
    }
  });
  return new Promise((resolve) => {
    server.listen(port, "127.0.0.1", () => {
      resolve({ url: `http://127.0.0.1:${server.address().port}`, server });
    });
  });
}
