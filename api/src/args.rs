//! Program arguments of a job: [`JobArgs`].

use std::str::FromStr;

use crate::JobError;

/// A job's program arguments, `--name value` pairs and bare `--flag`s, as Flink's
/// `ParameterTool.fromArgs`.
///
/// `--name=value` is accepted too. A token that follows `--name` and does not start with `--` is
/// its value (so `--offset -5` works); a `--name` followed by another `--name` or by the end is a
/// flag without a value. A name may repeat (`--input a --input b`). Any other token (a
/// positional argument, a bare `--`) is kept aside and rejected by [`JobArgs::expect_only`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobArgs {
    raw: Vec<String>,
    entries: Vec<(String, Option<String>)>,
    unexpected: Vec<String>,
}

impl JobArgs {
    /// Parses `args` (without the program name). Never fails: tokens that are not
    /// `--name [value]` are kept in [`JobArgs::unexpected`].
    pub fn from_args(args: Vec<String>) -> Self {
        let mut entries: Vec<(String, Option<String>)> = Vec::new();
        let mut unexpected = Vec::new();
        let mut iter = args.iter().peekable();
        while let Some(token) = iter.next() {
            let Some(body) = token.strip_prefix("--") else {
                unexpected.push(token.clone());
                continue;
            };
            if let Some((name, value)) = body.split_once('=') {
                if name.is_empty() {
                    unexpected.push(token.clone());
                } else {
                    entries.push((name.to_owned(), Some(value.to_owned())));
                }
                continue;
            }
            if body.is_empty() {
                unexpected.push(token.clone());
                continue;
            }
            let value = match iter.peek() {
                Some(next) if !next.starts_with("--") => iter.next().cloned(),
                _ => None,
            };
            entries.push((body.to_owned(), value));
        }
        JobArgs {
            raw: args,
            entries,
            unexpected,
        }
    }

    /// Parses string slices; convenient in tests.
    pub fn from_strs(args: &[&str]) -> Self {
        Self::from_args(args.iter().map(|s| (*s).to_owned()).collect())
    }

    /// Tokens that are not of the form `--name [value]`, in order.
    pub fn unexpected(&self) -> &[String] {
        &self.unexpected
    }

    /// The value of the last `--name value`; `None` if absent or given only as a flag.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value given for `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// True when `--name` appears, with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Parses the value of `name`; `Ok(None)` when the argument is absent.
    ///
    /// # Errors
    /// [`JobError::BadArgument`] when the argument is a bare flag or its value does not parse.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, JobError>
    where
        T::Err: std::fmt::Display,
    {
        if !self.has(name) {
            return Ok(None);
        }
        let Some(value) = self.get(name) else {
            return Err(JobError::bad_argument(name, "missing value"));
        };
        value
            .parse::<T>()
            .map(Some)
            .map_err(|e| JobError::bad_argument(name, format!("cannot parse {value:?}: {e}")))
    }

    /// Parses the value of `name`, or returns `default` when it is absent.
    ///
    /// # Errors
    /// As [`JobArgs::parse`].
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, JobError>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.parse(name)?.unwrap_or(default))
    }

    /// The arguments as given.
    pub fn args(&self) -> &[String] {
        &self.raw
    }

    /// The argument names, in order of appearance, without duplicates.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in &self.entries {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }

    /// Checks that only the `allowed` names were given.
    ///
    /// # Errors
    /// [`JobError::UnexpectedArgument`] for the first token that is not `--name [value]`, else
    /// [`JobError::UnknownArguments`] listing every name not allowed.
    pub fn expect_only(&self, allowed: &[&str]) -> Result<(), JobError> {
        if let Some(token) = self.unexpected.first() {
            return Err(JobError::UnexpectedArgument(token.clone()));
        }
        let unknown: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !allowed.contains(n))
            .map(str::to_owned)
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(JobError::UnknownArguments(unknown))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_flags_and_repeats() {
        let args = JobArgs::from_strs(&[
            "--input",
            "a.txt",
            "--input",
            "b.txt",
            "--flag",
            "--output",
            "o",
            "--parallelism=2",
            "--offset",
            "-5",
        ]);
        assert_eq!(args.get("input"), Some("b.txt"));
        assert_eq!(args.get_all("input"), vec!["a.txt", "b.txt"]);
        assert!(args.has("flag"));
        assert_eq!(args.get("flag"), None);
        assert_eq!(args.get("output"), Some("o"));
        assert_eq!(args.parse::<u32>("parallelism"), Ok(Some(2)));
        assert_eq!(args.parse::<i64>("offset"), Ok(Some(-5)));
        assert_eq!(args.parse::<u32>("missing"), Ok(None));
        assert_eq!(args.parse_or::<u32>("missing", 7), Ok(7));
        assert_eq!(args.args().len(), 10);
        assert_eq!(
            args.names(),
            vec!["input", "flag", "output", "parallelism", "offset"]
        );
    }

    #[test]
    fn reports_bad_and_unknown_arguments() {
        let args = JobArgs::from_strs(&["--p", "x", "--flag"]);
        assert!(matches!(
            args.parse::<u32>("p"),
            Err(JobError::BadArgument { ref name, .. }) if name == "p"
        ));
        assert!(matches!(
            args.parse::<u32>("flag"),
            Err(JobError::BadArgument { .. })
        ));
        assert_eq!(
            args.expect_only(&["p"]),
            Err(JobError::UnknownArguments(vec!["flag".into()]))
        );
        assert_eq!(args.expect_only(&["p", "flag"]), Ok(()));
        let positional = JobArgs::from_strs(&["--a", "1", "2", "--", "--=x"]);
        assert_eq!(positional.unexpected(), ["2", "--", "--=x"]);
        assert_eq!(positional.get("a"), Some("1"));
        assert_eq!(
            positional.expect_only(&["a"]),
            Err(JobError::UnexpectedArgument("2".into()))
        );
        assert_eq!(JobArgs::from_strs(&[]).args().len(), 0);
    }
}
