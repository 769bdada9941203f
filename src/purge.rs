//! The vocabulary every stage speaks: what an item purges ([`Kind`]), how a directory purge
//! treats cached objects ([`FlushType`]), a cache-key request [`Header`], and the [`Batch`] one
//! provider call carries. It imports nothing of the crate, so any module may use it without
//! depending on another stage.

/// Whether an item purges one URL or everything under a directory prefix.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr, strum::Display,
)]
#[strum(serialize_all = "lowercase")]
pub enum Kind {
    /// A single cache key (`urls` in an event).
    Url,
    /// A directory prefix (`dirs` in an event), with wildcards where the provider has them.
    Dir,
    /// A cache-key regular expression (`regex` in an event; Wangsu only). Spends the directory
    /// quota, as Wangsu counts it.
    Regex,
}

impl Kind {
    /// The metric label and Redis key segment for this kind.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every kind, in metric-label order.
    pub const ALL: [Kind; 3] = [Kind::Url, Kind::Dir, Kind::Regex];

    /// The position of this kind in [`Kind::ALL`], for tables indexed by kind.
    pub fn index(self) -> usize {
        match self {
            Kind::Url => 0,
            Kind::Dir => 1,
            Kind::Regex => 2,
        }
    }

    /// The daily allowance this kind spends: regex purges count as directory purges.
    pub fn quota_kind(self) -> Kind {
        match self {
            Kind::Url => Kind::Url,
            Kind::Dir | Kind::Regex => Kind::Dir,
        }
    }
}

/// How a directory purge treats cached objects (Tencent `FlushType`, Wangsu `action`). The event
/// spelling is the lower-case name (`"flush"`, `"delete"`), parsed with [`str::parse`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[strum(serialize_all = "lowercase")]
pub enum FlushType {
    /// Expire only what changed at the origin (Tencent `flush`, Wangsu `invalidate`).
    #[default]
    Flush,
    /// Drop everything under the path (Tencent `delete`, Wangsu `delete`).
    Delete,
}

impl FlushType {
    /// The wire and event spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A request header that is part of the cache key (Wangsu `fileHeaders`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// One provider call's worth of interchangeable items from one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Files, directories or regex patterns: a call never mixes them.
    pub kind: Kind,
    /// Applies to directory purges (and to file purges where the provider supports it).
    pub flush_type: FlushType,
    /// Normalized cache keys (absolute URLs, or patterns for [`Kind::Regex`]), unique within the
    /// batch.
    pub items: Vec<String>,
    /// Request headers the file URLs were cached under (Wangsu `fileHeaders`); empty elsewhere.
    /// Sorted by name; items with different headers are never in one batch.
    pub headers: Vec<Header>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_are_the_wire_and_label_ones() {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, ["url", "dir", "regex"]);
        assert_eq!(Kind::Regex.to_string(), "regex");
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        assert_eq!("flush".parse(), Ok(FlushType::Flush));
        assert_eq!("delete".parse(), Ok(FlushType::Delete));
        assert!("Delete".parse::<FlushType>().is_err());
        assert_eq!(FlushType::Delete.as_str(), "delete");
    }
}
