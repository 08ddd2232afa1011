//! The YAML file's shape: every key, once, with its doc comment and its flag. The docs'
//! key table (`docs/configuration.md`) is generated from these definitions and a test
//! fails when the two differ; the CLI's flags and `LINEPAY_SIDECAR_*` variables are built
//! from them too. Defaults and rules live in the validation modules beside this one.

use super::setting::{Refused, Setting};
use super::units::{ConfigDuration, ConfigRate, ConfigRetention};
use std::path::PathBuf;

/// A YAML list of texts (addresses, header names), each with its own line.
pub(crate) type AddressList = Vec<Setting<String>>;
/// A YAML list of names, each with its own line.
pub(crate) type NameList = Vec<Setting<String>>;

config_section! {
    /// The whole file.
    RawConfig {
        /// Address the app connects to. Keep it on loopback: anything that can reach it can make signed LINE Pay calls.
        listen: value<String> [flag "listen"],
        upstream: section<RawUpstream>,
        credentials: section<RawCredentials>,
        /// The channel a call on the shared `listen` port gets when it names none (header `X-LinePay-Channel`); without it such a call is refused with 400 `channel_required` when there are several channels.
        default_channel: value<String>,
        channels: named<RawChannel>,
        request: section<RawRequest>,
        routes: section<RawRoutes>,
        limits: section<RawLimits>,
        prevalidation: section<RawPrevalidation>,
        response: section<RawResponse>,
        egress: section<RawEgress>,
        admin: section<RawAdmin>,
        shutdown: section<RawShutdown>,
        reload: section<RawReload>,
        journal: section<RawJournal>,
        state: section<RawState>,
    }
}

config_section! {
    /// `upstream:` LINE Pay, and the client that reaches it.
    RawUpstream {
        /// LINE Pay's base URL, scheme and host only: `https://sandbox-api-pay.line.me` or `https://api-pay.line.me`. Plain `http://` only to loopback (the emulator, tests).
        url: value<String> [flag "upstream" alias "upstream-url"],
        /// PEM file of extra CA certificates trusted besides the public web roots (a private test upstream).
        ca_file: value<PathBuf> [flag "upstream-ca-file"],
        /// Connect timeout of every route.
        connect_timeout: value<ConfigDuration> [flag "connect-timeout" alias "upstream-connect-timeout"],
        /// One read timeout for every route; unset, each route keeps LINE Pay's documented value.
        read_timeout: value<ConfigDuration> [flag "read-timeout" alias "upstream-read-timeout"],
        /// Largest LINE Pay answer accepted, in bytes.
        max_response_bytes: value<usize>,
        /// How long an idle keep-alive connection to LINE Pay is kept.
        pool_idle_timeout: value<ConfigDuration>,
        /// Idle keep-alive connections kept to LINE Pay at most.
        pool_max_idle_per_host: value<usize>,
    }
}

config_section! {
    /// `credentials:` who the sidecar signs as.
    RawCredentials {
        /// The channel id (not a secret).
        channel_id: value<String> [flag "channel-id" env "LINEPAY_CHANNEL_ID"],
        /// File holding the channel secret (a mounted Kubernetes Secret, a systemd credential); `LINEPAY_CHANNEL_SECRET` holding the secret itself wins over this key and the variable, the flag wins over all.
        channel_secret_file: value<PathBuf> [flag "channel-secret-file" env "LINEPAY_CHANNEL_SECRET_FILE"],
        /// Refused: the secret is never read from the YAML.
        channel_secret: value<Refused>,
        /// Offline (POS) integrations: `X-LINE-MerchantDeviceProfileId` sent on every call.
        merchant_device_profile_id: value<String>,
        /// Offline (POS) integrations: `X-LINE-MerchantDeviceType` sent on every call.
        merchant_device_type: value<String>,
    }
}

