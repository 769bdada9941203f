//! First-stage parse errors, built from the error's position and message only. toml's own
//! `Display` quotes the offending source line, which for `secret_key = "...` would print the
//! secret; these messages give line, column and the problem, never the text of the file.

use std::path::Path;

use super::ConfigError;

/// A parse error of `text` (the contents of `path`) as a [`ConfigError::Parse`] without any
/// source text: `line L, column C: <problem>`.
pub(super) fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let problem = without_values(e.message().trim());
    let message = match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: {problem}")
        }
        None => problem.to_string(),
    };
    ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    }
}

/// `problem` without the value serde quotes in a type or value mismatch (`invalid type: string
/// "hunter2", expected u32` becomes `invalid type: string, expected u32`): a secret written under
/// the wrong key must not be echoed either. Key names (`unknown field `x``) are kept.
fn without_values(problem: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(start) = problem.find(lead) {
            let rest = &problem[start + lead.len()..];
            // The last one: a quoted value may itself contain ", expected".
            let end = rest.rfind(", expected").unwrap_or(rest.len());
            let kind = rest[..end].split(['`', '"']).next().unwrap_or("").trim();
            return format!("{}{lead}{kind}{}", &problem[..start], &rest[end..]);
        }
    }
    problem.to_string()
}

/// 1-based line and column (in characters) of byte `offset` in `text`; an offset past the end
/// or inside a character counts from the nearest boundary before it.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-Value-never-shown";

    /// The error `read_raw` gives for a file holding `text`.
    fn message(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::read_raw(&path).unwrap_err().to_string()
    }

    #[test]
    fn an_unterminated_secret_is_located_but_not_printed() {
        let text = format!("[[providers]]\nname = \"a\"\nsecret_key = \"{SECRET}\n");
        let m = message(&text);
        assert!(!m.contains(SECRET), "{m}");
        assert!(!m.contains("s3cr3t"), "{m}");
        assert!(m.contains("line 3"), "{m}");
    }

    #[test]
    fn a_misspelled_secret_key_is_named_without_its_value() {
        let text = format!("[[providers]]\nname = \"a\"\nsecret_kye = \"{SECRET}\"\n");
        let m = message(&text);
        assert!(!m.contains(SECRET), "{m}");
        assert!(m.contains("secret_kye"), "{m}");
        assert!(m.contains("line 3, column 1"), "{m}");
        assert!(m.contains("secret_key"), "expected keys are listed: {m}");
    }

    #[test]
    fn values_in_type_mismatches_are_not_echoed() {
        let m = message(&format!("[amqp]\nprefetch = \"{SECRET}, expected x\"\n"));
        assert!(!m.contains("s3cr3t"), "{m}");
        assert!(
            m.ends_with(
                "line 2, column 12: invalid type: string, expected a whole number from 1 to 65535"
            ),
            "{m}"
        );
        let m = message("[[providers]]\nsecret_key = 123456789\n");
        assert!(!m.contains("123456789"), "{m}");
        assert!(
            m.contains("invalid type: integer, expected a string"),
            "{m}"
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("新\nx", 1), (1, 1));
        assert_eq!(line_column("a", 99), (1, 2));
    }
}
