//! What a client submits: the job graph. Flink: `JobGraph`, `JobVertex`, `JobEdge`.
//!
//! A vertex names its *invokable*, the code a task runs, by a registry name (Flink: the invokable
//! class name), plus string parameters. The TaskExecutor looks the name up in its
//! [`InvokableRegistry`](crate::taskexecutor::invokable::InvokableRegistry).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::types::{JobId, JobVertexId};

/// How the subtasks of a producer connect to those of its consumer. Flink: `DistributionPattern`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DistributionPattern {
    /// Subtask i feeds subtask i (equal parallelism) or a contiguous range.
    Pointwise,
    /// Every producer subtask feeds every consumer subtask.
    AllToAll,
}

/// How records of an edge are routed to the consumer's subtasks. Flink: the edge's
/// `StreamPartitioner` (`ForwardPartitioner`, `RebalancePartitioner`, `KeyGroupStreamPartitioner`,
/// `BroadcastPartitioner`, `ShufflePartitioner`), shown in the plan as its ship strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ShipStrategy {
    /// Subtask i feeds subtask i (equal parallelism); one subpartition per producer.
    Forward,
    /// Round robin over every consumer subtask.
    Rebalance,
    /// By key group of the record's key.
    Hash,
    /// Every record to every consumer subtask.
    Broadcast,
    /// Randomly over the consumer subtasks.
    Shuffle,
}

impl ShipStrategy {
    /// Flink's name for it, as the REST plan shows (`FORWARD`, `REBALANCE`, `HASH`, ...).
    pub fn flink_name(self) -> &'static str {
        match self {
            ShipStrategy::Forward => "FORWARD",
            ShipStrategy::Rebalance => "REBALANCE",
            ShipStrategy::Hash => "HASH",
            ShipStrategy::Broadcast => "BROADCAST",
            ShipStrategy::Shuffle => "SHUFFLE",
        }
    }

    /// The distribution pattern it implies: forward is pointwise, the rest all-to-all.
    pub fn pattern(self) -> DistributionPattern {
        match self {
            ShipStrategy::Forward => DistributionPattern::Pointwise,
            _ => DistributionPattern::AllToAll,
        }
    }
}

/// An input of a vertex: which vertex feeds it and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEdge {
    /// The producing vertex.
    pub source: JobVertexId,
    /// How subtasks connect.
    pub pattern: DistributionPattern,
    /// How records are routed, for edges that carry data (streaming jobs).
    #[serde(default)]
    pub ship_strategy: Option<ShipStrategy>,
}

/// The program a streaming job runs: an entry of the job registry compiled into every node,
/// with its arguments. The client and every TaskExecutor run the same build function with
/// these arguments; the fingerprint proves they built the same graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgram {
    /// The registry name, e.g. `wordcount`.
    pub entry: String,
    /// Program arguments, e.g. `["--input", "/data/words.txt"]`.
    pub args: Vec<String>,
    /// The stream graph's fingerprint as the client built it.
    pub fingerprint: String,
    /// Batch-style emission (bounded inputs, Flink's BATCH mode): no checkpoints.
    #[serde(default)]
    pub batch: bool,
    /// The job library the program comes from, when it is not compiled into the nodes.
    /// Flink: the JobGraph's user jar blob keys.
    #[serde(default)]
    pub library: Option<JobLibraryRef>,
}

/// A job library shipped with its job through the BlobServer (see [`crate::library`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLibraryRef {
    /// The file's name as the user gave it, e.g. `libmy_job.so` (for messages and logs).
    pub file_name: String,
    /// The SHA-256 of the file (64 hex characters): its BlobKey under the job. The client
    /// computes it; the JobManager checks the upload against it, every TaskExecutor checks its
    /// download.
    pub blob_key: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The build fingerprint in the library's ABI note (rflink, rustc, target).
    pub build_fingerprint: String,
}

/// The configuration key of a streaming vertex naming its index in the job's plan.
pub const STREAM_VERTEX_KEY: &str = "stream.vertex";

/// The invokable every streaming vertex runs. Flink: `OneInputStreamTask` / `SourceStreamTask`.
pub const STREAM_TASK_INVOKABLE: &str = "StreamTask";

/// One vertex (an operator chain, once the data plane exists). Flink: `JobVertex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobVertex {
    /// Vertex id.
    pub id: JobVertexId,
    /// Display name.
    pub name: String,
    /// Number of parallel subtasks.
    pub parallelism: u32,
    /// Upper bound for rescaling (Flink's max parallelism); at least `parallelism`.
    pub max_parallelism: u32,
    /// Registry name of the code each subtask runs, e.g. `NoOpInvokable`.
    pub invokable: String,
    /// Parameters for the invokable.
    pub config: BTreeMap<String, String>,
    /// Inputs, in order.
    pub inputs: Vec<JobEdge>,
}

