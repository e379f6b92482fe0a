//! Verifying that an Events API request comes from Slack (SECURITY.md):
//! `X-Slack-Signature` must be `v0=` + hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` under the signing secret,
//! compared in constant time, and the timestamp must be within five minutes
//! of now. Pure: the time comes in as a value.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, in seconds.
pub const WINDOW_SECS: i64 = 5 * 60;

/// Why a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Slack-Request-Timestamp` header, or not a number.
    #[error("missing or malformed X-Slack-Request-Timestamp")]
    BadTimestamp,
    /// The timestamp is more than five minutes from now (a replay, or a skewed clock).
    #[error("request timestamp is {0} s from now (at most {WINDOW_SECS} s allowed)")]
    Stale(i64),
    /// No `X-Slack-Signature` header, or not `v0=<hex>`.
    #[error("missing or malformed X-Slack-Signature")]
    BadSignatureHeader,
    /// The signature does not match the body and timestamp.
    #[error("signature does not match")]
    Mismatch,
}

/// Check one request. `timestamp` and `signature` are the header values as
/// received (`None` when absent), `body` the raw bytes, `now_secs` the unix time.
pub fn verify(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let ts_text = timestamp.ok_or(SignatureError::BadTimestamp)?.trim();
    let ts: i64 = ts_text.parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now_secs.saturating_sub(ts);
    if skew.abs() > WINDOW_SECS {
        return Err(SignatureError::Stale(skew));
    }
    let given = signature
        .and_then(|s| s.trim().strip_prefix("v0="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::BadSignatureHeader)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret).expect("HMAC takes a key of any length");
    mac.update(b"v0:");
    mac.update(ts_text.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Slack-Signature` value Slack would send (for tests and fakes).
pub fn sign(signing_secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret).expect("HMAC takes a key of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const NOW: i64 = 1_531_420_618;

    fn check(ts: Option<&str>, sig: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
        verify(SECRET, ts, sig, body, NOW)
    }

    #[test]
    fn slack_documented_example_verifies() {
        // The example of Slack's "Verifying requests from Slack" page.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(check(Some("1531420618"), Some(sig), body), Ok(()));
        assert_eq!(sign(SECRET, NOW, body), sig);
    }

    #[test]
    fn tampered_body_or_wrong_secret_is_a_mismatch() {
        let sig = sign(SECRET, NOW, b"{\"a\":1}");
        assert_eq!(
            check(Some("1531420618"), Some(&sig), b"{\"a\":2}"),
            Err(SignatureError::Mismatch)
        );
        let other = sign(b"another secret", NOW, b"{\"a\":1}");
        assert_eq!(
            check(Some("1531420618"), Some(&other), b"{\"a\":1}"),
            Err(SignatureError::Mismatch)
        );
        // A signature for another timestamp does not carry over.
        let earlier = sign(SECRET, NOW - 1, b"{\"a\":1}");
        assert_eq!(
            check(Some("1531420618"), Some(&earlier), b"{\"a\":1}"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_are_refused_even_when_signed() {
        for ts in [NOW - WINDOW_SECS - 1, NOW + WINDOW_SECS + 1, 0] {
            let sig = sign(SECRET, ts, b"x");
            assert!(matches!(
                check(Some(&ts.to_string()), Some(&sig), b"x"),
                Err(SignatureError::Stale(_))
            ));
        }
        for ts in [NOW - WINDOW_SECS, NOW + WINDOW_SECS] {
            let sig = sign(SECRET, ts, b"x");
            assert_eq!(check(Some(&ts.to_string()), Some(&sig), b"x"), Ok(()));
        }
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        let sig = sign(SECRET, NOW, b"x");
        assert_eq!(
            check(None, Some(&sig), b"x"),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            check(Some("soon"), Some(&sig), b"x"),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            check(Some("1531420618"), None, b"x"),
            Err(SignatureError::BadSignatureHeader)
        );
        assert_eq!(
            check(Some("1531420618"), Some("v1=00"), b"x"),
            Err(SignatureError::BadSignatureHeader)
        );
        assert_eq!(
            check(Some("1531420618"), Some("v0=zz"), b"x"),
            Err(SignatureError::BadSignatureHeader)
        );
        assert_eq!(
            check(Some("1531420618"), Some("v0=00"), b"x"),
            Err(SignatureError::Mismatch)
        );
    }
}
