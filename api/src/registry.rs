//! [`JobRegistry`]: the jobs compiled into a binary, by name.

use std::collections::BTreeMap;

use crate::{JobArgs, JobError, StreamExecutionEnvironment, StreamGraph};

/// A job's build function: creates the job's sources, transformations and sinks on the
/// environment. It must be deterministic and do no I/O, since the client and every TaskExecutor
/// run it with the same arguments and must get the same graph.
pub type BuildFn = fn(&mut StreamExecutionEnvironment, &JobArgs) -> Result<(), JobError>;

/// A registered job.
#[derive(Debug, Clone)]
pub struct JobEntry {
    /// The job's name.
    pub name: String,
    /// A one-line description, for `rflink list`.
    pub description: String,
    /// The build function.
    pub build: BuildFn,
}

/// Jobs by name.
#[derive(Debug, Clone, Default)]
pub struct JobRegistry {
    jobs: BTreeMap<String, JobEntry>,
}

impl JobRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `build` as the job `name`, replacing an earlier job of the same name.
    pub fn register(&mut self, name: &str, description: &str, build: BuildFn) -> &mut Self {
        self.jobs.insert(
            name.to_owned(),
            JobEntry {
                name: name.to_owned(),
                description: description.to_owned(),
                build,
            },
        );
        self
    }

    /// Registers `build` as the job `name` unless the name is taken.
    ///
    /// # Errors
    /// [`JobError::DuplicateJob`] when the name is taken.
    pub fn try_register(
        &mut self,
        name: &str,
        description: &str,
        build: BuildFn,
    ) -> Result<&mut Self, JobError> {
        if self.jobs.contains_key(name) {
            return Err(JobError::DuplicateJob(name.to_owned()));
        }
        Ok(self.register(name, description, build))
    }

    /// The job `name`, if registered.
    pub fn get(&self, name: &str) -> Option<&JobEntry> {
        self.jobs.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.jobs.keys().map(String::as_str).collect()
    }

    /// The registered jobs, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &JobEntry> {
        self.jobs.values()
    }

    /// Runs the job `name`'s build function on a fresh environment (whose job name defaults to
    /// `name`) and returns the graph.
    ///
    /// # Errors
    /// [`JobError::UnknownJob`] listing the known names, or whatever the build function or
    /// graph validation returns.
    pub fn build(&self, name: &str, args: &JobArgs) -> Result<StreamGraph, JobError> {
        let entry = self.get(name).ok_or_else(|| JobError::UnknownJob {
            name: name.to_owned(),
            known: self.names().into_iter().map(str::to_owned).collect(),
        })?;
        let mut env = StreamExecutionEnvironment::new();
        env.set_job_name(name);
        (entry.build)(&mut env, args)?;
        env.stream_graph()
    }
}
