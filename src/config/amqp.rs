//! `[amqp]`: validated on its own, because `publish` needs nothing else.

use std::fmt;

use super::env::literal_or_env;
use super::*;

/// `amqp.prefetch` as TOML reads it, so a parse error states the key's range (1–65535, AMQP's
/// 16-bit prefetch count) instead of the integer type that happens to hold it.
pub(super) fn prefetch_range<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    struct Range;
    impl serde::de::Visitor<'_> for Range {
        type Value = u32;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number from 1 to 65535")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u32, E> {
            u32::try_from(v)
                .ok()
                .filter(|v| (1..=u32::from(u16::MAX)).contains(v))
                .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u32, E> {
            match i64::try_from(v) {
                Ok(v) => self.visit_i64(v),
                Err(_) => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
            }
        }
    }
    d.deserialize_any(Range).map(Some)
}

impl AmqpConfig {
    /// Validates `[amqp]` alone: `publish` needs nothing else, so a publishing host needs neither
    /// the CDN credentials nor a `[[providers]]` section.
    pub fn from_raw(raw: RawAmqp) -> Result<AmqpConfig, ConfigError> {
        let amqp_url = literal_or_env("amqp.url", raw.url, raw.url_env)?
            .unwrap_or_else(|| DEFAULT_AMQP_URL.to_string());
        if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
            return Err(invalid("amqp.url", "must start with amqp:// or amqps://"));
        }
        let queue = raw.queue.unwrap_or_else(|| DEFAULT_QUEUE.into());
        let dead_letter_queue = raw
            .dead_letter_queue
            .unwrap_or_else(|| DEFAULT_DEAD_LETTER_QUEUE.into());
        let bulk_queue = raw.bulk_queue.unwrap_or_else(|| DEFAULT_BULK_QUEUE.into());
        for (key, name) in [
            ("amqp.queue", &queue),
            ("amqp.dead_letter_queue", &dead_letter_queue),
            ("amqp.bulk_queue", &bulk_queue),
        ] {
            if name.is_empty() || name.len() > 200 {
                return Err(invalid(key, "must be a queue name of 1 to 200 bytes"));
            }
        }
        if queue == dead_letter_queue {
            return Err(invalid(
                "amqp.dead_letter_queue",
                "must differ from amqp.queue, or rejected events would be consumed again",
            ));
        }
        if bulk_queue == queue || bulk_queue == dead_letter_queue {
            return Err(invalid(
                "amqp.bulk_queue",
                "must differ from amqp.queue and amqp.dead_letter_queue",
            ));
        }
        let bulk_prefetch = raw.bulk_prefetch.unwrap_or(DEFAULT_BULK_PREFETCH as u32);
        if !(1..=u16::MAX as u32).contains(&bulk_prefetch) {
            return Err(invalid("amqp.bulk_prefetch", "must be between 1 and 65535"));
        }
        let prefetch = raw.prefetch.unwrap_or(DEFAULT_PREFETCH as u32);
        if !(1..=u16::MAX as u32).contains(&prefetch) {
            return Err(invalid("amqp.prefetch", "must be between 1 and 65535"));
        }
        let dead_letter_max_bytes = super::bounds::in_range(
            "amqp.dead_letter_max_bytes",
            raw.dead_letter_max_bytes,
            DEFAULT_DEAD_LETTER_MAX_BYTES,
            crate::dead_letter::MIN_MAX_BYTES,
            crate::dead_letter::MAX_MAX_BYTES,
        )?;
        let reconnect_max_ms = super::bounds::in_range(
            "amqp.reconnect_max_ms",
            raw.reconnect_max_ms,
            DEFAULT_RECONNECT_MAX_MS,
            500,
            600_000,
        )?;
        let reconnect = Backoff::new(
            crate::amqp::RECONNECT_FIRST_PAUSE,
            std::time::Duration::from_millis(reconnect_max_ms),
        )
        .map_err(|e| invalid("amqp.reconnect_max_ms", e.to_string()))?;
        Ok(AmqpConfig {
            reconnect,
            url: Secret::new(amqp_url),
            queue,
            dead_letter_queue,
            dead_letter_max_bytes,
            prefetch: prefetch as u16,
            bulk_queue,
            bulk_prefetch: bulk_prefetch as u16,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_out_of_range_names_the_range_when_parsed() {
        for v in ["0", "-1", "65536", "\"x\""] {
            let e = toml::from_str::<RawConfig>(&format!("[amqp]\nprefetch = {v}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("from 1 to 65535"), "{v}: {e}");
        }
        let r = toml::from_str::<RawConfig>("[amqp]\nprefetch = 65535").unwrap();
        assert_eq!(r.amqp.prefetch, Some(65535));
    }
}
