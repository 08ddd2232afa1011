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


def what_to_do(error):
    """The next move after one of the sidecar's own error answers."""
    if error.get("retry_safe"):
        return "the call never reached LINE Pay: it is safe to send it again"
    state = (error.get("reconciled") or {}).get("state")
    if state == "applied":
        return "LINE Pay applied it (the answer was lost): record it as done, never send it again"
    if state == "not_applied":
        return ("LINE Pay has no record of it: send it again with the same Idempotency-Key "
                "(the sidecar will not double it)")
    return "it may have been processed: read the payment details before doing anything"


def call(method, path, body=None, idempotency_key=None):
    """One LINE Pay call through the sidecar; returns (answer, replayed)."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(SIDECAR + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if idempotency_key is not None:
        # Same key + same body later (a retry, a double click): the sidecar replays the
        # stored answer instead of calling LINE Pay twice. Never forwarded to LINE Pay.
        request.add_header("Idempotency-Key", idempotency_key)
    try:
        with OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
            text = response.read()
            replayed = response.headers.get("Idempotent-Replayed") == "true"
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        code = error.headers.get("X-LinePay-Sidecar-Error")
        if code is None:
            # No marker: the HTTP error is LINE Pay's own.
            sys.exit(f"{method} {path}: LINE Pay answered HTTP {error.code}: {detail}")
        # The marker: the sidecar's own answer, {"error": {"code", "message",
        # "retry_safe", "reconciled"?}}. LINE Pay's business errors come as 200 + returnCode.
        failure = json.loads(detail).get("error", {})
        sys.exit(f"{method} {path}: sidecar {code} (HTTP {error.code}): "
                 f"{failure.get('message')}\n  -> {what_to_do(failure)}")
    # Python's json keeps integers exact: the 19-digit transactionId is safe as an int.
    return json.loads(text), replayed


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
    info = step("request", call("POST", "/v3/payments/request", order)[0])
    transaction_id = info["transactionId"]
    print(f"  transactionId {transaction_id}, pay at {info['paymentUrl']['web']}")

    # In a shop, this runs when LINE Pay redirects the buyer to confirmUrl. The key is
    # derived from the order, so a retried or doubled confirm can never confirm twice.
    step("confirm", call("POST", f"/v3/payments/{transaction_id}/confirm",
                         {"amount": amount, "currency": currency},
                         idempotency_key=f"{order['orderId']}-confirm")[0])

    details = step("details",
                   call("GET", f"/v3/payments?transactionId={transaction_id}")[0])
    if details[0]["transactionId"] != transaction_id:
        sys.exit(f"details: transactionId {details[0]['transactionId']} != {transaction_id}")

    refund_key = f"{order['orderId']}-refund-1"
    answer, _ = call("POST", f"/v3/payments/{transaction_id}/refund", {"refundAmount": 40},
                     idempotency_key=refund_key)
    refund = step("refund", answer)
    print(f"  refundTransactionId {refund['refundTransactionId']}")

    # The same refund again (a retrying job): answered from the sidecar's journal.
    again, replayed = call("POST", f"/v3/payments/{transaction_id}/refund",
                           {"refundAmount": 40}, idempotency_key=refund_key)
    if not replayed or again != answer:
        sys.exit("refund again: expected the stored answer, replayed")
    print("  refund again with the same Idempotency-Key: replayed from the sidecar's journal, "
          "LINE Pay not called")


if __name__ == "__main__":
    main()
