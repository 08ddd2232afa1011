<?php
// request -> confirm -> details -> refund through linepay-sidecar.
//
// No channel secret and no signing code: the sidecar at LINEPAY_SIDECAR_URL (default
// http://127.0.0.1:8080) adds LINE Pay's headers and signature. Needs php-curl only.
// Prints one line per step, "<step>: <returnCode> <returnMessage>", and exits 1 as
// soon as a step does not answer 0000.

declare(strict_types=1);

if (!function_exists('curl_init')) {
    fwrite(STDERR, "the curl extension is missing (Debian/Ubuntu: apt-get install php-curl)\n");
    exit(2);
}

define('SIDECAR', rtrim(getenv('LINEPAY_SIDECAR_URL') ?: 'http://127.0.0.1:8080', '/'));

/** The next move after one of the sidecar's own error answers. */
function what_to_do(array $error): string
{
    if ($error['retry_safe'] ?? false) {
        return 'the call never reached LINE Pay: it is safe to send it again';
    }
    switch ($error['reconciled']['state'] ?? null) {
        case 'applied':
            return 'LINE Pay applied it (the answer was lost): record it as done, never send it again';
        case 'not_applied':
            return 'LINE Pay has no record of it: send it again with the same Idempotency-Key (the sidecar will not double it)';
        default:
            return 'it may have been processed: read the payment details before doing anything';
    }
}

/**
 * One LINE Pay call through the sidecar; returns [decoded answer, replayed, raw text].
 * With $idempotencyKey, the same key and body later (a retry, a double click) get the
 * stored answer instead of a second call to LINE Pay. The key is never forwarded.
 */
function linepay(string $method, string $path, ?array $body = null, ?string $idempotencyKey = null): array
{
    $responseHeaders = [];
    $ch = curl_init(SIDECAR . $path);
    $options = [
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        // Above the sidecar's longest read timeout (capture: 60 s), so that a slow
        // LINE Pay is reported by the sidecar, which says whether it may have been
        // processed.
        CURLOPT_TIMEOUT => 65,
        // The sidecar is on loopback: never through an http_proxy from the environment.
        CURLOPT_PROXY => '',
    ];
    $headers = [];
    if ($body !== null) {
        $options[CURLOPT_POSTFIELDS] = json_encode($body, JSON_THROW_ON_ERROR);
        $headers[] = 'Content-Type: application/json';
    }
    if ($idempotencyKey !== null) {
        $headers[] = "Idempotency-Key: $idempotencyKey";
    }
    $options[CURLOPT_HTTPHEADER] = $headers;
    $options[CURLOPT_HEADERFUNCTION] = function ($ch, string $line) use (&$responseHeaders): int {
        $parts = explode(':', $line, 2);
        if (count($parts) === 2) {
            $responseHeaders[strtolower(trim($parts[0]))] = trim($parts[1]);
        }
        return strlen($line);
    };
    curl_setopt_array($ch, $options);
    $text = curl_exec($ch);
    if ($text === false) {
        fwrite(STDERR, "$method $path: " . curl_error($ch) . "\n");
        exit(1);
    }
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    if ($status !== 200) {
        $code = $responseHeaders['x-linepay-sidecar-error'] ?? null;
        if ($code === null) {
            // No marker: the HTTP error is LINE Pay's own.
            fwrite(STDERR, "$method $path: LINE Pay answered HTTP $status: $text\n");
            exit(1);
        }
        // The marker: the sidecar's own answer, {"error": {"code", "message",
        // "retry_safe", "reconciled"?}}. LINE Pay's business errors come as 200 + returnCode.
        $error = json_decode($text, true)['error'] ?? [];
        fwrite(STDERR, "$method $path: sidecar $code (HTTP $status): {$error['message']}\n");
        fwrite(STDERR, '  -> ' . what_to_do($error) . "\n");
        exit(1);
    }
    // transactionId has 19 digits. Without JSON_BIGINT_AS_STRING, an id above
    // PHP_INT_MAX (or any id on 32-bit PHP) silently becomes a rounded float; with it,
    // such an integer arrives as a string. Either way, use it as a string.
    $answer = json_decode($text, true, 512, JSON_BIGINT_AS_STRING | JSON_THROW_ON_ERROR);
    return [$answer, ($responseHeaders['idempotent-replayed'] ?? '') === 'true', $text];
}

function step(string $name, array $answer)
{
    echo "$name: {$answer['returnCode']} {$answer['returnMessage']}\n";
    if ($answer['returnCode'] !== '0000') {
        exit(1);
    }
    return $answer['info'] ?? null;
}

$amount = 100;
$currency = 'TWD';
$order = [
    'amount' => $amount,
    'currency' => $currency,
    'orderId' => 'example-php-' . bin2hex(random_bytes(6)),
    'packages' => [[
        'id' => 'package-1',
        'amount' => $amount,
        'products' => [['name' => 'Coffee', 'quantity' => 1, 'price' => $amount]],
    ]],
    'redirectUrls' => [
        'confirmUrl' => 'https://shop.example/linepay/confirm',
        'cancelUrl' => 'https://shop.example/linepay/cancel',
    ],
];
$info = step('request', linepay('POST', '/v3/payments/request', $order)[0]);
$transactionId = (string) $info['transactionId'];
echo "  transactionId $transactionId, pay at {$info['paymentUrl']['web']}\n";

// In a shop, this runs when LINE Pay redirects the buyer to confirmUrl. The key is
// derived from the order, so a retried or doubled confirm can never confirm twice.
step('confirm', linepay('POST', "/v3/payments/$transactionId/confirm",
    ['amount' => $amount, 'currency' => $currency], "{$order['orderId']}-confirm")[0]);

$details = step('details', linepay('GET', '/v3/payments?transactionId=' . $transactionId)[0]);
if ((string) $details[0]['transactionId'] !== $transactionId) {
    fwrite(STDERR, "details: transactionId {$details[0]['transactionId']} != $transactionId\n");
    exit(1);
}

$refundKey = "{$order['orderId']}-refund-1";
[$answer, , $text] = linepay('POST', "/v3/payments/$transactionId/refund",
    ['refundAmount' => 40], $refundKey);
$refund = step('refund', $answer);
echo "  refundTransactionId {$refund['refundTransactionId']}\n";

// The same refund again (a retrying job): answered from the sidecar's journal.
[, $replayed, $againText] = linepay('POST', "/v3/payments/$transactionId/refund",
    ['refundAmount' => 40], $refundKey);
if (!$replayed || $againText !== $text) {
    fwrite(STDERR, "refund again: expected the stored answer, replayed\n");
    exit(1);
}
echo "  refund again with the same Idempotency-Key: replayed from the sidecar's journal, LINE Pay not called\n";
