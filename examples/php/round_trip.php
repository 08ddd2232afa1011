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

/** One LINE Pay call through the sidecar; returns the decoded answer. */
function linepay(string $method, string $path, ?array $body = null): array
{
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
    if ($body !== null) {
        $options[CURLOPT_POSTFIELDS] = json_encode($body, JSON_THROW_ON_ERROR);
        $options[CURLOPT_HTTPHEADER] = ['Content-Type: application/json'];
    }
    curl_setopt_array($ch, $options);
    $text = curl_exec($ch);
    if ($text === false) {
        fwrite(STDERR, "$method $path: " . curl_error($ch) . "\n");
        exit(1);
    }
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    if ($status !== 200) {
        // LINE Pay answers 200 even for business errors, so anything else is the
        // sidecar's own refusal: {"error": {"code": ..., "message": ..., "retry_safe": ...}}.
        fwrite(STDERR, "$method $path: HTTP $status $text\n");
        exit(1);
    }
    // transactionId has 19 digits. Without JSON_BIGINT_AS_STRING, an id above
    // PHP_INT_MAX (or any id on 32-bit PHP) silently becomes a rounded float; with it,
    // such an integer arrives as a string. Either way, use it as a string.
    return json_decode($text, true, 512, JSON_BIGINT_AS_STRING | JSON_THROW_ON_ERROR);
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
$info = step('request', linepay('POST', '/v3/payments/request', $order));
$transactionId = (string) $info['transactionId'];
echo "  transactionId $transactionId, pay at {$info['paymentUrl']['web']}\n";

// In a shop, this runs when LINE Pay redirects the buyer to confirmUrl.
step('confirm', linepay('POST', "/v3/payments/$transactionId/confirm",
    ['amount' => $amount, 'currency' => $currency]));

$details = step('details', linepay('GET', '/v3/payments?transactionId=' . $transactionId));
if ((string) $details[0]['transactionId'] !== $transactionId) {
    fwrite(STDERR, "details: transactionId {$details[0]['transactionId']} != $transactionId\n");
    exit(1);
}

$refund = step('refund', linepay('POST', "/v3/payments/$transactionId/refund",
    ['refundAmount' => 40]));
echo "  refundTransactionId {$refund['refundTransactionId']}\n";
