//! `*_env` keys: every unset variable is found before any other check runs, and each key's
//! value comes from its literal or its `_env` twin.

use super::*;

/// Reads an environment variable for a `*_env` key.
pub(super) fn from_env(key: &str, var: &str) -> Result<String, ConfigError> {
    std::env::var(var).map_err(|_| {
        invalid(
            key,
            format!("environment variable `{var}` is not set (or not UTF-8)"),
        )
    })
}

/// Exactly one of a literal key and its `_env` twin, or neither when `required` is false.
pub(super) fn literal_or_env(
    key: &str,
    literal: Option<String>,
    env: Option<String>,
) -> Result<Option<String>, ConfigError> {
    match (literal, env) {
        (Some(_), Some(_)) => Err(invalid(
            key,
            format!("set either `{key}` or `{key}_env`, not both"),
        )),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(var)) => from_env(&format!("{key}_env"), &var).map(Some),
        (None, None) => Ok(None),
    }
}

/// Every `*_env` key whose variable is unset, reported together so a deployment learns all the
/// variables it lacks from one run instead of one per attempt.
pub(super) fn check_env_vars(raw: &RawConfig) -> Result<(), ConfigError> {
    let mut refs = vec![
        ("amqp.url_env".to_string(), &raw.amqp.url_env),
        ("redis.url_env".to_string(), &raw.redis.url_env),
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
