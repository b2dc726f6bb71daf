//! The client's half of running a streaming job: run the job's build function, fuse the
//! operator chains and turn the plan into the JobGraph the Dispatcher schedules. Flink:
//! `StreamingJobGraphGenerator` as called by `PipelineExecutorUtils.getJobGraph`.
//!
//! Each plan vertex (an operator chain) becomes a JobVertex running the
//! [`StreamTask`](crate::tasks::StreamTask) invokable, with its index in the plan in its
//! configuration; each plan edge becomes a JobEdge with its ship strategy. The program (registry
//! entry, arguments, graph fingerprint) travels with the JobGraph so that every TaskExecutor can
//! rebuild the same graph.

use rflink::{JobArgs, JobPlan, Partitioner};

use crate::jobgraph::{
    JobEdge, JobGraph, JobGraphError, JobLibraryRef, JobProgram, JobVertex, ShipStrategy,
    STREAM_TASK_INVOKABLE, STREAM_VERTEX_KEY,
};
use crate::library::JobLibrary;
use crate::tasks::Jobs;
use crate::types::{JobId, JobVertexId};

/// Why a job graph could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The build function refused (unknown job, bad argument, invalid graph).
    #[error("{0}")]
    Job(String),
    /// The resulting graph is not runnable.
    #[error("invalid job graph: {0}")]
    Graph(#[from] JobGraphError),
}

/// The ship strategy of a plan edge.
pub fn ship_strategy(partitioner: Partitioner) -> ShipStrategy {
    match partitioner {
        Partitioner::Forward => ShipStrategy::Forward,
        Partitioner::Rebalance => ShipStrategy::Rebalance,
        Partitioner::Hash => ShipStrategy::Hash,
        Partitioner::Broadcast => ShipStrategy::Broadcast,
        Partitioner::Shuffle => ShipStrategy::Shuffle,
    }
}

/// Runs job `entry` of `jobs` with `args` and returns its JobGraph (with a fresh job id).
pub fn build_job_graph(jobs: &Jobs, entry: &str, args: &[String]) -> Result<JobGraph, ClientError> {
    let job_args = JobArgs::from_args(args.to_vec());
    let graph = jobs
        .0
        .build(entry, &job_args)
        .map_err(|e| ClientError::Job(e.to_string()))?;
    let plan = graph.plan();
    let job_graph = job_graph_from_plan(
        &plan,
        JobProgram {
            entry: entry.to_string(),
            args: args.to_vec(),
            fingerprint: plan.fingerprint.clone(),
            batch: graph.batch_emission(),
            library: None,
        },
    );
    let mut job_graph = job_graph;
    job_graph.job_config = graph.job_config().clone();
    job_graph.validate()?;
    Ok(job_graph)
}

/// Picks the job of `library` to run: `class` if given (Flink's `--class`), else its only job.
///
/// # Errors
/// An unknown name, or no name given for a library of several jobs; each lists the jobs.
pub fn choose_library_job(
    library: &JobLibrary,
    class: Option<&str>,
) -> Result<String, ClientError> {
    let names: Vec<&str> = library.jobs().iter().map(|(n, _)| n.as_str()).collect();
    match class {
        Some(name) if names.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(ClientError::Job(format!(
            "job library {} has no job {name:?}; its jobs: {}",
            library.name(),
            names.join(", ")
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ClientError::Job(format!(
            "job library {} exports {} jobs ({}): choose one with --class NAME",
            library.name(),
            names.len(),
            names.join(", ")
        ))),
    }
}

/// Builds job `entry` of a loaded job library with `args`, as the client of `rflink run
/// libmy_job.so` does: the plan comes from the library, and the JobGraph names the library
/// (`bytes`, the file's content) so that the TaskExecutors fetch it from the BlobServer.
///
/// # Errors
/// The library's refusal (unknown job, bad argument, panicking build function) or an invalid
/// graph.
pub fn build_library_job_graph(
    library: &JobLibrary,
    bytes: &[u8],
    entry: &str,
    args: &[String],
) -> Result<JobGraph, ClientError> {
    let info = library
        .plugin()
        .build_plan(entry, args)
        .map_err(|e| ClientError::Job(format!("{}: {e}", library.name())))?;
    let key = crate::blob::BlobKey::of(bytes);
    let program = JobProgram {
        entry: entry.to_string(),
        args: args.to_vec(),
        fingerprint: info.plan.fingerprint.clone(),
        batch: info.batch_emission,
        library: Some(JobLibraryRef {
            file_name: library.name().to_string(),
            blob_key: key.to_string(),
            size: bytes.len() as u64,
            build_fingerprint: library.plugin().fingerprint(),
        }),
    };
    let mut job_graph = job_graph_from_plan(&info.plan, program);
    job_graph.job_config = info.job_config;
    job_graph.validate()?;
    Ok(job_graph)
}

/// The JobGraph of a plan: one vertex per chain, edges in the plan's input order.
pub fn job_graph_from_plan(plan: &JobPlan, program: JobProgram) -> JobGraph {
    // Vertex ids derive from the program's fingerprint and the vertex's position, as Flink
    // derives JobVertexIDs from the stream graph: every build of the same program has the same
    // ids, so a savepoint's state finds its vertices in a resubmitted job.
    let ids: Vec<JobVertexId> = (0..plan.vertices.len())
        .map(|i| deterministic_vertex_id(&program.fingerprint, i))
        .collect();
    let vertices = plan
        .vertices
        .iter()
        .enumerate()
        .map(|(i, v)| JobVertex {
            id: ids[i],
            name: truncate_name(&v.name),
            parallelism: v.parallelism,
            max_parallelism: v.max_parallelism.max(v.parallelism),
            invokable: STREAM_TASK_INVOKABLE.into(),
            config: [(STREAM_VERTEX_KEY.to_string(), i.to_string())]
                .into_iter()
                .collect(),
            inputs: v
                .inputs
                .iter()
                .filter_map(|&e| plan.edges.get(e))
                .map(|edge| {
                    let strategy = ship_strategy(edge.partitioner);
                    JobEdge {
                        source: ids[edge.source_vertex],
                        pattern: strategy.pattern(),
                        ship_strategy: Some(strategy),
                    }
                })
                .collect(),
        })
        .collect();
    JobGraph {
        job_id: JobId::generate(),
        name: truncate_name(&plan.job_name),
        vertices,
        program: Some(program),
        job_config: Default::default(),
        savepoint_path: None,
    }
}

fn deterministic_vertex_id(fingerprint: &str, index: usize) -> JobVertexId {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"rflink job vertex\0");
    hasher.update(fingerprint.as_bytes());
    hasher.update((index as u64).to_be_bytes());
    let digest = hasher.finalize();
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&digest[..16]);
    JobVertexId::from_u128(u128::from_be_bytes(bits))
}

/// Names are shown in REST responses and must fit 255 bytes.
fn truncate_name(name: &str) -> String {
    if name.len() <= 255 {
        return name.to_string();
    }
    let mut end = 252;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}
