//! [`ConfigLoader`]: builds a [`Configuration`] from defaults, a YAML file, the environment and
//! `-D` properties, collecting every problem on the way.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::error::{ConfigError, ConfigProblem, ConfigSource, ProblemKind};
use super::keys::{env_key, env_var_name, resolve, resolve_env, suggest, Resolved, ENV_PREFIX};
use super::Configuration;

/// Loads a [`Configuration`] in layers, each overriding the ones before it:
///
/// 1. built-in defaults ([`Configuration::default`]);
/// 2. the YAML file given to [`file`](Self::file) (`--config`);
/// 3. `RFLINK__…` environment variables given to [`env`](Self::env) or
///    [`process_env`](Self::process_env);
/// 4. `key=value` properties given to [`dynamic`](Self::dynamic) (`-D`).
///
/// [`load`](Self::load) reports every problem of every layer, plus the cross-field checks of
/// [`Configuration::validate`], in one [`ConfigError`].
///
/// ```
/// use rflink_runtime::config::ConfigLoader;
///
/// let config = ConfigLoader::new()
///     .file(None)
///     .env([("RFLINK__REST__PORT", "9091")])
///     .dynamic(["taskmanager.numberOfTaskSlots=4"])
///     .load()
///     .unwrap();
/// assert_eq!(config.rest.port, 9091);
/// assert_eq!(config.taskmanager.number_of_task_slots, 4);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
    dynamic: Vec<String>,
}

/// One `key = value` from a source, before it is applied.
struct Entry {
    source: ConfigSource,
    key: String,
    /// The value's text, or (shown value, reason) when the source holds something that is not
    /// a single value (a YAML list).
    value: Result<String, (String, String)>,
    resolved: Option<Resolved>,
}

/// The configuration being built and what is known about it.
struct Build {
    config: Configuration,
    /// Which source set each key's current value.
    origins: HashMap<&'static str, ConfigSource>,
    /// Keys that had a value rejected; their cross-field checks are skipped, since the value
    /// being checked is not the one the user wrote.
    rejected: HashSet<&'static str>,
    problems: Vec<ConfigProblem>,
}

impl ConfigLoader {
    /// A loader with no file, no environment and no `-D` properties: it loads the defaults.
    pub fn new() -> Self {
        ConfigLoader::default()
    }

    /// The YAML configuration file (`--config`), if any. A file that is given must exist.
    pub fn file(mut self, path: Option<&Path>) -> Self {
        self.file = path.map(Path::to_path_buf);
        self
    }

    /// Environment variables to read (pass them explicitly so tests need not touch the process
    /// environment). Only names starting with `RFLINK__` are considered; see
    /// [`KeySpec::env_var`](super::KeySpec::env_var) for the mapping. May be called repeatedly.
    pub fn env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Reads the `RFLINK__…` variables of this process's environment. Names or values that are
    /// not Unicode are read lossily (and then usually rejected as bad values).
    pub fn process_env(self) -> Self {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.to_string_lossy().into_owned();
                name.starts_with(ENV_PREFIX)
                    .then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect();
        self.env(vars)
    }

    /// `key=value` dynamic properties (`-D`), applied in order, so a later one wins. May be
    /// called repeatedly.
    pub fn dynamic<I, S>(mut self, properties: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.dynamic
            .extend(properties.into_iter().map(|p| p.as_ref().to_string()));
        self
    }

    /// Builds the configuration, or reports every problem found in every layer at once.
    pub fn load(&self) -> Result<Configuration, ConfigError> {
        let mut build = Build {
            config: Configuration::default(),
            origins: HashMap::new(),
            rejected: HashSet::new(),
            problems: Vec::new(),
        };
        if let Some(path) = &self.file {
            let entries = file_entries(path, &mut build.problems);
            build.apply_layer(entries);
        }
        let entries = self.env_entries(&mut build.problems);
        build.apply_layer(entries);
        let entries = self.dynamic_entries(&mut build.problems);
        build.apply_layer(entries);

        for (key, message) in build.config.check() {
            if build.rejected.contains(key) {
                continue;
            }
            let source = build
                .origins
                .get(key)
                .cloned()
                .unwrap_or(ConfigSource::Default);
            build.problems.push(ConfigProblem::new(
                source,
                Some(key),
                ProblemKind::Invalid { message },
            ));
        }
        ConfigError::check(build.problems)?;
        Ok(build.config)
    }

