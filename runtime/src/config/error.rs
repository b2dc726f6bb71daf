//! Configuration errors: every problem found in one load, each naming where it came from.

use std::fmt;
use std::path::PathBuf;

use super::keys::ValueKind;

/// Where a configuration value (or a problem with one) came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The built-in default.
    Default,
    /// Set in code on a [`Configuration`](super::Configuration) that was then validated directly.
    Code,
    /// The configuration file passed with `--config`.
    File(PathBuf),
    /// An environment variable; holds its name (`RFLINK__REST__PORT`).
    Env(String),
    /// A `-D key=value` dynamic property.
    Dynamic,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Default => f.write_str("default"),
            ConfigSource::Code => f.write_str("configuration"),
            ConfigSource::File(path) => write!(f, "file {}", path.display()),
            ConfigSource::Env(name) => write!(f, "env {name}"),
            ConfigSource::Dynamic => f.write_str("-D"),
        }
    }
}

/// What is wrong, for one [`ConfigProblem`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The key is not one rflink knows. `suggestion` is the closest known key, when it is close.
    UnknownKey {
        /// The closest known key (as an env var name for env problems), if close enough.
        suggestion: Option<String>,
    },
    /// The value does not parse as the key's kind.
    BadValue {
        /// The value as given.
        value: String,
        /// What the key takes.
        expected: ValueKind,
        /// Why parsing failed.
        reason: String,
    },
    /// An entry that is not `key=value` (`-D`) or not a well-formed `RFLINK__` name (env).
    Malformed {
        /// The entry as given.
        entry: String,
        /// What shape was expected.
        reason: String,
    },
    /// The configuration file is not valid YAML, or not a mapping of keys to values.
    Yaml {
        /// The parser's message, with the position.
        message: String,
    },
    /// The configuration file could not be read.
    UnreadableFile {
        /// The I/O error.
        message: String,
    },
    /// A value parses but is not allowed, alone or together with another key (from
    /// [`Configuration::validate`](super::Configuration::validate)).
    Invalid {
        /// What rule it breaks.
        message: String,
    },
}

/// One problem found while loading or validating a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the offending value came from.
    pub source: ConfigSource,
    /// The configuration key concerned, when there is one, as written (a deprecated alias stays
    /// as given; keys from environment variables are shown in their dotted form).
    pub key: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
}

impl ConfigProblem {
    pub(crate) fn new(source: ConfigSource, key: Option<&str>, kind: ProblemKind) -> Self {
        ConfigProblem {
            source,
            key: key.map(str::to_string),
            kind,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.source)?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        match &self.kind {
            ProblemKind::UnknownKey { suggestion: None } => f.write_str("unknown key"),
            ProblemKind::UnknownKey {
                suggestion: Some(s),
            } => write!(f, "unknown key (did you mean {s}?)"),
            ProblemKind::BadValue {
                value,
                expected,
                reason,
            } => write!(f, "bad value {value:?}: {reason}; expected {expected}"),
            ProblemKind::Malformed { entry, reason } => {
                write!(f, "malformed entry {entry:?}: {reason}")
            }
            ProblemKind::Yaml { message } => write!(f, "YAML error: {message}"),
            ProblemKind::UnreadableFile { message } => write!(f, "cannot read: {message}"),
            ProblemKind::Invalid { message } => f.write_str(message),
        }
    }
}

/// Every problem found in one configuration load, in the order found: file, environment, `-D`,
/// then cross-field validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct ConfigError {
    /// The problems, never empty.
    pub problems: Vec<ConfigProblem>,
}

fn render(problems: &[ConfigProblem]) -> String {
    let mut out = format!(
        "invalid configuration ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems {
        out.push_str("\n  ");
        out.push_str(&problem.to_string());
    }
    out
}

impl ConfigError {
    /// `Ok(())` when `problems` is empty, otherwise the error carrying them.
    pub(crate) fn check(problems: Vec<ConfigProblem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_one_problem_per_line() {
        let error = ConfigError {
            problems: vec![
                ConfigProblem::new(
                    ConfigSource::File("conf/rflink.yaml".into()),
                    Some("heartbeat.intervall"),
                    ProblemKind::UnknownKey {
                        suggestion: Some("heartbeat.interval".into()),
                    },
                ),
                ConfigProblem::new(
                    ConfigSource::Env("RFLINK__REST__PORT".into()),
                    Some("rest.port"),
                    ProblemKind::BadValue {
                        value: "99999".into(),
                        expected: ValueKind::Port,
                        reason: "out of range".into(),
                    },
                ),
                ConfigProblem::new(
                    ConfigSource::Dynamic,
                    None,
                    ProblemKind::Malformed {
                        entry: "rest.port".into(),
                        reason: "expected key=value".into(),
                    },
                ),
            ],
        };
        let text = error.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], "invalid configuration (3 problems):");
        assert_eq!(
            lines[1],
            "  file conf/rflink.yaml: heartbeat.intervall: unknown key (did you mean heartbeat.interval?)"
        );
        assert!(lines[2].starts_with("  env RFLINK__REST__PORT: rest.port: bad value \"99999\""));
        assert_eq!(
            lines[3],
            "  -D: malformed entry \"rest.port\": expected key=value"
        );
    }
}
