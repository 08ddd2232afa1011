<?php
// A shop's payment code written the way yidas/line-pay-sdk 4.x writes its calls, in
// plain PHP curl: the SDK's /v4 paths, its default headers (Content-Type,
// X-LINE-ChannelId), its nonce (`date('c') . uniqid('-')`, an ISO 8601 date and a
// uniqid) and its own X-LINE-Authorization over `secret . uri . (query|body) . nonce`,
// its query strings from http_build_query (details' `transactionId[0]=...`) and its
// bodies from json_encode (none at all for a call without parameters).
//
// Behind linepay-sidecar the app has no real channel secret: it signs with whatever it
// was configured with (APP_CHANNEL_SECRET, a placeholder), and the sidecar must replace
// the nonce and the signature. tests/it/api_flows.rs runs this script.
//
// Environment: LINEPAY_API_URL (the sidecar), LINEPAY_CHANNEL_ID, APP_CHANNEL_SECRET,
// ORDER_ID, FLOW (`capture`: authorise, capture, refund; `void`: authorise, void).
// Prints `nonce <value>` for every call, then `<step> <returnCode>`, or
// `<step> HTTP <status> <body>` when the answer is not LINE Pay's 200 (a sidecar
// refusal); stops at the first step that is not 0000 and exits 1.

declare(strict_types=1);

if (!function_exists('curl_init')) {
    fwrite(STDERR, "the curl extension is missing (Debian/Ubuntu: apt-get install php-curl)\n");
    exit(2);
}

function env(string $name): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        fwrite(STDERR, "$name is not set\n");
        exit(2);
    }
    return $value;
}

$apiUrl = rtrim(env('LINEPAY_API_URL'), '/');
$channelId = env('LINEPAY_CHANNEL_ID');
$channelSecret = env('APP_CHANNEL_SECRET');
$orderId = env('ORDER_ID');
$flow = env('FLOW');

/** yidas\linePay\Client::getAuthSignature */
function auth_signature(string $channelSecret, string $uri, ?string $queryOrBody, string $nonce): string
{
    $authMacText = $channelSecret . $uri . $queryOrBody . $nonce;
    return base64_encode(hash_hmac('sha256', $authMacText, $channelSecret, true));
}

/** yidas\linePay\Client::requestHandler('v3', ...), with curl in place of Guzzle. */
function request_handler(string $method, string $uri, ?array $queryParams = null, ?array $bodyParams = null): array
{
    global $apiUrl, $channelId, $channelSecret;
    $queryString = ($queryParams) ? http_build_query($queryParams) : null;
    $url = ($queryParams) ? "{$uri}?{$queryString}" : $uri;
    $body = ($bodyParams) ? json_encode($bodyParams) : '';
    $authNonce = date('c') . uniqid('-'); // ISO 8601 date + UUID 1
    $authParams = ($method == 'GET' && $queryParams) ? $queryString : (($bodyParams) ? $body : null);
    $headers = [
        'Content-Type: application/json',
        "X-LINE-ChannelId: $channelId",
        'X-LINE-Authorization: ' . auth_signature($channelSecret, $uri, $authParams, $authNonce),
        "X-LINE-Authorization-Nonce: $authNonce",
    ];
    echo "nonce $authNonce\n";

    $ch = curl_init($apiUrl . $url);
    $options = [
        CURLOPT_CUSTOMREQUEST => $method,
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_HTTPHEADER => $headers,
        CURLOPT_CONNECTTIMEOUT => 5,
        CURLOPT_TIMEOUT => 20,
        // Loopback: never through an http_proxy from the environment.
        CURLOPT_PROXY => '',
    ];
    if ($method === 'POST') {
        $options[CURLOPT_POSTFIELDS] = $body;
    }
    curl_setopt_array($ch, $options);
    $text = curl_exec($ch);
    if ($text === false) {
        fwrite(STDERR, "$method $url: " . curl_error($ch) . "\n");
        exit(1);
    }
    return [curl_getinfo($ch, CURLINFO_RESPONSE_CODE), $text];
}

/** Prints the step's outcome; its `info` when 0000, else stops the script. */
function step(string $name, array $reply)
{
    [$status, $text] = $reply;
    if ($status !== 200) {
        echo "$name HTTP $status $text\n";
        exit(1);
    }
    // yidas\linePay\Response decodes with JSON_BIGINT_AS_STRING: 19-digit ids stay exact.
    $answer = json_decode($text, true, 512, JSON_BIGINT_AS_STRING);
    $code = $answer['returnCode'] ?? '(none)';
    echo "$name $code\n";
    if ($code !== '0000') {
        fwrite(STDERR, "$name: $text\n");
        exit(1);
    }
    return $answer['info'] ?? null;
}

$amount = 250;
$currency = 'TWD';
$info = step('request', request_handler('POST', '/v4/payments/request', null, [
    'amount' => $amount,
    'currency' => $currency,
    'orderId' => $orderId,
    'packages' => [[
        'id' => 'package-1',
        'amount' => $amount,
        'name' => 'Shop',
        'products' => [['name' => 'Tea', 'quantity' => 1, 'price' => $amount]],
    ]],
    'redirectUrls' => [
        'confirmUrl' => 'https://shop.example/linepay/confirm',
        'cancelUrl' => 'https://shop.example/linepay/cancel',
    ],
    'options' => ['payment' => ['capture' => false]],
]));
$transactionId = (string) $info['transactionId'];

step('confirm', request_handler('POST', "/v4/payments/$transactionId/confirm", null,
    ['amount' => $amount, 'currency' => $currency]));

// $linePay->details(['transactionId' => [$transactionId]]), as yidas' README writes it.
$details = step('details', request_handler('GET', '/v4/payments', ['transactionId' => [$transactionId]]));
if ((string) $details[0]['transactionId'] !== $transactionId) {
    fwrite(STDERR, "details: transactionId {$details[0]['transactionId']} is not $transactionId\n");
    exit(1);
}

if ($flow === 'capture') {
    step('capture', request_handler('POST', "/v4/payments/authorizations/$transactionId/capture", null,
        ['amount' => $amount, 'currency' => $currency]));
    step('refund', request_handler('POST', "/v4/payments/$transactionId/refund", null,
        ['refundAmount' => 100]));
} elseif ($flow === 'void') {
    // $linePay->authorizationsVoid($transactionId): no parameters, so an empty body.
    step('void', request_handler('POST', "/v4/payments/authorizations/$transactionId/void"));
} else {
    fwrite(STDERR, "FLOW must be capture or void\n");
    exit(2);
}

step('userInfo', request_handler('GET', "/v4/payments/$transactionId/userInfo"));