    fn env_entries(&self, problems: &mut Vec<ConfigProblem>) -> Vec<Entry> {
        let mut vars: Vec<&(String, String)> = self
            .env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seen: HashMap<(&'static str, Option<&'static str>), &str> = HashMap::new();
        let mut entries = Vec::new();
        for (name, value) in vars {
            let source = ConfigSource::Env(name.clone());
            let key = match env_key(name) {
                Ok(key) => key,
                Err(reason) => {
                    problems.push(ConfigProblem::new(
                        source,
                        None,
                        ProblemKind::Malformed {
                            entry: name.clone(),
                            reason,
                        },
                    ));
                    continue;
                }
            };
            let resolved = resolve_env(&key);
            if let Some(r) = resolved {
                if let Some(other) = seen.insert((r.spec.key, r.alias), name) {
                    problems.push(ConfigProblem::new(
                        source,
                        Some(r.spec.key),
                        ProblemKind::Invalid {
                            message: format!("also set by {other}; set it once"),
                        },
                    ));
                    continue;
                }
            }
            entries.push(Entry {
                source,
                key,
                value: Ok(value.clone()),
                resolved,
            });
        }
        entries
    }

    fn dynamic_entries(&self, problems: &mut Vec<ConfigProblem>) -> Vec<Entry> {
        let mut entries = Vec::new();
        for property in &self.dynamic {
            match property.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    let key = key.trim();
                    entries.push(Entry {
                        source: ConfigSource::Dynamic,
                        key: key.to_string(),
                        value: Ok(value.to_string()),
                        resolved: resolve(key),
                    });
                }
                _ => problems.push(ConfigProblem::new(
                    ConfigSource::Dynamic,
                    None,
                    ProblemKind::Malformed {
                        entry: property.clone(),
                        reason: "expected key=value".into(),
                    },
                )),
            }
        }
        entries
    }
}

impl Build {
    /// Applies one layer's entries. Unknown keys and bad values become problems; within the
    /// layer a deprecated alias never overrides its key, whatever the order.
    fn apply_layer(&mut self, entries: Vec<Entry>) {
        let mut found: Vec<(usize, ConfigProblem)> = Vec::new();
        let mut known: Vec<(usize, Entry, Resolved)> = Vec::new();
        for (index, entry) in entries.into_iter().enumerate() {
            match entry.resolved {
                Some(resolved) => known.push((index, entry, resolved)),
                None => {
                    let suggestion = suggest(&entry.key).map(|key| match entry.source {
                        ConfigSource::Env(_) => env_var_name(key),
                        _ => key.to_string(),
                    });
                    found.push((
                        index,
                        ConfigProblem::new(
                            entry.source,
                            Some(&entry.key),
                            ProblemKind::UnknownKey { suggestion },
                        ),
                    ));
                }
            }
        }
        // Stable: aliases first, then keys, each in the order given.
        known.sort_by_key(|(_, _, resolved)| resolved.alias.is_none());
        for (index, entry, resolved) in known {
            let spec = resolved.spec;
            if let Some(alias) = resolved.alias {
                tracing::warn!(
                    source = %entry.source,
                    key = alias,
                    replacement = spec.key,
                    "deprecated configuration key; use the replacement"
                );
            }
            let outcome = match &entry.value {
                Ok(text) => spec
                    .apply(&mut self.config, text)
                    .map_err(|reason| (text.clone(), reason)),
                Err(shown_and_reason) => Err(shown_and_reason.clone()),
            };
            match outcome {
                Ok(()) => {
                    self.origins.insert(spec.key, entry.source);
                }
                Err((value, reason)) => {
                    self.rejected.insert(spec.key);
                    found.push((
                        index,
                        ConfigProblem::new(
                            entry.source,
                            Some(&entry.key),
                            ProblemKind::BadValue {
                                value,
                                expected: spec.kind,
                                reason,
                            },
                        ),
                    ));
                }
            }
        }
        found.sort_by_key(|(index, _)| *index);
        self.problems
            .extend(found.into_iter().map(|(_, problem)| problem));
    }
}

/// Reads and flattens the YAML file; I/O and syntax problems go to `problems`.
fn file_entries(path: &Path, problems: &mut Vec<ConfigProblem>) -> Vec<Entry> {
    let source = ConfigSource::File(path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(ConfigProblem::new(
                source,
                None,
                ProblemKind::UnreadableFile {
                    message: e.to_string(),
                },
            ));
            return Vec::new();
        }
    };
    let (flat, yaml_problems) = flatten_yaml(&text);
    problems.extend(
        yaml_problems
            .into_iter()
            .map(|(key, message)| ConfigProblem::new(source.clone(), key.as_deref(), message)),
    );
    flat.into_iter()
        .map(|(key, value)| Entry {
            source: source.clone(),
            resolved: resolve(&key),
            key,
            value,
        })
        .collect()
}

type FlatValue = Result<String, (String, String)>;
/// A problem found while flattening, with the key concerned if there is one.
type FlatProblem = (Option<String>, ProblemKind);

