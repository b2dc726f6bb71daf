//! The crate's error type.

/// Why a job could not be built, planned or instantiated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A program argument is missing a value or has one that does not parse.
    #[error("bad argument --{name}: {reason}")]
    BadArgument {
        /// The argument's name, without the leading dashes.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A program argument is not of the form `--name [value]`.
    #[error("unexpected argument {0:?}: arguments have the form --name [value]")]
    UnexpectedArgument(String),
    /// Arguments the job does not know.
    #[error("unknown arguments: {}", .0.iter().map(|a| format!("--{a}")).collect::<Vec<_>>().join(", "))]
    UnknownArguments(Vec<String>),
    /// No job of that name is registered.
    #[error("unknown job {name:?}; known jobs: {}", .known.join(", "))]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The registered names, sorted.
        known: Vec<String>,
    },
    /// A job of that name is already registered.
    #[error("job {0:?} is already registered")]
    DuplicateJob(String),
    /// The graph breaks a rule (for example a forward edge between different parallelisms).
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),
    /// A vertex could not be instantiated with the given context and outputs.
    #[error("cannot instantiate vertex: {0}")]
    Instantiate(String),
    /// An error raised by the job's own build function.
    #[error("{0}")]
    Custom(String),
}

impl JobError {
    /// Shorthand for a [`JobError::BadArgument`].
    pub fn bad_argument(name: impl Into<String>, reason: impl Into<String>) -> Self {
        JobError::BadArgument {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
