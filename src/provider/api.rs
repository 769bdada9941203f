//! The API families: [`ProviderKind`] names one, [`ApiSettings`] holds the settings only it has,
//! and [`build`] makes its client from an [`Account`] and those settings.

use std::sync::Arc;

use super::tencent_v2::{self, TencentV2};
use super::tencent_v3::{self, TencentV3};
use super::wangsu::{self, Wangsu};
use super::{Account, Capabilities, Limits, Provider};

/// Which API family a provider speaks. The config spelling (`tencent-v3`) is what
/// [`ProviderKind::as_str`] gives and [`str::parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
pub enum ProviderKind {
    /// Tencent Cloud API 3.0 (PurgeUrlsCache, PurgePathCache), TC3-HMAC-SHA256.
    #[strum(serialize = "tencent-v3")]
    TencentV3,
    /// Tencent Cloud legacy API 2.0 (RefreshCdnUrl, RefreshCdnDir), HmacSHA1/HmacSHA256.
    #[strum(serialize = "tencent-v2")]
    TencentV2,
    /// Wangsu (ChinaNetCenter) CDN Pro, `POST /cdn/purges`.
    #[strum(serialize = "wangsu")]
    Wangsu,
}

impl ProviderKind {
    /// Every kind's config spelling, for error messages.
    pub const SUPPORTED: &'static str = "tencent-v3, tencent-v2, wangsu";

    /// What the API family takes: routing and event validation ask this, never the kind.
    pub fn capabilities(self) -> Capabilities {
        match self {
            ProviderKind::TencentV3 => tencent_v3::CAPABILITIES,
            ProviderKind::TencentV2 => tencent_v2::CAPABILITIES,
            ProviderKind::Wangsu => wangsu::CAPABILITIES,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Published limits of this API family, used for unset keys.
    pub fn defaults(self) -> Limits {
        match self {
            ProviderKind::TencentV3 => tencent_v3::DEFAULTS,
            ProviderKind::TencentV2 => tencent_v2::DEFAULTS,
            ProviderKind::Wangsu => wangsu::DEFAULTS,
        }
    }
}

/// The settings only one API family has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSettings {
    TencentV3(tencent_v3::Settings),
    TencentV2(tencent_v2::Settings),
    Wangsu(wangsu::Settings),
}

impl ApiSettings {
    /// The family these settings are for.
    pub fn kind(&self) -> ProviderKind {
        match self {
            ApiSettings::TencentV3(_) => ProviderKind::TencentV3,
            ApiSettings::TencentV2(_) => ProviderKind::TencentV2,
            ApiSettings::Wangsu(_) => ProviderKind::Wangsu,
        }
    }
}

/// The client of `account` for the API family of `settings`.
pub fn build(
    account: &Account,
    settings: &ApiSettings,
) -> Result<Arc<dyn Provider>, reqwest::Error> {
    Ok(match settings {
        ApiSettings::TencentV3(s) => Arc::new(TencentV3::new(account, s)?),
        ApiSettings::TencentV2(s) => Arc::new(TencentV2::new(account, s)?),
        ApiSettings::Wangsu(s) => Arc::new(Wangsu::new(account, s)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_and_write_their_config_spelling() {
        for kind in [
            ProviderKind::TencentV3,
            ProviderKind::TencentV2,
            ProviderKind::Wangsu,
        ] {
            assert_eq!(kind.as_str().parse(), Ok(kind));
            assert!(ProviderKind::SUPPORTED.contains(kind.as_str()));
        }
        assert_eq!(ProviderKind::TencentV3.as_str(), "tencent-v3");
        assert!("Tencent-V3".parse::<ProviderKind>().is_err());
    }
}
