//! HTTP ingest for publishers that cannot speak AMQP (CMS webhooks): `POST /v1/purges` on
//! `http.ingest_listen` (CONTRACT §6; the OpenAPI document is `deploy/openapi/ingest.yaml`).
//!
//! A request is answered 202 only after the broker confirmed the publish of its event to the
//! purge queue, so nothing the caller was told is accepted can be lost. The event is checked
//! with the consumer's own decoding and validation first: undecodable, or without one valid
//! item, is 400 with the problems listed; an event with some valid items is published whole, and
//! the consumer dead-letters its bad items exactly as for an AMQP publisher.
//!
//! Tokens come from the environment variable named by `http.ingest_tokens_env` as
//! `name:token` pairs. A presented token is compared with every configured one in constant time
//! (over SHA-256 digests, so lengths do not show either); the name is logged, the token never.

mod server;

use std::fmt;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use server::{IngestParts, serve};

/// Shortest token accepted: a guessable token would defeat the check.
pub const MIN_TOKEN_LEN: usize = 16;
/// Most tokens accepted (each request compares against all of them).
pub const MAX_TOKENS: usize = 100;

/// The ingest's settings, owned here; `config` parses the TOML keys and builds them.
#[derive(Clone, Default)]
pub struct Settings {
    /// Where to listen; `None`: no ingest (the default).
    pub listen: Option<SocketAddr>,
    /// The accepted tokens.
    pub tokens: Vec<Token>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("tokens", &names)
            .finish()
    }
}

/// One caller's token: its name (logged, in the audit trail) and the SHA-256 of its secret.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
}

/// A settings mistake: the key and the problem (never a token).
#[derive(Debug, PartialEq, Eq)]
pub struct SettingsError {
    pub key: &'static str,
    pub reason: String,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl Settings {
    /// Builds the settings from `http.ingest_listen` and the value of the variable named by
    /// `http.ingest_tokens_env` (`tokens`: `None` when the key is not set).
    pub fn new(listen: Option<&str>, tokens: Option<&str>) -> Result<Settings, SettingsError> {
        let Some(listen) = listen else {
            return Ok(Settings::default());
        };
        let listen = listen.parse().map_err(|_| SettingsError {
            key: "http.ingest_listen",
            reason: format!("`{listen}` is not an IP:port address such as 0.0.0.0:8080"),
        })?;
        let tokens = tokens.ok_or_else(|| SettingsError {
            key: "http.ingest_tokens_env",
            reason: "must name the environment variable holding the ingest tokens (name:token,...) when http.ingest_listen is set".into(),
        })?;
        Ok(Settings {
            listen: Some(listen),
            tokens: parse_tokens(tokens)?,
        })
    }

    /// The name of the token `presented` matches. Every configured token is compared, in
    /// constant time each, whatever matches.
    pub fn authenticate(&self, presented: &str) -> Option<&str> {
        let d = digest(presented.as_bytes());
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&d)) {
                found = Some(t.name.as_str());
            }
        }
        found
    }
}

/// `name:token,name:token`: names of letters, digits, `-`, `_`, `.`; tokens at least
/// [`MIN_TOKEN_LEN`] characters. Errors never quote a token.
pub fn parse_tokens(s: &str) -> Result<Vec<Token>, SettingsError> {
    let bad = |reason: String| SettingsError {
        key: "http.ingest_tokens_env",
        reason,
    };
    let mut out: Vec<Token> = Vec::new();
    for (i, pair) in s.split(',').map(str::trim).enumerate() {
        if pair.is_empty() {
            continue;
        }
        let Some((name, token)) = pair.split_once(':') else {
            return Err(bad(format!("entry {} is not `name:token`", i + 1)));
        };
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(bad(format!(
                "entry {}: the name must be 1 to 64 letters, digits, `-`, `_` or `.`",
                i + 1
            )));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad(format!(
                "the token of `{name}` is shorter than {MIN_TOKEN_LEN} characters"
            )));
        }
        if out.iter().any(|t| t.name == name) {
            return Err(bad(format!("the name `{name}` is used twice")));
        }
        out.push(Token {
            name: name.to_string(),
            digest: digest(token.as_bytes()),
        });
    }
    if out.is_empty() {
        return Err(bad("the variable holds no `name:token` pair".into()));
    }
    if out.len() > MAX_TOKENS {
        return Err(bad(format!("more than {MAX_TOKENS} tokens")));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_authenticate_by_name() {
        let s = Settings::new(
            Some("127.0.0.1:0"),
            Some("wordpress:aaaaaaaaaaaaaaaa1, drupal:bbbbbbbbbbbbbbbb2"),
        )
        .unwrap();
        assert_eq!(s.authenticate("aaaaaaaaaaaaaaaa1"), Some("wordpress"));
        assert_eq!(s.authenticate("bbbbbbbbbbbbbbbb2"), Some("drupal"));
        assert_eq!(s.authenticate("aaaaaaaaaaaaaaaa"), None);
        assert_eq!(s.authenticate(""), None);
        assert!(
            !format!("{s:?}").contains("aaaa"),
            "Debug never shows a token"
        );
    }

    #[test]
    fn bad_token_lists_name_the_problem_without_the_token() {
        for (v, want) in [
            ("", "no `name:token`"),
            ("justatoken0123456789", "not `name:token`"),
            ("wp:short", "shorter than 16"),
            ("w p:aaaaaaaaaaaaaaaa", "the name must be"),
            ("a:aaaaaaaaaaaaaaaa,a:bbbbbbbbbbbbbbbb", "used twice"),
        ] {
            let e = parse_tokens(v).err().unwrap();
            assert!(e.reason.contains(want), "{v}: {}", e.reason);
            assert!(!e.reason.contains("short") || want.contains("shorter"));
            assert!(!e.reason.contains("aaaaaaaaaaaaaaaa"), "{}", e.reason);
        }
        let e = Settings::new(Some("127.0.0.1:8080"), None).unwrap_err();
        assert_eq!(e.key, "http.ingest_tokens_env");
        let e = Settings::new(Some("nope"), Some("a:aaaaaaaaaaaaaaaa")).unwrap_err();
        assert_eq!(e.key, "http.ingest_listen");
        assert!(Settings::new(None, None).unwrap().listen.is_none());
    }
}