impl JobVertex {
    /// A vertex with the given name, invokable and parallelism, a fresh id and no inputs.
    pub fn new(name: impl Into<String>, invokable: impl Into<String>, parallelism: u32) -> Self {
        JobVertex {
            id: JobVertexId::generate(),
            name: name.into(),
            parallelism,
            max_parallelism: parallelism.clamp(128, UPPER_BOUND_MAX_PARALLELISM),
            invokable: invokable.into(),
            config: BTreeMap::new(),
            inputs: Vec::new(),
        }
    }

    /// Adds an invokable parameter.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Connects `source` as an input of this vertex.
    pub fn connect_from(mut self, source: &JobVertex, pattern: DistributionPattern) -> Self {
        self.inputs.push(JobEdge {
            source: source.id,
            pattern,
            ship_strategy: None,
        });
        self
    }
}

/// A job as submitted. Flink: `JobGraph`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobGraph {
    /// Job id; the client picks it (a duplicate submission is refused).
    pub job_id: JobId,
    /// Display name.
    pub name: String,
    /// Vertices in topological order (sources first).
    pub vertices: Vec<JobVertex>,
    /// The streaming program, for jobs built with the DataStream API; `None` for graphs of
    /// plain invokables (the testing ones).
    #[serde(default)]
    pub program: Option<JobProgram>,
    /// The job's own configuration (Flink's job configuration): keys such as
    /// `execution.checkpointing.interval` or `restart-strategy.type` that override the
    /// cluster's for this job.
    #[serde(default)]
    pub job_config: std::collections::BTreeMap<String, String>,
    /// Restore the job's state from this savepoint or retained checkpoint (a directory or its
    /// `_metadata` file). Flink: `SavepointRestoreSettings`.
    #[serde(default)]
    pub savepoint_path: Option<String>,
}

/// The largest max parallelism a vertex may have (Flink's `KeyGroupRangeAssignment.UPPER_BOUND_MAX_PARALLELISM`).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// The most subtasks a job may have in total: an execution graph is built in memory for each.
pub const MAX_TOTAL_SUBTASKS: u64 = 1 << 20;

