//! High availability: who leads the cluster, and what survives the leader. Flink:
//! `HighAvailabilityServices` with its `LeaderElectionService`, `LeaderRetrievalService`,
//! `JobGraphStore`, `JobResultStore` and `CompletedCheckpointStore`.
//!
//! Since Flink 1.15 one leader election per JobManager process covers the Dispatcher, the
//! ResourceManager and every JobMaster of the process (`DefaultMultipleComponentLeaderElection
//! Service`); rflink does the same. A JobManager process [`campaign`](HaServices::campaign)s; when
//! it wins it gets a [`Leadership`] with a fresh session id, from which the Dispatcher's and the
//! ResourceManager's fencing tokens are derived, and starts them. It publishes where they are
//! ([`ClusterLeader`]) with [`HaServices::publish_leader`]; TaskExecutors and clients follow
//! [`HaServices::watch_leader`]. When the leadership is lost (its lease expired, or keep-alives
//! could not reach the coordination service for a lease TTL) [`Leadership::lost`] fires and the
//! process stops every leader component at once.
//!
//! The metadata a new leader needs lives in the same service, under keys of [`keys`]: each
//! submitted job's graph, each finished job's archived views, and each running job's latest
//! completed checkpoint pointer. Writes carry the writer's leadership and are refused
//! ([`HaError::NotLeader`]) once it is lost, so a deposed leader can change nothing there either.
//!
//! Two implementations: [`StandaloneHaServices`] (`high-availability.type: none`: the process
//! is always leader, metadata lives in memory and dies with it) and the etcd one in the
//! `rflink-ha-etcd` crate (`high-availability.type: etcd`).

pub mod standalone;

use std::sync::Arc;

use futures::future::BoxFuture;
use rflink_rpc::AbstractId;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::leaderretrieval::Leaders;

pub use standalone::StandaloneHaServices;

/// Why a high-availability operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaError {
    /// The coordination service could not be reached or answered with an error.
    #[error("coordination service {endpoints}: {reason}")]
    Unavailable {
        /// The configured endpoints.
        endpoints: String,
        /// What went wrong.
        reason: String,
    },
    /// The write carried a leadership that is no longer held: the caller was deposed.
    #[error("leadership {session_id} is no longer held; the write was refused")]
    NotLeader {
        /// The lost leadership's session id.
        session_id: AbstractId,
    },
    /// A stored value could not be decoded.
    #[error("stored value under {key} is corrupt: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The services were closed.
    #[error("high-availability services closed")]
    Closed,
}

/// A won leadership. Dropping it does not resign: call [`HaServices::resign`].
#[derive(Debug, Clone)]
pub struct Leadership {
    /// The leader session: fresh for every leadership won, never reused.
    pub session_id: AbstractId,
    /// Turns `true`, once and for good, when the leadership is lost.
    pub lost: watch::Receiver<bool>,
}

impl Leadership {
    /// Whether it was lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when it is lost (at once if it already was, or if its sender is gone).
    pub async fn wait_lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }
}

/// What the leading JobManager publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLeader {
    /// The leader session.
    pub session_id: AbstractId,
    /// The ResourceManager and the Dispatcher: addresses and tokens.
    pub leaders: Leaders,
    /// The RPC `host:port` of the leading JobManager process.
    pub rpc_address: String,
    /// The BlobServer's `host:port`.
    pub blob_address: String,
    /// The REST API's base URL (`http://host:port` or `https://…`), if it runs one.
    pub rest_url: Option<String>,
}

impl ClusterLeader {
    /// Its stored form (JSON, so `etcdctl get` shows it readably).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// From its stored form.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, HaError> {
        serde_json::from_slice(bytes).map_err(|e| HaError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }
}

/// The keys of the job metadata, relative to the cluster's namespace.
pub mod keys {
    use crate::types::JobId;

    /// Prefix of submitted job graphs.
    pub const JOB_GRAPHS: &str = "jobgraphs/";
    /// Prefix of finished jobs' archived views.
    pub const JOB_RESULTS: &str = "jobresults/";
    /// Prefix of running jobs' latest completed checkpoint pointers.
    pub const CHECKPOINTS: &str = "checkpoints/";

    /// A submitted job's graph.
    pub fn job_graph(job_id: JobId) -> String {
        format!("{JOB_GRAPHS}{job_id}")
    }

    /// A finished job's archive.
    pub fn job_result(job_id: JobId) -> String {
        format!("{JOB_RESULTS}{job_id}")
    }

