//! Wangsu CDN Pro client: POST /cdn/purges (PROVIDERS.md §3).

use std::fmt;

use super::{Batch, Capabilities, Kind, Provider, ProviderError, PurgeFuture};
use crate::config::ProviderConfig;

/// Placeholder until the client lands: every call is refused as an auth failure.
pub struct Wangsu {
    name: String,
}

impl fmt::Debug for Wangsu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wangsu")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Wangsu {
    /// Builds the client from a validated provider config.
    pub fn new(cfg: &ProviderConfig) -> Result<Self, reqwest::Error> {
        Ok(Wangsu {
            name: cfg.name.clone(),
        })
    }
}

impl Provider for Wangsu {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            url_flush_type: false,
            wildcards: false,
            regex: false,
            headers: false,
        }
    }

    fn action(&self, _kind: Kind) -> &'static str {
        "unimplemented"
    }

    fn purge<'a>(&'a self, _batch: &'a Batch) -> PurgeFuture<'a> {
        Box::pin(async {
            Err(ProviderError::Auth {
                code: "Unimplemented".into(),
                message: "client not implemented".into(),
            })
        })
    }
}