/// Flattens a YAML document into dotted keys: `taskmanager: {numberOfTaskSlots: 4}` and
/// `taskmanager.numberOfTaskSlots: 4` both give `("taskmanager.numberOfTaskSlots", "4")`.
/// Returns the entries in document order and the problems (with the key, if any).
pub(crate) fn flatten_yaml(text: &str) -> (Vec<(String, FlatValue)>, Vec<FlatProblem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    match serde_yaml_ng::from_str::<Value>(text) {
        Err(e) => problems.push((
            None,
            ProblemKind::Yaml {
                message: e.to_string(),
            },
        )),
        Ok(Value::Null) => {}
        Ok(Value::Mapping(mapping)) => flatten_mapping("", &mapping, &mut entries, &mut problems),
        Ok(_) => problems.push((
            None,
            ProblemKind::Yaml {
                message: "the document must be a mapping of keys to values".into(),
            },
        )),
    }
    let mut seen = HashSet::new();
    entries.retain(|(key, _): &(String, FlatValue)| {
        let first = seen.insert(key.clone());
        if !first {
            problems.push((
                Some(key.clone()),
                ProblemKind::Invalid {
                    message: "set more than once in this file (flat and nested?)".into(),
                },
            ));
        }
        first
    });
    (entries, problems)
}

fn flatten_mapping(
    prefix: &str,
    mapping: &serde_yaml_ng::Mapping,
    entries: &mut Vec<(String, FlatValue)>,
    problems: &mut Vec<FlatProblem>,
) {
    for (key, value) in mapping {
        let Some(segment) = scalar_text(key) else {
            problems.push((
                (!prefix.is_empty()).then(|| prefix.to_string()),
                ProblemKind::Yaml {
                    message: "keys must be strings".into(),
                },
            ));
            continue;
        };
        let key = if prefix.is_empty() {
            segment
        } else {
            format!("{prefix}.{segment}")
        };
        match value {
            Value::Mapping(nested) => flatten_mapping(&key, nested, entries, problems),
            Value::Null => entries.push((key, Ok(String::new()))),
            Value::Sequence(_) => entries.push((
                key,
                Err(("[…]".into(), "expected a single value, found a list".into())),
            )),
            Value::Tagged(tagged) => entries.push((
                key,
                Err((
                    tagged.tag.to_string(),
                    "expected a plain value, found a tagged one".into(),
                )),
            )),
            scalar => {
                let text = scalar_text(scalar).unwrap_or_default();
                entries.push((key, Ok(text)));
            }
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> Vec<(String, String)> {
        let (entries, problems) = flatten_yaml(text);
        assert!(problems.is_empty(), "{problems:?}");
        entries
            .into_iter()
            .map(|(k, v)| (k, v.expect("scalar")))
            .collect()
    }

    #[test]
    fn nested_and_flat_yaml_flatten_alike() {
        let nested = flat("taskmanager:\n  numberOfTaskSlots: 4\n  rpc:\n    port: 6200\n");
        let flat_form = flat("taskmanager.numberOfTaskSlots: 4\ntaskmanager.rpc.port: 6200\n");
        let mixed = flat("taskmanager:\n  numberOfTaskSlots: 4\n  rpc.port: 6200\n");
        assert_eq!(nested, flat_form);
        assert_eq!(mixed, flat_form);
        assert_eq!(
            flat_form,
            vec![
                ("taskmanager.numberOfTaskSlots".to_string(), "4".to_string()),
                ("taskmanager.rpc.port".to_string(), "6200".to_string()),
            ]
        );
    }

    #[test]
    fn scalars_become_text() {
        let entries = flat("a: true\nb: 1.5\nc: 10 s\nd:\ne: \"\"\n");
        let values: Vec<&str> = entries.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["true", "1.5", "10 s", "", ""]);
    }

    #[test]
    fn empty_document_is_empty() {
        assert!(flat("").is_empty());
        assert!(flat("# only a comment\n").is_empty());
    }

    #[test]
    fn yaml_problems() {
        let (_, problems) = flatten_yaml("rest.port: [1\n");
        assert!(matches!(problems[..], [(None, ProblemKind::Yaml { .. })]));
        let (_, problems) = flatten_yaml("- a\n- b\n");
        assert!(matches!(problems[..], [(None, ProblemKind::Yaml { .. })]));
        let (entries, problems) = flatten_yaml("rest.port: 1\nrest:\n  port: 2\n");
        assert_eq!(entries.len(), 1);
        assert!(matches!(
            &problems[..],
            [(Some(key), ProblemKind::Invalid { .. })] if key == "rest.port"
        ));
        let (entries, _) = flatten_yaml("rest.port: [1, 2]\n");
        assert!(entries[0].1.is_err());
    }
}