    /// A job's latest completed checkpoint.
    pub fn checkpoint(job_id: JobId) -> String {
        format!("{CHECKPOINTS}{job_id}")
    }
}

/// The pointer to a job's latest completed checkpoint: its bodies stay in the checkpoint
/// directory (shared storage); only this is kept by the coordination service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPointer {
    /// The checkpoint's id.
    pub checkpoint_id: u64,
    /// Its directory (holds `_metadata`).
    pub path: String,
}

/// Leader election, leader retrieval and the job metadata store of one cluster (one
/// `high-availability.cluster-id`). Every method is cheap to call from an actor: the work runs
/// on tasks of the implementation and comes back as a future.
pub trait HaServices: Send + Sync + 'static {
    /// What it is, for logs and `/jobmanager/config`: `none`, or `etcd (http://…)`.
    fn describe(&self) -> String;

    /// Whether the leader and the metadata survive this process (false for `none`).
    fn is_durable(&self) -> bool;

    /// Campaigns for the cluster's leadership: resolves when this process holds it. `contender`
    /// names the process in logs and in the election.
    fn campaign(&self, contender: String) -> BoxFuture<'static, Result<Leadership, HaError>>;

    /// Gives the leadership up (the lease is revoked, so a standby takes over at once).
    fn resign(&self, leadership: &Leadership) -> BoxFuture<'static, Result<(), HaError>>;

    /// Publishes where the leader's components are; refused once `leadership` is lost.
    fn publish_leader(
        &self,
        leadership: &Leadership,
        leader: &ClusterLeader,
    ) -> BoxFuture<'static, Result<(), HaError>>;

    /// The current leader as published, and every change of it (`None`: no leader now).
    fn watch_leader(&self) -> watch::Receiver<Option<ClusterLeader>>;

    /// Stores `value` under `key` (relative to the cluster's namespace) if `leadership` is
    /// still held.
    fn put(
        &self,
        leadership: &Leadership,
        key: String,
        value: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), HaError>>;

    /// Deletes `key` if `leadership` is still held (deleting a missing key is fine).
    fn delete(
        &self,
        leadership: &Leadership,
        key: String,
    ) -> BoxFuture<'static, Result<(), HaError>>;

    /// The value under `key`.
    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, HaError>>;

    /// Every key under `prefix` with its value, in key order.
    fn list(&self, prefix: String) -> BoxFuture<'static, Result<KeyValues, HaError>>;
}

/// Keys with their values, in key order.
pub type KeyValues = Vec<(String, Vec<u8>)>;

/// Shared handle to the services.
pub type SharedHaServices = Arc<dyn HaServices>;

impl std::fmt::Debug for dyn HaServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The fencing token of a component, derived from the leader session (as Flink's
/// `DispatcherId.fromUuid(leaderSessionId)`), distinct per component so one token never opens
/// another's endpoint.
pub fn derive_token(session_id: AbstractId, component: &str) -> AbstractId {
    use std::hash::{Hash, Hasher};
    // Mix the component into the session id; SipHash with fixed keys is stable across
    // processes of one build and across builds of one Rust version, and each process derives
    // only its own tokens (peers learn them from the published leader), so stability across
    // versions is not needed.
    let mut high = std::collections::hash_map::DefaultHasher::new();
    (session_id.as_u128(), component, 0u8).hash(&mut high);
    let mut low = std::collections::hash_map::DefaultHasher::new();
    (session_id.as_u128(), component, 1u8).hash(&mut low);
    AbstractId::from_u128((u128::from(high.finish()) << 64) | u128::from(low.finish()))
}

/// A won leadership with the services it writes through: what the Dispatcher and each JobMaster
/// of that leadership hold. Every write is refused once the leadership is lost.
#[derive(Clone)]
pub struct HaHandle {
    /// The services.
    pub services: SharedHaServices,
    /// The leadership the writes carry.
    pub leadership: Leadership,
}

impl std::fmt::Debug for HaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaHandle")
            .field("services", &self.services.describe())
            .field("session_id", &self.leadership.session_id)
            .finish()
    }
}

impl HaHandle {
    /// A standalone handle (`high-availability.type: none`): its own in-memory services and
    /// a leadership that is never lost. For the MiniCluster and tests.
    pub async fn standalone() -> Result<Self, HaError> {
        let services: SharedHaServices = Arc::new(StandaloneHaServices::new());
        let leadership = services.campaign("standalone".into()).await?;
        Ok(HaHandle {
            services,
            leadership,
        })
    }

