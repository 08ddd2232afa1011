#!/usr/bin/env python3
"""request -> confirm -> details -> refund through linepay-sidecar.

No channel secret and no signing code: the sidecar at LINEPAY_SIDECAR_URL (default
http://127.0.0.1:8080) adds LINE Pay's headers and signature. Standard library only.
Prints one line per step, "<step>: <returnCode> <returnMessage>", and exits 1 as soon
as a step does not answer 0000.
"""

import json
import os
import sys
import urllib.error
import urllib.request
import uuid

SIDECAR = os.environ.get("LINEPAY_SIDECAR_URL", "http://127.0.0.1:8080").rstrip("/")

# Above the sidecar's longest read timeout (capture: 60 s), so that a slow LINE Pay is
# reported by the sidecar, which says whether the call may have been processed.
TIMEOUT_SECONDS = 65

# The sidecar is on loopback: never send it through an http_proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method, path, body=None):
    """One LINE Pay call through the sidecar; returns the parsed answer."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(SIDECAR + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        # LINE Pay answers 200 even for business errors, so a 4xx/5xx is the sidecar's
        # own refusal: {"error": {"code": ..., "message": ..., "retry_safe": ...}}.
        detail = error.read().decode("utf-8", "replace")
        sys.exit(f"{method} {path}: HTTP {error.code} "
                 f"{error.headers.get('X-LinePay-Sidecar-Error', '')} {detail}")
    # Python's json keeps integers exact: the 19-digit transactionId is safe as an int.
    return json.loads(text)


def step(name, answer):
    print(f"{name}: {answer.get('returnCode')} {answer.get('returnMessage')}", flush=True)
    if answer.get("returnCode") != "0000":
        sys.exit(1)
    return answer.get("info")


def main():
    amount, currency = 100, "TWD"
    order = {
        "amount": amount,
        "currency": currency,
        "orderId": f"example-python-{uuid.uuid4().hex[:12]}",
        "packages": [{
            "id": "package-1",
            "amount": amount,
            "products": [{"name": "Coffee", "quantity": 1, "price": amount}],
        }],
        "redirectUrls": {
            "confirmUrl": "https://shop.example/linepay/confirm",
            "cancelUrl": "https://shop.example/linepay/cancel",
        },
    }
    info = step("request", call("POST", "/v3/payments/request", order))
    transaction_id = info["transactionId"]
    print(f"  transactionId {transaction_id}, pay at {info['paymentUrl']['web']}")

    # In a shop, this runs when LINE Pay redirects the buyer to confirmUrl.
    step("confirm", call("POST", f"/v3/payments/{transaction_id}/confirm",
                         {"amount": amount, "currency": currency}))

    details = step("details", call("GET", f"/v3/payments?transactionId={transaction_id}"))
    if details[0]["transactionId"] != transaction_id:
        sys.exit(f"details: transactionId {details[0]['transactionId']} != {transaction_id}")

    refund = step("refund", call("POST", f"/v3/payments/{transaction_id}/refund",
                                 {"refundAmount": 40}))
    print(f"  refundTransactionId {refund['refundTransactionId']}")


if __name__ == "__main__":
    main()
