//! LiveKit API tokens: HS256 JWTs signed with the API secret, `iss` = API key, and a `video` grant naming
//! what the token allows (`roomList` for ListRooms, `roomCreate` for DeleteRoom, `roomAdmin` + `room` for
//! SendData), as LiveKit's server checks them. The agent mints one short-lived token per call; the
//! LiveKit stand-in verifies them with [`verify`].

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long a token the agent mints stays valid: one call, with room for clock skew.
pub const TOKEN_TTL_SECONDS: i64 = 300;
/// Tolerated clock skew on `nbf`.
const LEEWAY_SECONDS: i64 = 10;

/// An API key and its secret. The secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiCredentials {
    pub key: String,
    secret: String,
}

impl ApiCredentials {
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { key: key.into(), secret: secret.into() }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A token carrying `grant`, valid from `now` (Unix seconds) for [`TOKEN_TTL_SECONDS`].
    pub fn token(&self, grant: VideoGrant, now: i64) -> String {
        let claims = Claims {
            iss: self.key.clone(),
            sub: Some("visio-agent".into()),
            nbf: now,
            exp: now.saturating_add(TOKEN_TTL_SECONDS),
            video: grant,
        };
        sign(&claims, &self.secret)
    }
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiCredentials").field("key", &self.key).field("secret", &"<redacted>").finish()
    }
}

/// The part of LiveKit's `video` grant the RoomService checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl VideoGrant {
    /// ListRooms.
    pub fn list() -> Self {
        Self { room_list: true, ..Self::default() }
    }
    /// CreateRoom, DeleteRoom.
    pub fn create() -> Self {
        Self { room_create: true, ..Self::default() }
    }
    /// Administration of one room (SendData, RemoveParticipant, ...).
    pub fn admin(room: &str) -> Self {
        Self { room_admin: true, room: Some(room.into()), ..Self::default() }
    }
}

/// The claims of a LiveKit API token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key.
    pub iss: String,
    /// The identity (informational for server API calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    #[serde(default)]
    pub video: VideoGrant,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not three base64url parts")]
    Malformed,
    #[error("token header is not HS256")]
    Algorithm,
    #[error("token signature does not match")]
    Signature,
    #[error("token claims are not valid: {0}")]
    Claims(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
}

impl TokenError {
    /// Short stable label.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::Signature => "signature",
            TokenError::Claims(_) => "claims",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
        }
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// Signs `claims` with `secret` (HS256).
pub fn sign(claims: &Claims, secret: &str) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verifies an HS256 token against `secret` at `now` (Unix seconds) and returns its claims.
pub fn verify(token: &str, secret: &str, now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
    let header_value: serde_json::Value = serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    if header_value.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(TokenError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(header.as_bytes());
    m.update(b".");
    m.update(payload.as_bytes());
    // Constant-time comparison.
    m.verify_slice(&signature).map_err(|_| TokenError::Signature)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|e| TokenError::Claims(e.to_string()))?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    if claims.nbf > now.saturating_add(LEEWAY_SECONDS) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mut m = mac("Jefe");
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn decodes_and_verifies_with_the_same_secret() {
        let creds = ApiCredentials::new("APIkey", "s3cret-s3cret-s3cret-s3cret-s3cret");
        let token = creds.token(VideoGrant::admin("weekly"), NOW);
        let claims = verify(&token, creds.secret(), NOW).unwrap();
        assert_eq!(claims.iss, "APIkey");
        assert_eq!(claims.nbf, NOW);
        assert_eq!(claims.exp, NOW + TOKEN_TTL_SECONDS, "expiry set");
        assert_eq!(claims.video, VideoGrant { room_admin: true, room: Some("weekly".into()), ..Default::default() });
        // The wire form is LiveKit's: camelCase grant keys, no false flags.
        let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["video"], serde_json::json!({"roomAdmin": true, "room": "weekly"}));
        let header = URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header, HEADER.as_bytes());
    }

    #[test]
    fn refuses_another_secret_a_tampered_payload_and_expiry() {
        let creds = ApiCredentials::new("k", "secret");
        let token = creds.token(VideoGrant::list(), NOW);
        assert_eq!(verify(&token, "other", NOW), Err(TokenError::Signature));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"iss":"k","nbf":0,"exp":99999999999,"video":{"roomCreate":true}}"#);
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), "secret", NOW), Err(TokenError::Signature));
        assert_eq!(verify(&token, "secret", NOW + TOKEN_TTL_SECONDS), Err(TokenError::Expired));
        assert!(verify(&token, "secret", NOW + TOKEN_TTL_SECONDS - 1).is_ok());
        assert_eq!(verify(&token, "secret", NOW - 60), Err(TokenError::NotYetValid));
        assert!(verify(&token, "secret", NOW - 5).is_ok(), "small skew tolerated");
    }

    #[test]
    fn refuses_other_algorithms_and_shapes() {
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"iss":"k","nbf":0,"exp":99999999999}"#);
        assert_eq!(verify(&format!("{none_header}.{payload}."), "s", NOW), Err(TokenError::Algorithm));
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(verify(bad, "s", NOW), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let creds = ApiCredentials::new("key", "hunter2");
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    proptest! {
        #[test]
        fn verify_never_panics(s in "\\PC{0,200}") {
            let _ = verify(&s, "secret", NOW);
        }

        #[test]
        fn sign_verify_round_trip(key in "[A-Za-z0-9]{1,20}", secret in "\\PC{0,64}", room in "\\PC{0,30}") {
            let creds = ApiCredentials::new(key.clone(), secret.clone());
            let claims = verify(&creds.token(VideoGrant::admin(&room), NOW), &secret, NOW).unwrap();
            prop_assert_eq!(claims.iss, key);
            prop_assert_eq!(claims.video.room, Some(room));
        }
    }
}