    /// Stores a submitted job's graph (Flink: `JobGraphStore.putJobGraph`).
    pub fn put_job_graph(
        &self,
        job: &crate::jobgraph::JobGraph,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let key = keys::job_graph(job.job_id);
        match rmp_serde::to_vec(job) {
            Ok(bytes) => self.services.put(&self.leadership, key, bytes),
            Err(err) => {
                let err = HaError::Corrupt {
                    key,
                    reason: format!("cannot encode the job graph: {err}"),
                };
                Box::pin(async move { Err(err) })
            }
        }
    }

    /// Stores a finished job's archive, then drops its graph and checkpoint pointer (Flink:
    /// `JobResultStore` entry, then the job's HA cleanup).
    pub fn archive_job(
        &self,
        archived: &crate::dispatcher::ArchivedJob,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let job_id = archived.result.job_id;
        let key = keys::job_result(job_id);
        let bytes = match rmp_serde::to_vec(archived) {
            Ok(bytes) => bytes,
            Err(err) => {
                let err = HaError::Corrupt {
                    key,
                    reason: format!("cannot encode the archive: {err}"),
                };
                return Box::pin(async move { Err(err) });
            }
        };
        let put = self.services.put(&self.leadership, key, bytes);
        let graph = self
            .services
            .delete(&self.leadership, keys::job_graph(job_id));
        let checkpoint = self
            .services
            .delete(&self.leadership, keys::checkpoint(job_id));
        Box::pin(async move {
            put.await?;
            graph.await?;
            checkpoint.await
        })
    }

    /// Stores a job's latest completed checkpoint pointer (Flink: `CompletedCheckpointStore.
    /// addCheckpointAndSubsumeOldestOne`); done before the checkpoint is confirmed to the tasks.
    pub fn put_checkpoint(
        &self,
        job_id: crate::types::JobId,
        pointer: &CheckpointPointer,
    ) -> BoxFuture<'static, Result<(), HaError>> {
        let key = keys::checkpoint(job_id);
        match serde_json::to_vec(pointer) {
            Ok(bytes) => self.services.put(&self.leadership, key, bytes),
            Err(err) => {
                let err = HaError::Corrupt {
                    key,
                    reason: err.to_string(),
                };
                Box::pin(async move { Err(err) })
            }
        }
    }
}

/// What a new leader finds in the store.
#[derive(Debug, Default)]
pub struct RecoveredJobs {
    /// Jobs to run again, each with its latest completed checkpoint if it had one.
    pub running: Vec<(crate::jobgraph::JobGraph, Option<CheckpointPointer>)>,
    /// Finished jobs' archives.
    pub finished: Vec<crate::dispatcher::ArchivedJob>,
}

/// Reads the stored jobs (Flink: `JobGraphStore.getJobIds` + `JobResultStore`). A job with an
/// archive is finished even if its graph is still stored (the leader died between the two
/// writes); an entry that does not decode is logged and skipped, so one bad entry cannot keep
/// every other job from recovering.
pub async fn recover_jobs(services: &dyn HaServices) -> Result<RecoveredJobs, HaError> {
    let mut recovered = RecoveredJobs::default();
    let mut finished_ids = std::collections::HashSet::new();
    for (key, bytes) in services.list(keys::JOB_RESULTS.into()).await? {
        match rmp_serde::from_slice::<crate::dispatcher::ArchivedJob>(&bytes) {
            Ok(archived) => {
                finished_ids.insert(archived.result.job_id);
                recovered.finished.push(archived);
            }
            Err(err) => {
                tracing::error!(key, error = %err, "skipping a job archive that does not decode")
            }
        }
    }
    for (key, bytes) in services.list(keys::JOB_GRAPHS.into()).await? {
        let job = match rmp_serde::from_slice::<crate::jobgraph::JobGraph>(&bytes) {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(key, error = %err, "skipping a job graph that does not decode");
                continue;
            }
        };
        if finished_ids.contains(&job.job_id) {
            continue;
        }
        let pointer_key = keys::checkpoint(job.job_id);
        let pointer = match services.get(pointer_key.clone()).await? {
            Some(bytes) => match serde_json::from_slice::<CheckpointPointer>(&bytes) {
                Ok(pointer) => Some(pointer),
                Err(err) => {
                    tracing::error!(key = pointer_key, error = %err, "checkpoint pointer does not decode; the job restarts without it");
                    None
                }
            },
            None => None,
        };
        recovered.running.push((job, pointer));
    }
    Ok(recovered)
}