config_section! {
    /// `channels.<name>`: one LINE Pay channel (merchant), instead of `credentials:`. The name (1 to 32 of `a-z`, `0-9`, `_`, `-`) is what `X-LinePay-Channel` names and the `channel` label of the metrics.
    RawChannel {
        /// The channel id (not a secret).
        channel_id: value<String>,
        /// File holding this channel's secret; `LINEPAY_SIDECAR_CHANNELS_<NAME>_CHANNEL_SECRET_FILE` (the name in capitals, `-` as `_`) wins over it.
        channel_secret_file: value<PathBuf>,
        /// Refused: the secret is never read from the YAML.
        channel_secret: value<Refused>,
        /// The API families this channel may call (same names as `routes.apis`); unset, those of `routes.apis`.
        apis: value<NameList>,
        upstream: optional<RawChannelUpstream>,
        /// An address served only as this channel (an app changes only its base URL); unset, the channel is reached on the shared `listen` port with `X-LinePay-Channel`.
        listen: value<String>,
        limits: optional<RawChannelLimits>,
        /// Offline (POS) integrations: `X-LINE-MerchantDeviceProfileId` sent on this channel's calls.
        merchant_device_profile_id: value<String>,
        /// Offline (POS) integrations: `X-LINE-MerchantDeviceType` sent on this channel's calls.
        merchant_device_type: value<String>,
    }
}

config_section! {
    /// `channels.<name>.upstream`: where this channel's calls go.
    RawChannelUpstream {
        /// This channel's LINE Pay base URL (one channel may be on the sandbox, another in production); unset, `upstream.url`. The client's other settings are `upstream:`'s.
        url: value<String>,
    }
}

config_section! {
    /// `channels.<name>.limits`: this channel's own token bucket, checked besides `limits:`.
    RawChannelLimits {
        /// `N/s`, `N/m` or `N/h` for this channel's calls together.
        channel: value<ConfigRate>,
        /// Tokens held at most; defaults to the count per period.
        burst: value<u32>,
    }
}

config_section! {
    /// `request:` what the app may send.
    RawRequest {
        /// Larger bodies are refused with 413 `body_too_large` before anything is sent.
        max_body_bytes: value<usize> [flag "max-body-bytes" alias "request-max-body-bytes"],
        /// The app must send its whole body within this time (408 `body_timeout`).
        body_timeout: value<ConfigDuration>,
        /// Concurrent app connections; past it a connection gets 503 `overloaded`.
        max_connections: value<usize>,
        /// Bytes all calls together may hold in memory (request heads, bodies, LINE Pay's answers); past it a call gets 503 `overloaded`.
        max_buffered_bytes: value<usize>,
        /// How long the app may leave an answer unread before its connection is cut.
        write_timeout: value<ConfigDuration>,
        /// Request headers forwarded to LINE Pay besides the built-in ones (`Accept`, `Accept-Language`, `User-Agent`, `X-Request-Id`); credentials, hop-by-hop, `Host`, `X-Forwarded-*` and `X-LINE-*` names are refused.
        forward_headers: value<AddressList>,
    }
}

config_section! {
    /// `routes:` the allowlist.
    RawRoutes {
        /// The built-in API families allowed: `online_v3`, `online_v4`, `user_info`, `offline_v4`, `offline_v2`, `online_v2`.
        apis: value<NameList> [flag "apis" alias "routes-apis"],
        /// Deprecated: the same as adding `online_v2` to `routes.apis` (LINE Pay's online v2 API, which sends the secret itself in a header).
        v2_legacy: value<bool> [flag "v2-legacy" alias "routes-v2-legacy"],
        allow: list<RawRoute>,
        timeouts: map<RawTimeouts>,
    }
}

config_section! {
    /// One entry of `routes.allow`: without `routes.apis`, the entries replace the built-in tables; with it, they are added.
    RawRoute {
        /// `GET` or `POST`.
        method: value<String>,
        /// A path template; a `{parameter}` matches one segment: `{transactionId}` 1 to 19 digits, `{regKey}` 1 to 15 letters and digits, `{orderId}` the merchant's string (percent-encoding allowed), any other name 1 to 100 letters, digits, `-` and `_`.
        path: value<String>,
        /// This route's connect timeout.
        connect_timeout: value<ConfigDuration>,
        /// This route's read timeout.
        read_timeout: value<ConfigDuration>,
    }
}

config_section! {
    /// Per-route timeouts, keyed by `METHOD template`; they win over `upstream.*`.
    RawTimeouts {
        /// The route's connect timeout.
        connect_timeout: value<ConfigDuration>,
        /// The route's read timeout.
        read_timeout: value<ConfigDuration>,
    }
}

