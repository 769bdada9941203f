//! `*_env` keys: every unset variable is found before any other check runs.

use super::validate::from_env;
use super::*;

/// Every `*_env` key whose variable is unset, reported together so a deployment learns all the
/// variables it lacks from one run instead of one per attempt.
pub(super) fn check_env_vars(raw: &RawConfig) -> Result<(), ConfigError> {
    let mut refs = vec![
        ("amqp.url_env".to_string(), &raw.amqp.url_env),
        ("redis.url_env".to_string(), &raw.redis.url_env),
        (
            "http.ingest_tokens_env".to_string(),
            &raw.http.ingest_tokens_env,
        ),
    ];
    for (i, p) in raw.providers.iter().enumerate() {
        for (key, var) in [
            ("secret_id_env", &p.secret_id_env),
            ("secret_key_env", &p.secret_key_env),
            ("username_env", &p.username_env),
            ("api_key_env", &p.api_key_env),
        ] {
            refs.push((format!("providers[{i}].{key}"), var));
        }
    }
    let mut missing: Vec<(String, &str)> = refs
        .into_iter()
        .filter_map(|(key, var)| var.as_deref().map(|v| (key, v)))
        .filter(|(_, var)| std::env::var(var).is_err())
        .collect();
    match missing.len() {
        0 => Ok(()),
        1 => {
            let (key, var) = missing.remove(0);
            from_env(&key, var).map(|_| ())
        }
        _ => Err(ConfigError::MissingEnv(
            missing
                .into_iter()
                .map(|(key, var)| format!("`{var}` ({key})"))
                .collect(),
        )),
    }
}
