//! `*_env` keys: every unset variable is found before any other check runs.

use super::validate::from_env;
use super::*;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[providers]]
        name = "tencent-main"
        kind = "tencent-v3"
        secret_id = "AKIDtest"
        secret_key = "hunter2"
        # extra
          [[providers.domains]]
          host = "www.example.com"
    "#;

    fn raw(toml_text: &str) -> RawConfig {
        toml::from_str(toml_text).expect("test TOML parses")
    }

    #[test]
    fn every_unset_env_var_is_reported_at_once() {
        let two = format!(
            "[amqp]\nurl_env = \"PURGE_WORKER_TEST_UNSET_AMQP\"\n{}",
            MINIMAL.replace(
                "# extra",
                "secret_key_env = \"PURGE_WORKER_TEST_UNSET_KEY\"",
            )
        )
        .replace("secret_key = \"hunter2\"", "");
        let e = Config::from_raw(raw(&two)).unwrap_err().to_string();
        for part in [
            "PURGE_WORKER_TEST_UNSET_AMQP",
            "amqp.url_env",
            "PURGE_WORKER_TEST_UNSET_KEY",
            "providers[0].secret_key_env",
        ] {
            assert!(e.contains(part), "{part}: {e}");
        }
        let one = MINIMAL
            .replace(
                "# extra",
                "secret_key_env = \"PURGE_WORKER_TEST_UNSET_KEY\"",
            )
            .replace("secret_key = \"hunter2\"", "");
        let e = Config::from_raw(raw(&one)).unwrap_err().to_string();
        assert!(
            e.contains("config key `providers[0].secret_key_env`"),
            "{e}"
        );
    }
}