/// Why a job graph cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JobGraphError {
    /// The graph has no vertices.
    #[error("job graph has no vertices")]
    Empty,
    /// A vertex's parallelism is zero or above its max parallelism.
    #[error("vertex {vertex:?} has parallelism {parallelism}, outside 1..={max_parallelism}")]
    BadParallelism {
        /// The vertex's name.
        vertex: String,
        /// Its parallelism.
        parallelism: u32,
        /// Its max parallelism.
        max_parallelism: u32,
    },
    /// The job has more subtasks than the cluster will build an execution graph for.
    #[error("job has {total} subtasks in all; at most {max} are allowed")]
    TooManySubtasks {
        /// Its subtasks.
        total: u64,
        /// The limit.
        max: u64,
    },
    /// Two vertices share an id.
    #[error("vertex id {0} appears twice")]
    DuplicateVertex(JobVertexId),
    /// An edge names a vertex that is not earlier in the list.
    #[error("vertex {vertex:?} reads from {source_id}, which is not an earlier vertex")]
    UnknownInput {
        /// The consuming vertex's name.
        vertex: String,
        /// The missing source.
        source_id: JobVertexId,
    },
    /// A forward edge joins vertices of different parallelism.
    #[error("vertex {vertex:?} reads with forward partitioning from a vertex of parallelism {source_parallelism}, but has parallelism {parallelism}")]
    ForwardParallelism {
        /// The consuming vertex's name.
        vertex: String,
        /// Its parallelism.
        parallelism: u32,
        /// The producer's.
        source_parallelism: u32,
    },
    /// A name is empty or too long.
    #[error("{what} name must be 1 to 255 characters")]
    BadName {
        /// Which name.
        what: String,
    },
    /// The program's library reference is malformed.
    #[error("job library: {0}")]
    BadLibrary(String),
    /// An entry of the job's configuration is not a known key or does not parse.
    #[error("job configuration {key:?}: {reason}")]
    BadConfig {
        /// The key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl JobGraph {
    /// A job graph with a fresh id.
    pub fn new(name: impl Into<String>, vertices: Vec<JobVertex>) -> Self {
        JobGraph {
            job_id: JobId::generate(),
            name: name.into(),
            vertices,
            program: None,
            job_config: Default::default(),
            savepoint_path: None,
        }
    }

    /// Checks the graph is runnable: at least one vertex, sane parallelism, inputs that refer to
    /// earlier vertices (so the order is topological and there are no cycles).
    pub fn validate(&self) -> Result<(), JobGraphError> {
        if self.vertices.is_empty() {
            return Err(JobGraphError::Empty);
        }
        if self.name.is_empty() || self.name.len() > 255 {
            return Err(JobGraphError::BadName { what: "job".into() });
        }
        let mut seen = HashSet::new();
        for v in &self.vertices {
            if v.name.is_empty() || v.name.len() > 255 {
                return Err(JobGraphError::BadName {
                    what: "vertex".into(),
                });
            }
            if v.parallelism == 0
                || v.parallelism > v.max_parallelism
                || v.max_parallelism > UPPER_BOUND_MAX_PARALLELISM
            {
                return Err(JobGraphError::BadParallelism {
                    vertex: v.name.clone(),
                    parallelism: v.parallelism,
                    max_parallelism: v.max_parallelism,
                });
            }
            for input in &v.inputs {
                if !seen.contains(&input.source) {
                    return Err(JobGraphError::UnknownInput {
                        vertex: v.name.clone(),
                        source_id: input.source,
                    });
                }
                if input.ship_strategy.is_some() && input.pattern == DistributionPattern::Pointwise
                {
                    let source_parallelism = self
                        .vertex(input.source)
                        .map(|s| s.parallelism)
                        .unwrap_or(v.parallelism);
                    if source_parallelism != v.parallelism {
                        return Err(JobGraphError::ForwardParallelism {
                            vertex: v.name.clone(),
                            parallelism: v.parallelism,
                            source_parallelism,
                        });
                    }
                }
            }
            if !seen.insert(v.id) {
                return Err(JobGraphError::DuplicateVertex(v.id));
            }
        }
        let mut config = crate::config::Configuration::default();
        for (key, value) in &self.job_config {
            config
                .set(key, value)
                .map_err(|problem| JobGraphError::BadConfig {
                    key: key.clone(),
                    reason: crate::config::ConfigProblem::new(
                        crate::config::ConfigSource::Code,
                        Some(key),
                        problem,
                    )
                    .to_string(),
                })?;
        }
        if let Err(err) = config.validate() {
            return Err(JobGraphError::BadConfig {
                key: err
                    .problems
                    .first()
                    .and_then(|p| p.key.clone())
                    .unwrap_or_default(),
                reason: err.to_string(),
            });
        }
        if let Some(library) = self.program.as_ref().and_then(|p| p.library.as_ref()) {
            if library.blob_key.parse::<crate::blob::BlobKey>().is_err() {
                return Err(JobGraphError::BadLibrary(format!(
                    "blob key {:?} is not 64 hex characters",
                    library.blob_key
                )));
            }
            let name = &library.file_name;
            if name.is_empty() || name.len() > 255 || name.contains(['/', '\\', '\0']) {
                return Err(JobGraphError::BadLibrary(format!(
                    "file name {name:?} must be 1 to 255 characters without a path"
                )));
            }
        }
        let total: u64 = self.vertices.iter().map(|v| u64::from(v.parallelism)).sum();
        if total > MAX_TOTAL_SUBTASKS {
            return Err(JobGraphError::TooManySubtasks {
                total,
                max: MAX_TOTAL_SUBTASKS,
            });
        }
        Ok(())
    }

    /// Total number of subtasks, i.e. slots needed when each subtask gets its own slot.
    pub fn total_subtasks(&self) -> u32 {
        self.vertices.iter().map(|v| v.parallelism).sum()
    }

    /// The vertex with the given id.
    pub fn vertex(&self, id: JobVertexId) -> Option<&JobVertex> {
        self.vertices.iter().find(|v| v.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_each_problem() {
        let a = JobVertex::new("a", "NoOpInvokable", 2);
        let b =
            JobVertex::new("b", "NoOpInvokable", 4).connect_from(&a, DistributionPattern::AllToAll);
        let good = JobGraph::new("job", vec![a.clone(), b.clone()]);
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(good.total_subtasks(), 6);

        assert_eq!(
            JobGraph::new("job", vec![]).validate(),
            Err(JobGraphError::Empty)
        );
        let backwards = JobGraph::new("job", vec![b.clone(), a.clone()]);
        assert!(matches!(
            backwards.validate(),
            Err(JobGraphError::UnknownInput { .. })
        ));
        let twice = JobGraph::new("job", vec![a.clone(), a.clone()]);
        assert_eq!(twice.validate(), Err(JobGraphError::DuplicateVertex(a.id)));
        let mut zero = a.clone();
        zero.parallelism = 0;
        assert!(matches!(
            JobGraph::new("job", vec![zero]).validate(),
            Err(JobGraphError::BadParallelism { .. })
        ));
        assert!(matches!(
            JobGraph::new("", vec![a.clone()]).validate(),
            Err(JobGraphError::BadName { .. })
        ));
        // A huge parallelism from a REST body must be refused, not allocated.
        let mut huge = a.clone();
        huge.parallelism = 4_000_000_000;
        huge.max_parallelism = 4_000_000_000;
        assert!(matches!(
            JobGraph::new("job", vec![huge]).validate(),
            Err(JobGraphError::BadParallelism { .. })
        ));
        let wide: Vec<JobVertex> = (0..40)
            .map(|i| {
                let mut v = JobVertex::new(format!("v{i}"), "NoOpInvokable", 30_000);
                v.max_parallelism = 30_000;
                v
            })
            .collect();
        assert!(matches!(
            JobGraph::new("job", wide).validate(),
            Err(JobGraphError::TooManySubtasks { .. })
        ));
    }
}