config_section! {
    /// `limits:` token buckets, checked before the body is read.
    RawLimits {
        /// Count and log what would be refused; refuse nothing.
        shadow: value<bool>,
        global: optional<RawBucket>,
        routes: map<RawBucket>,
        per_client: optional<RawClientLimit>,
        queue: optional<RawQueue>,
        /// Check-status calls (`GET /v3|v4/payments/requests/{transactionId}/check`, offline `orders/{orderId}/check`) for one transaction closer together than this are answered 429 `rate_limited` with `Retry-After`, never forwarded (LINE Pay asks for at least 1 s); `0s` turns it off.
        check_status_interval: value<ConfigDuration>,
        /// Transactions whose last check-status call is remembered at most; past it a new one is admitted untracked.
        check_status_max_tracked: value<usize>,
    }
}

config_section! {
    /// One token bucket.
    RawBucket {
        /// `N/s`, `N/m` or `N/h`.
        rate: value<ConfigRate>,
        /// Tokens held at most; defaults to the count per period.
        burst: value<u32>,
    }
}

config_section! {
    /// `limits.per_client`: one bucket per value of a header the app sets.
    RawClientLimit {
        /// The request header naming the client; calls without it share one bucket.
        header: value<String>,
        /// `N/s`, `N/m` or `N/h`, per client.
        rate: value<ConfigRate>,
        /// Tokens held at most per client; defaults to the count per period.
        burst: value<u32>,
        /// Clients tracked at most (the least recently seen is forgotten first).
        max_clients: value<usize>,
    }
}

config_section! {
    /// `limits.queue`: a refused call may wait for its token instead.
    RawQueue {
        /// How long a call may wait for its token.
        max_wait: value<ConfigDuration>,
        /// Calls waiting at most.
        max_queued: value<usize>,
    }
}

config_section! {
    /// `prevalidation:` the app's request bodies checked against LINE Pay's documented fields before signing.
    RawPrevalidation {
        /// `off`, `warn` (log and count findings, forward as sent) or `enforce` (refuse a body with a finding: 400 `invalid_request`).
        mode: value<String> [flag "prevalidation"],
        routes: map<RawPrevalidationRoute>,
    }
}

config_section! {
    /// `prevalidation.routes`: a mode per route, keyed by its template after the version, e.g. `payments/request`.
    RawPrevalidationRoute {
        /// `off`, `warn` or `enforce` for this route (v3 and v4 alike).
        mode: value<String>,
    }
}

config_section! {
    /// `response:` what the app gets back.
    RawResponse {
        /// Write LINE Pay's 19-digit ids (`transactionId`, `refundTransactionId`, `originalTransactionId`) as JSON strings in its answers, for JavaScript; an app may also ask per call with `X-LinePay-Ids-As-Strings: true` (or decline with `false`).
        ids_as_strings: value<bool> [flag "ids-as-strings"],
    }
}

config_section! {
    /// `egress:` where calls to LINE Pay leave from (its IP whitelist).
    RawEgress {
        /// Source IP of every upstream connection; start-up fails if this host does not hold it.
        bind_address: value<String> [flag "egress-bind-address"],
        proxy: optional<RawProxy>,
        /// Resolve the upstream host only to these IPs, in order (no DNS).
        pin: value<AddressList> [flag "egress-pin"],
        expect_ip: optional<RawExpectIp>,
    }
}

config_section! {
    /// `egress.proxy`: an HTTP CONNECT proxy that owns the registered address.
    RawProxy {
        /// `http://host:port` of the proxy, never with credentials in it.
        url: value<String> [flag "egress-proxy"],
        /// File holding `user:password` for `Proxy-Authorization: Basic`.
        auth_file: value<PathBuf> [flag "egress-proxy-auth-file" env "LINEPAY_EGRESS_PROXY_AUTH_FILE"],
    }
}

config_section! {
    /// `egress.expect_ip`: check which public address calls really leave from.
    RawExpectIp {
        /// The address registered in LINE Pay's whitelist.
        address: value<String>,
        /// An echo service that answers the caller's public address as plain text.
        echo_url: value<String>,
        /// How long one check may take.
        timeout: value<ConfigDuration>,
    }
}

