use super::*;
use crate::provider::Kind;

#[test]
fn every_contract_metric_is_exported() {
    let m = Metrics::new();
    let p = m.provider("p", &[Kind::Url, Kind::Dir], |_| "PurgeUrlsCache");
    assert!(
        p.kind(Kind::Regex).is_none(),
        "no regex series for a provider without it"
    );
    m.batch_size.with_label_values(&["p", "url"]).observe(3.0);
    m.event_to_submit
        .with_label_values(&["p", "url", "bulk"])
        .observe(0.1);
    m.api_duration
        .with_label_values(&["p", "PurgeUrlsCache"])
        .observe(0.1);
    m.quota_used.with_label_values(&["p", "url"]).set(1);
    m.quota_limit.with_label_values(&["p", "url"]).set(1);
    m.queue_messages
        .with_label_values(&[QUEUE_DEAD_LETTER])
        .set(2);
    m.quota_reset.with_label_values(&["p", "dir"]).set(3600.0);
    let text = m.render();
    for name in [
        "purge_events_total",
        "purge_items_total",
        "purge_api_requests_total",
        "purge_api_request_duration_seconds_bucket",
        "purge_batch_size_bucket",
        "purge_event_to_submit_seconds_bucket",
        "purge_pending_items",
        "purge_quota_used",
        "purge_quota_limit",
        "purge_queue_messages{queue=\"dead_letter\"} 2",
        "purge_oldest_pending_seconds{kind=\"url\",provider=\"p\"} 0",
        "purge_quota_reset_seconds{kind=\"dir\",provider=\"p\"} 3600",
        "purge_ready{dependency=\"amqp\"} 0",
        "purge_escalations_total{provider=\"p\"} 0",
        "purge_quota_reserve_left{kind=\"url\",provider=\"p\"}",
        "purge_items_total{kind=\"url\",outcome=\"submitted\",priority=\"bulk\",provider=\"p\"} 0",
        "purge_ready{dependency=\"redis\"} 0",
        "purge_ready{dependency=\"providers\"} 1",
        "purge_build_info{version=",
    ] {
        assert!(text.contains(name), "missing {name}");
    }
}
