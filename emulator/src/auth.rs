//! The emulator's own check of LINE Pay credentials: an independent verifier.
//!
//! [`channel_of`] finds the channel a call's `X-LINE-ChannelId` names among those the
//! emulator serves; the call is then checked against that channel's secret only, so a
//! call signed with one channel's secret under another's id is refused.
//!
//! The signature is recomputed here the plain way (one message buffer, one HMAC), with
//! no code shared with the sidecar's signer (this crate does not depend on the sidecar),
//! so a signer bug cannot hide behind a verifier with the same bug. Every failure is
//! LINE Pay's `1106` with a detail naming the header at fault; the detail never carries
//! the secret or the expected signature.

use crate::reply::{Refusal, ReturnCode};
use crate::ChannelConfig;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

const CHANNEL_ID: &str = "x-line-channelid";
const NONCE: &str = "x-line-authorization-nonce";
const SIGNATURE: &str = "x-line-authorization";
const V2_SECRET: &str = "x-line-channelsecret";
const DEVICE_TYPE: &str = "x-line-merchantdevicetype";
const DEVICE_PROFILE: &str = "x-line-merchantdeviceprofileid";

type HmacSha256 = Hmac<Sha256>;

/// Checks a v3 call: channel id, a non-empty nonce, and
/// `X-LINE-Authorization = Base64(HMAC-SHA256(secret, secret + path + payload + nonce))`.
/// `payload` is the exact body for POST and the exact raw query (no '?') for GET.
pub(crate) fn verify_v3(
    config: &ChannelConfig,
    path: &str,
    payload: &[u8],
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    check_channel_id(config, headers)?;
    let nonce = single(headers, NONCE)?
        .filter(|nonce| !nonce.is_empty())
        .ok_or_else(|| header_error("X-LINE-Authorization-Nonce is missing or empty."))?;
    let presented = single(headers, SIGNATURE)?
        .ok_or_else(|| header_error("X-LINE-Authorization is missing."))?;
    let presented = STANDARD
        .decode(presented)
        .map_err(|_| header_error("X-LINE-Authorization is not Base64."))?;
    let mac = mac_over(config.channel_secret.expose(), path, payload, nonce)?;
    // `verify_slice` compares in constant time (and fails on a wrong length).
    mac.verify_slice(&presented).map_err(|_| {
        header_error(
            "X-LINE-Authorization does not match the request \
             (expected Base64 HMAC-SHA256 of secret + path + body or query + nonce).",
        )
    })
}

/// Checks a v2 call: channel id and channel secret sent in clear, compared in constant
/// time.
pub(crate) fn verify_v2(config: &ChannelConfig, headers: &HeaderMap) -> Result<(), Refusal> {
    check_channel_id(config, headers)?;
    let secret = single(headers, V2_SECRET)?
        .ok_or_else(|| header_error("X-LINE-ChannelSecret is missing."))?;
    if bool::from(secret.ct_eq(config.channel_secret.expose())) {
        Ok(())
    } else {
        Err(header_error(
            "X-LINE-ChannelSecret does not match the channel.",
        ))
    }
}

/// Checks that an offline call names its device, as a merchant whose channel is set to
/// require them must: `X-LINE-MerchantDeviceType` and `X-LINE-MerchantDeviceProfileId`,
/// each once and not empty.
pub(crate) fn verify_device(headers: &HeaderMap) -> Result<(), Refusal> {
    for (name, shown) in [
        (DEVICE_TYPE, "X-LINE-MerchantDeviceType"),
        (DEVICE_PROFILE, "X-LINE-MerchantDeviceProfileId"),
    ] {
        if single(headers, name)?.is_none_or(<[u8]>::is_empty) {
            return Err(header_error(format!(
                "{shown} is missing; this channel requires device headers on offline calls."
            )));
        }
    }
    Ok(())
}

/// The position in `channels` of the channel the call's `X-LINE-ChannelId` names.
/// Every channel id is compared (in constant time), whichever matches.
pub(crate) fn channel_of(
    channels: &[ChannelConfig],
    headers: &HeaderMap,
) -> Result<usize, Refusal> {
    let presented =
        single(headers, CHANNEL_ID)?.ok_or_else(|| header_error("X-LINE-ChannelId is missing."))?;
    let mut found = None;
    for (at, channel) in channels.iter().enumerate() {
        if bool::from(presented.ct_eq(channel.channel_id.as_bytes())) && found.is_none() {
            found = Some(at);
        }
    }
    found.ok_or_else(|| header_error("X-LINE-ChannelId does not match any channel."))
}

fn check_channel_id(config: &ChannelConfig, headers: &HeaderMap) -> Result<(), Refusal> {
    let presented =
        single(headers, CHANNEL_ID)?.ok_or_else(|| header_error("X-LINE-ChannelId is missing."))?;
    if bool::from(presented.ct_eq(config.channel_id.as_bytes())) {
        Ok(())
    } else {
        Err(header_error("X-LINE-ChannelId does not match the channel."))
    }
}

/// The value of a header sent at most once. A repeated LINE header is refused: it is
/// what a proxy that appends instead of replacing would send, and which copy a server
/// reads is anyone's guess.
fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a [u8]>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(header_error(format!("{name} is sent more than once.")));
    }
    Ok(first.map(|value| value.as_bytes()))
}

fn mac_over(
    secret: &[u8],
    path: &str,
    payload: &[u8],
    nonce: &[u8],
) -> Result<HmacSha256, Refusal> {
    let mut message = Vec::with_capacity(secret.len() + path.len() + payload.len() + nonce.len());
    message.extend_from_slice(secret);
    message.extend_from_slice(path.as_bytes());
    message.extend_from_slice(payload);
    message.extend_from_slice(nonce);
    // HMAC takes keys of any length, so this error cannot happen; it is still mapped
    // rather than unwrapped.
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|_| header_error("the channel secret cannot key an HMAC."))?;
    mac.update(&message);
    Ok(mac)
}

fn header_error(detail: impl Into<String>) -> Refusal {
    Refusal::new(ReturnCode::HeaderError, detail)
}

/// Signs like a LINE Pay client; for tests that need a valid call (the vector tests in
/// `auth/tests.rs` check the verifier against signatures computed elsewhere).
#[cfg(test)]
pub fn sign_for_test(secret: &[u8], path: &str, payload: &[u8], nonce: &str) -> String {
    match mac_over(secret, path, payload, nonce.as_bytes()) {
        Ok(mac) => STANDARD.encode(mac.finalize().into_bytes()),
        Err(refusal) => panic!("test signing failed: {refusal:?}"),
    }
}

#[cfg(test)]
mod tests;