config_section! {
    /// `admin:` the port of `/metrics`, `/healthz`, `/readyz` and `/calls`.
    RawAdmin {
        /// Address of `/metrics`, `/healthz`, `/readyz` and `/calls`.
        listen: value<String> [flag "admin-listen"],
        /// Who may read the call journal on `/calls`: `loopback` (peers on 127.0.0.0/8 and ::1), `any` (every peer that reaches the admin listener) or `off`.
        calls: value<String> [flag "admin-calls"],
        /// How often `/readyz`'s upstream check opens a connection to LINE Pay.
        probe_interval: value<ConfigDuration>,
        /// Whether an unreachable LINE Pay fails `/readyz` (off: LINE Pay's health is the `upstream_up` gauge).
        ready_requires_upstream: value<bool>,
    }
}

config_section! {
    /// `shutdown:` what SIGTERM does.
    RawShutdown {
        /// How long calls in flight may take to finish after SIGTERM.
        drain_timeout: value<ConfigDuration> [flag "drain-timeout" alias "shutdown-drain-timeout"],
    }
}

config_section! {
    /// `reload:` how changes are picked up.
    RawReload {
        /// How often the config and secret files are checked for changes; `0s` turns the check off (SIGHUP still reloads).
        watch_interval: value<ConfigDuration>,
    }
}

config_section! {
    /// `journal:` the on-disk record of money calls and of calls with an `Idempotency-Key`.
    RawJournal {
        /// Record money calls before and after they are sent (idempotency keys and reconciliation at start-up need it).
        enabled: value<bool>,
        /// The SQLite file (created if missing); its directory must be writable and should survive a restart.
        path: value<PathBuf> [flag "journal-path"],
        /// Finished calls older than this are deleted, and their idempotency keys forgotten; written in days too (`30d`), at most `3650d`.
        max_age: value<ConfigRetention>,
        /// Finished calls kept at most; the oldest go first.
        max_calls: value<usize>,
        /// Ask LINE Pay what became of a money call whose answer was lost (and of those a stop interrupted).
        reconcile: value<bool>,
        /// How long that question may take, on top of the call's own read timeout.
        reconcile_timeout: value<ConfigDuration>,
    }
}

config_section! {
    /// `state:` where the guarantees shared by several sidecars of one channel (rate limits, idempotency keys, transaction leases) are kept.
    RawState {
        /// `local` (this process only, the default) or `redis` (every sidecar of the channel on one Redis or Valkey).
        backend: value<String> [flag "state-backend"],
        redis: section<RawRedis>,
    }
}

config_section! {
    /// `state.redis`: the Redis (or Valkey) the sidecars share, with `state.backend: redis`.
    RawRedis {
        /// `redis://host:port/db` or `rediss://host:port/db` (TLS, rustls); an ACL user name may stand before the host, a password never (see `password_file`).
        url: value<String> [flag "state-redis-url"],
        /// File holding the Redis password (`AUTH`); never the password in the YAML or the URL.
        password_file: value<PathBuf> [flag "state-redis-password-file"],
        /// PEM file of the CA certificates that sign the Redis server's certificate (`rediss://`); unset, the public web roots.
        ca_file: value<PathBuf> [flag "state-redis-ca-file"],
        /// Start of every key the sidecar writes (`{prefix}:{channel_id}:...`), so several shops share one Redis.
        key_prefix: value<String> [flag "state-redis-key-prefix"],
        /// The longest a call waits for one Redis answer; past it the call goes on without Redis (rate limits: the local fallback).
        command_timeout: value<ConfigDuration> [flag "state-redis-command-timeout"],
        /// How long one attempt to (re)connect to Redis may take.
        connect_timeout: value<ConfigDuration>,
        /// While Redis cannot answer, each sidecar limits alone at this share of every shared rate and burst (`0.5`, `50%`): set it to 1 / the number of sidecars.
        fallback_share: value<String>,
        /// How long a key's answer (sealed) stays in Redis for any sidecar to replay (`24h`).
        answer_ttl: value<ConfigDuration>,
        /// What a money call (or keyed call) gets while Redis cannot answer: `refuse` (`503 state_unavailable`, not sent; the default) or `local` (this sidecar's own guards alone).
        money_fallback: value<String>,
    }
}
