//! The Dispatcher: accepts jobs, starts a JobMaster per job, keeps finished jobs' results.
//! Flink: `Dispatcher` / `StandaloneDispatcher`.
//!
//! Fenced by [`DispatcherId`]. `SubmitJob` validates the graph, refuses a job id it has seen
//! (running or finished: Flink's `DuplicateJobSubmissionException`), starts a [`JobMaster`]
//! endpoint on the same RPC service with a fresh `JobMasterId`, and answers once it is started,
//! not when the job runs. When the JobMaster reports a terminal status, the Dispatcher archives
//! its views (details, exceptions, result) and closes the JobMaster. Queries about a running job
//! are forwarded to its JobMaster; about a finished one, answered from the archive.

pub mod gateway;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use rflink_rpc::{rpc_protocol, Handler, Response, RpcContext, RpcEndpoint, RpcGateway, RpcServer};

pub use gateway::*;

use crate::blob::BlobServer;
use crate::events::EventSink;
use crate::executiongraph::{now_millis, JobStatus};
use crate::highavailability::{HaHandle, RecoveredJobs};
use crate::jobgraph::JobGraph;
use crate::jobmaster::{self, JobMaster, JobMasterSettings};
use crate::resourcemanager::{self, ResourceManager};
use crate::types::{Ack, DispatcherId, JobId};

enum JobEntry {
    Running {
        server: RpcServer<JobMaster>,
        gateway: RpcGateway<JobMaster>,
        name: String,
        submitted: i64,
    },
    Done {
        details: Box<JobDetails>,
        exceptions: JobExceptions,
        result: JobResult,
        checkpoints: Option<Box<crate::checkpoint::stats::CheckpointStatsView>>,
    },
}

/// The Dispatcher endpoint.
pub struct Dispatcher {
    dispatcher_id: DispatcherId,
    job_master: JobMasterSettings,
    resource_manager: RpcGateway<ResourceManager>,
    blob_server: Option<Arc<BlobServer>>,
    events: EventSink,
    jobs: HashMap<JobId, JobEntry>,
    /// Where jobs are stored durably, with the leadership the writes carry; `None`: nowhere.
    ha: Option<HaHandle>,
    /// Jobs a new leader found in the store, started in `on_start`.
    recovered: Vec<JobGraph>,
    /// Jobs whose graph is being stored: submitted, not started yet.
    pending: std::collections::HashSet<JobId>,
}

impl Dispatcher {
    /// A Dispatcher with a fresh token that starts JobMasters with `job_master` settings and asks
    /// `resource_manager` about TaskManagers.
    pub fn new(
        job_master: JobMasterSettings,
        resource_manager: RpcGateway<ResourceManager>,
        blob_server: Option<Arc<BlobServer>>,
        events: EventSink,
    ) -> Self {
        Dispatcher {
            dispatcher_id: DispatcherId::generate(),
            job_master,
            resource_manager,
            blob_server,
            events,
            jobs: HashMap::new(),
            ha: None,
            recovered: Vec::new(),
            pending: Default::default(),
        }
    }

    /// The Dispatcher of a leadership: its token is `dispatcher_id` (derived from the leader
    /// session); with durable `ha`, submitted jobs are stored before they start and finished
    /// jobs are archived there; the `recovered` jobs are taken over: finished ones listed,
    /// running ones started again from their latest completed checkpoint.
    pub fn with_leadership(
        mut self,
        dispatcher_id: DispatcherId,
        ha: Option<HaHandle>,
        recovered: RecoveredJobs,
    ) -> Self {
        self.dispatcher_id = dispatcher_id;
        for archived in recovered.finished {
            self.jobs.insert(
                archived.result.job_id,
                JobEntry::Done {
                    details: Box::new(archived.details),
                    exceptions: archived.exceptions,
                    result: archived.result,
                    checkpoints: archived.checkpoints.map(Box::new),
                },
            );
        }
        self.recovered = recovered
            .running
            .into_iter()
            .map(|(mut job, pointer)| {
                if let Some(pointer) = pointer {
                    tracing::info!(job_id = %job.job_id, checkpoint = pointer.checkpoint_id, path = pointer.path, "recovering the job from its latest completed checkpoint");
                    job.savepoint_path = Some(pointer.path);
                } else {
                    tracing::info!(job_id = %job.job_id, "recovering the job; it had no completed checkpoint");
                }
                job
            })
            .collect();
        self.job_master.ha = ha.clone();
        self.ha = ha;
        self
    }

    /// Starts a JobMaster for `job` and records it as running.
    fn start_job_master(
        &mut self,
        job: JobGraph,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<(), DispatcherError> {
        let Some(service) = ctx.service() else {
            return Err(DispatcherError::ShuttingDown);
        };
        let job_id = job.job_id;
        let name = job.name.clone();
        let master = JobMaster::new(
            job,
            self.job_master.clone(),
            self.events.clone(),
            Some(ctx.self_gateway()),
        );
        let server =
            service
                .start_server(master)
                .map_err(|err| DispatcherError::JobMasterStartFailed {
                    job_id,
                    reason: err.to_string(),
                })?;
        server.start();
        tracing::info!(%job_id, name, job_master = %server.address(), "job master started");
        // A JobMaster that dies without reporting (its start failed, a handler panicked) must not
        // leave the job looking alive forever: archive it as failed.
        ctx.spawn_then(server.termination(), move |ended, d, _| {
            d.job_master_ended(job_id, ended)
        });
        self.jobs.insert(
            job_id,
            JobEntry::Running {
                gateway: server.self_gateway(),
                server,
                name,
                submitted: now_millis(),
            },
        );
        Ok(())
    }

    fn running(&self, job_id: JobId) -> Result<Option<RpcGateway<JobMaster>>, DispatcherError> {
        match self.jobs.get(&job_id) {
            Some(JobEntry::Running { gateway, .. }) => Ok(Some(gateway.clone())),
            Some(JobEntry::Done { .. }) => Ok(None),
            None => Err(DispatcherError::JobNotFound { job_id }),
        }
    }
}

impl Dispatcher {
    fn job_master_ended(&mut self, job_id: JobId, ended: Result<(), rflink_rpc::RpcError>) {
        let Some(JobEntry::Running {
            name, submitted, ..
        }) = self.jobs.get(&job_id)
        else {
            return; // Archived normally.
        };
        let reason = match ended {
            Ok(()) => "the job master stopped without reporting a result".to_string(),
            Err(err) => err.to_string(),
        };
        tracing::error!(%job_id, reason, "job master ended unexpectedly; the job is failed");
        let now = now_millis();
        let failure = crate::executiongraph::ErrorInfo {
            kind: "JobMasterFailure".into(),
            message: reason,
            task_name: None,
            location: None,
            timestamp: now,
        };
        let mut overview = placeholder_overview(job_id, name, *submitted);
        overview.state = JobStatus::Failed;
        overview.end_time = now;
        overview.last_modification = now;
        let details = JobDetails {
            overview,
            timestamps: Default::default(),
            vertices: Vec::new(),
            now,
            job_config: Default::default(),
            checkpoint_config: None,
        };
        let result = JobResult {
            job_id,
            status: JobStatus::Failed,
            net_runtime: now - *submitted,
            failure: Some(failure.clone()),
        };
        self.jobs.insert(
            job_id,
            JobEntry::Done {
                details: Box::new(details),
                exceptions: JobExceptions {
                    root: Some(failure.clone()),
                    history: vec![failure],
                    concurrent: vec![Vec::new()],
                },
                result,
                checkpoints: None,
            },
        );
        self.events
            .publish(crate::events::ClusterEvent::JobStatusChanged {
                job_id,
                status: JobStatus::Failed,
            });
    }
}

impl RpcEndpoint for Dispatcher {
    type Token = DispatcherId;
    const GATEWAY: &'static str = "DispatcherGateway";
    const NAME_PREFIX: &'static str = "dispatcher";

    fn fencing_token(&self) -> DispatcherId {
        self.dispatcher_id
    }

    fn on_start(
        &mut self,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Result<(), rflink_rpc::LifecycleError> {
        for job in std::mem::take(&mut self.recovered) {
            let job_id = job.job_id;
            if let Err(err) = self.start_job_master(job, ctx) {
                tracing::error!(%job_id, error = %err, "could not start a recovered job");
            }
        }
        Ok(())
    }

    fn on_stop(&mut self, _ctx: &mut RpcContext<'_, Self>) -> rflink_rpc::StopFuture {
        // Running jobs are suspended: their JobMasters stop with the Dispatcher.
        let closing: Vec<_> = self
            .jobs
            .values()
            .filter_map(|e| match e {
                JobEntry::Running { server, .. } => Some(server.close()),
                JobEntry::Done { .. } => None,
            })
            .collect();
        Box::pin(async move {
            for c in closing {
                let _ = c.await;
            }
            Ok(())
        })
    }
}

impl Handler<SubmitJob> for Dispatcher {
    fn handle(
        &mut self,
        msg: SubmitJob,
        ctx: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, DispatcherError>> {
        let job = msg.job_graph;
        if let Err(err) = job.validate() {
            return Response::ready(Err(err.into()));
        }
        let job_id = job.job_id;
        if self.jobs.contains_key(&job_id) || self.pending.contains(&job_id) {
            tracing::warn!(%job_id, "duplicate job submission refused");
            return Response::ready(Err(DispatcherError::DuplicateJob { job_id }));
        }
        let Some(ha) = &self.ha else {
            return Response::ready(
                self.start_job_master(job, ctx)
                    .map(|()| Ack)
                    .inspect(|_| tracing::info!(%job_id, "job submitted")),
            );
        };
        // Stored before it starts (Flink's `JobGraphWriter.putJobGraph`): a leader that dies
        // right after answering still leaves the job to its successor.
        self.pending.insert(job_id);
        let stored = ha.put_job_graph(&job);
        Response::then(stored, move |stored, d: &mut Dispatcher, ctx| {
            d.pending.remove(&job_id);
            if let Err(err) = stored {
                tracing::error!(%job_id, error = %err, "job not stored durably; submission refused");
                return Err(DispatcherError::Persistence {
                    job_id,
                    reason: err.to_string(),
                });
            }
            d.start_job_master(job, ctx)?;
            tracing::info!(%job_id, "job submitted and stored");
            Ok(Ack)
        })
    }
}

impl Handler<JobReachedTerminalState> for Dispatcher {
    fn handle(
        &mut self,
        msg: JobReachedTerminalState,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, ()> {
        if let Some(JobEntry::Running { server, .. }) = self.jobs.get(&msg.job_id) {
            let closing = server.close();
            tokio::spawn(async move {
                if let Err(err) = closing.await {
                    tracing::warn!(error = %err, "job master did not stop cleanly");
                }
            });
            tracing::info!(job_id = %msg.job_id, status = %msg.result.status, "job archived");
            if msg.result.status.is_globally_terminal() {
                // The job is over for good: its blobs go (Flink's global cleanup).
                if let Some(blob_server) = self.blob_server.clone() {
                    let job_id = msg.job_id;
                    tokio::spawn(async move {
                        if let Err(err) = blob_server.delete_job(job_id).await {
                            tracing::warn!(%job_id, error = %err, "could not delete the job's blobs");
                        }
                    });
                }
            }
            if let (Some(ha), true) = (&self.ha, msg.result.status.is_globally_terminal()) {
                let archived = ArchivedJob {
                    details: msg.details.clone(),
                    exceptions: msg.exceptions.clone(),
                    result: msg.result.clone(),
                    checkpoints: msg.checkpoints.clone(),
                };
                let job_id = msg.job_id;
                let archiving = ha.archive_job(&archived);
                tokio::spawn(async move {
                    match archiving.await {
                        Ok(()) => tracing::info!(%job_id, "job result stored"),
                        // The next leader runs the job again from its latest checkpoint, as
                        // Flink does when a leader dies before its JobResultStore entry.
                        Err(err) => {
                            tracing::error!(%job_id, error = %err, "could not store the job's result")
                        }
                    }
                });
            }
            self.jobs.insert(
                msg.job_id,
                JobEntry::Done {
                    details: Box::new(msg.details),
                    exceptions: msg.exceptions,
                    result: msg.result,
                    checkpoints: msg.checkpoints.map(Box::new),
                },
            );
        }
        Response::ready(())
    }
}

impl Handler<CancelJob> for Dispatcher {
    fn handle(
        &mut self,
        msg: CancelJob,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Ack, DispatcherError>> {
        match self.running(msg.job_id) {
            Err(err) => Response::ready(Err(err)),
            Ok(None) => Response::ready(Ok(Ack)),
            Ok(Some(gateway)) => Response::future(async move {
                match gateway.ask(jobmaster::CancelJob).await {
                    Ok(Ok(ack)) => Ok(ack),
                    Ok(Err(err)) => Err(DispatcherError::JobMaster {
                        job_id: msg.job_id,
                        reason: err.to_string(),
                    }),
                    // The JobMaster finished meanwhile: cancelling a finished job is a no-op.
                    Err(rflink_rpc::RpcError::RecipientUnreachable { .. }) => Ok(Ack),
                    Err(err) => Err(err.into()),
                }
            }),
        }
    }
}

/// An overview of a running job whose JobMaster did not answer.
fn placeholder_overview(job_id: JobId, name: &str, submitted: i64) -> JobOverview {
    JobOverview {
        job_id,
        name: name.to_string(),
        state: JobStatus::Initializing,
        start_time: submitted,
        end_time: -1,
        duration: now_millis() - submitted,
        last_modification: submitted,
        tasks: TaskCounts::default(),
    }
}

impl Handler<RequestJobOverviews> for Dispatcher {
    fn handle(
        &mut self,
        _: RequestJobOverviews,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Vec<JobOverview>> {
        let mut done = Vec::new();
        let mut running = Vec::new();
        for (job_id, entry) in &self.jobs {
            match entry {
                JobEntry::Done { details, .. } => done.push(details.overview.clone()),
                JobEntry::Running {
                    gateway,
                    name,
                    submitted,
                    ..
                } => {
                    let (gateway, job_id, name, submitted) =
                        (gateway.clone(), *job_id, name.clone(), *submitted);
                    running.push(async move {
                        match gateway.ask(jobmaster::RequestJobDetails).await {
                            Ok(details) => details.overview,
                            Err(_) => placeholder_overview(job_id, &name, submitted),
                        }
                    });
                }
            }
        }
        Response::future(async move {
            let mut all = futures::future::join_all(running).await;
            all.extend(done);
            all.sort_by(|a, b| {
                b.start_time
                    .cmp(&a.start_time)
                    .then(a.job_id.cmp(&b.job_id))
            });
            all
        })
    }
}

impl Handler<RequestJobStatus> for Dispatcher {
    fn handle(
        &mut self,
        msg: RequestJobStatus,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<JobStatus, DispatcherError>> {
        match self.jobs.get(&msg.job_id) {
            None => Response::ready(Err(DispatcherError::JobNotFound { job_id: msg.job_id })),
            Some(JobEntry::Done { result, .. }) => Response::ready(Ok(result.status)),
            Some(JobEntry::Running { gateway, .. }) => {
                let gateway = gateway.clone();
                Response::future(async move {
                    // A JobMaster that does not answer yet is still initializing (Flink).
                    Ok(gateway
                        .ask(jobmaster::RequestJobStatus)
                        .await
                        .unwrap_or(JobStatus::Initializing))
                })
            }
        }
    }
}

impl Handler<RequestJobDetails> for Dispatcher {
    fn handle(
        &mut self,
        msg: RequestJobDetails,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<JobDetails, DispatcherError>> {
        match self.jobs.get(&msg.job_id) {
            None => Response::ready(Err(DispatcherError::JobNotFound { job_id: msg.job_id })),
            Some(JobEntry::Done { details, .. }) => Response::ready(Ok((**details).clone())),
            Some(JobEntry::Running { gateway, .. }) => {
                let gateway = gateway.clone();
                Response::future(async move {
                    gateway
                        .ask(jobmaster::RequestJobDetails)
                        .await
                        .map_err(Into::into)
                })
            }
        }
    }
}

impl Handler<RequestJobExceptions> for Dispatcher {
    fn handle(
        &mut self,
        msg: RequestJobExceptions,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<JobExceptions, DispatcherError>> {
        match self.jobs.get(&msg.job_id) {
            None => Response::ready(Err(DispatcherError::JobNotFound { job_id: msg.job_id })),
            Some(JobEntry::Done { exceptions, .. }) => Response::ready(Ok(exceptions.clone())),
            Some(JobEntry::Running { gateway, .. }) => {
                let gateway = gateway.clone();
                Response::future(async move {
                    gateway
                        .ask(jobmaster::RequestJobExceptions)
                        .await
                        .map_err(Into::into)
                })
            }
        }
    }
}

impl Handler<RequestJobResult> for Dispatcher {
    fn handle(
        &mut self,
        msg: RequestJobResult,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Option<JobResult>, DispatcherError>> {
        match self.jobs.get(&msg.job_id) {
            None => Response::ready(Err(DispatcherError::JobNotFound { job_id: msg.job_id })),
            Some(JobEntry::Done { result, .. }) => Response::ready(Ok(Some(result.clone()))),
            Some(JobEntry::Running { .. }) => Response::ready(Ok(None)),
        }
    }
}

impl Handler<RequestClusterOverview> for Dispatcher {
    fn handle(
        &mut self,
        _: RequestClusterOverview,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<ClusterOverview, DispatcherError>> {
        let mut overview = ClusterOverview::default();
        for entry in self.jobs.values() {
            match entry {
                JobEntry::Running { .. } => overview.jobs_running += 1,
                JobEntry::Done { result, .. } => match result.status {
                    JobStatus::Finished => overview.jobs_finished += 1,
                    JobStatus::Canceled => overview.jobs_cancelled += 1,
                    JobStatus::Failed => overview.jobs_failed += 1,
                    _ => {}
                },
            }
        }
        let rm = self.resource_manager.clone();
        Response::future(async move {
            let resources = rm.ask(resourcemanager::RequestResourceOverview).await?;
            overview.taskmanagers = resources.task_managers;
            overview.slots_total = resources.slots_total;
            overview.slots_available = resources.slots_free;
            Ok(overview)
        })
    }
}

impl Handler<RequestTaskManagers> for Dispatcher {
    fn handle(
        &mut self,
        _: RequestTaskManagers,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Vec<TaskManagerInfo>, DispatcherError>> {
        let rm = self.resource_manager.clone();
        Response::future(async move {
            rm.ask(resourcemanager::RequestTaskManagerInfo)
                .await
                .map_err(Into::into)
        })
    }
}

impl Handler<RequestCheckpointStats> for Dispatcher {
    fn handle(
        &mut self,
        msg: RequestCheckpointStats,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<
        Self,
        Result<Option<crate::checkpoint::stats::CheckpointStatsView>, DispatcherError>,
    > {
        match self.jobs.get(&msg.job_id) {
            None => Response::ready(Err(DispatcherError::JobNotFound { job_id: msg.job_id })),
            Some(JobEntry::Done { checkpoints, .. }) => {
                Response::ready(Ok(checkpoints.as_deref().cloned()))
            }
            Some(JobEntry::Running { gateway, .. }) => {
                let gateway = gateway.clone();
                Response::future(async move {
                    gateway
                        .ask(jobmaster::RequestCheckpointStats)
                        .await
                        .map_err(Into::into)
                })
            }
        }
    }
}

impl Handler<TriggerSavepoint> for Dispatcher {
    fn handle(
        &mut self,
        msg: TriggerSavepoint,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<u64, DispatcherError>> {
        let job_id = msg.job_id;
        match self.jobs.get(&job_id) {
            None => Response::ready(Err(DispatcherError::JobNotFound { job_id })),
            Some(JobEntry::Done { result, .. }) => {
                Response::ready(Err(DispatcherError::JobMaster {
                    job_id,
                    reason: format!("the job is {}: no savepoint can be taken", result.status),
                }))
            }
            Some(JobEntry::Running { gateway, .. }) => {
                let gateway = gateway.clone();
                Response::future(async move {
                    gateway
                        .ask(jobmaster::TriggerSavepoint {
                            target_directory: msg.target_directory,
                            terminate: msg.terminate,
                        })
                        .await
                        .map_err(DispatcherError::from)?
                        .map_err(|e| DispatcherError::JobMaster {
                            job_id,
                            reason: e.to_string(),
                        })
                })
            }
        }
    }
}

impl Handler<RequestSavepointStatus> for Dispatcher {
    fn handle(
        &mut self,
        msg: RequestSavepointStatus,
        _: &mut RpcContext<'_, Self>,
    ) -> Response<Self, Result<Option<jobmaster::SavepointStatus>, DispatcherError>> {
        match self.jobs.get(&msg.job_id) {
            None => Response::ready(Err(DispatcherError::JobNotFound { job_id: msg.job_id })),
            Some(JobEntry::Done {
                checkpoints,
                result,
                ..
            }) => {
                // A finished job's completed savepoints are in its archived statistics; any
                // other savepoint it had can no longer complete.
                let location = checkpoints
                    .as_deref()
                    .and_then(|c| c.savepoint_location(msg.id));
                let status = match (location, checkpoints) {
                    (Some(location), _) => Some(jobmaster::SavepointStatus::Completed(location)),
                    (None, Some(_)) => Some(jobmaster::SavepointStatus::Failed(format!(
                        "the job is {} and savepoint {} did not complete",
                        result.status, msg.id
                    ))),
                    (None, None) => None,
                };
                Response::ready(Ok(status))
            }
            Some(JobEntry::Running { gateway, .. }) => {
                let gateway = gateway.clone();
                let id = msg.id;
                Response::future(async move {
                    gateway
                        .ask(jobmaster::RequestSavepointStatus { id })
                        .await
                        .map_err(Into::into)
                })
            }
        }
    }
}

rpc_protocol!(Dispatcher {
    SubmitJob,
    JobReachedTerminalState,
    CancelJob,
    RequestJobOverviews,
    RequestJobStatus,
    RequestJobDetails,
    RequestJobExceptions,
    RequestJobResult,
    RequestClusterOverview,
    RequestTaskManagers,
    RequestCheckpointStats,
    TriggerSavepoint,
    RequestSavepointStatus,
});

/// Flattens a gateway answer: transport errors become `DispatcherError::Rpc`.
fn flatten<T>(
    r: Result<Result<T, DispatcherError>, rflink_rpc::RpcError>,
) -> Result<T, DispatcherError> {
    r.map_err(DispatcherError::from).and_then(|inner| inner)
}

impl RestfulGateway for RpcGateway<Dispatcher> {
    fn submit_job(&self, job_graph: JobGraph) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(SubmitJob { job_graph }).await) }.boxed()
    }

    fn cancel_job(&self, job_id: JobId) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(CancelJob { job_id }).await) }.boxed()
    }

    fn job_overviews(&self) -> BoxFuture<'static, Result<Vec<JobOverview>, DispatcherError>> {
        let g = self.clone();
        async move { g.ask(RequestJobOverviews).await.map_err(Into::into) }.boxed()
    }

    fn job_status(&self, job_id: JobId) -> BoxFuture<'static, Result<JobStatus, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(RequestJobStatus { job_id }).await) }.boxed()
    }

    fn job_details(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobDetails, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(RequestJobDetails { job_id }).await) }.boxed()
    }

    fn job_exceptions(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobExceptions, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(RequestJobExceptions { job_id }).await) }.boxed()
    }

    fn job_result(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<Option<JobResult>, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(RequestJobResult { job_id }).await) }.boxed()
    }

    fn cluster_overview(&self) -> BoxFuture<'static, Result<ClusterOverview, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(RequestClusterOverview).await) }.boxed()
    }

    fn task_managers(&self) -> BoxFuture<'static, Result<Vec<TaskManagerInfo>, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(RequestTaskManagers).await) }.boxed()
    }

    fn checkpoint_stats(
        &self,
        job_id: JobId,
    ) -> BoxFuture<
        'static,
        Result<Option<crate::checkpoint::stats::CheckpointStatsView>, DispatcherError>,
    > {
        let g = self.clone();
        async move { flatten(g.ask(RequestCheckpointStats { job_id }).await) }.boxed()
    }

    fn trigger_savepoint(
        &self,
        job_id: JobId,
        target_directory: Option<String>,
        terminate: bool,
    ) -> BoxFuture<'static, Result<u64, DispatcherError>> {
        let g = self.clone();
        async move {
            flatten(
                g.ask(TriggerSavepoint {
                    job_id,
                    target_directory,
                    terminate,
                })
                .await,
            )
        }
        .boxed()
    }

    fn savepoint_status(
        &self,
        job_id: JobId,
        id: u64,
    ) -> BoxFuture<'static, Result<Option<jobmaster::SavepointStatus>, DispatcherError>> {
        let g = self.clone();
        async move { flatten(g.ask(RequestSavepointStatus { job_id, id }).await) }.boxed()
    }
}

/// The REST API's way to the Dispatcher when leadership can move: it delegates to the current
/// leader's Dispatcher in this process, and answers [`DispatcherError::NotLeader`] (503, naming
/// the leader's REST URL when known) while this JobManager is a standby. Flink's REST handlers
/// do the same through their `GatewayRetriever`.
#[derive(Default)]
pub struct LeaderGateway {
    current: std::sync::RwLock<Option<RpcGateway<Dispatcher>>>,
    leader_rest: std::sync::RwLock<Option<String>>,
}

impl LeaderGateway {
    /// One that follows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// This process now leads: calls go to `gateway`.
    pub fn set_leading(&self, gateway: Option<RpcGateway<Dispatcher>>) {
        if let Ok(mut current) = self.current.write() {
            *current = gateway;
        }
    }

    /// Where the leader's REST API is (for the 503 message), when another process leads.
    pub fn set_leader_rest(&self, url: Option<String>) {
        if let Ok(mut rest) = self.leader_rest.write() {
            *rest = url;
        }
    }

    fn gateway(&self) -> Result<RpcGateway<Dispatcher>, DispatcherError> {
        self.current
            .read()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| DispatcherError::NotLeader {
                leader: self.leader_rest.read().ok().and_then(|l| l.clone()),
            })
    }
}

macro_rules! via_leader {
    ($self:ident, |$g:ident| $call:expr) => {
        match $self.gateway() {
            Ok($g) => $call,
            Err(err) => Box::pin(async move { Err(err) }),
        }
    };
}

impl RestfulGateway for LeaderGateway {
    fn submit_job(&self, job_graph: JobGraph) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        via_leader!(self, |g| g.submit_job(job_graph))
    }
    fn cancel_job(&self, job_id: JobId) -> BoxFuture<'static, Result<Ack, DispatcherError>> {
        via_leader!(self, |g| g.cancel_job(job_id))
    }
    fn job_overviews(&self) -> BoxFuture<'static, Result<Vec<JobOverview>, DispatcherError>> {
        via_leader!(self, |g| g.job_overviews())
    }
    fn job_status(&self, job_id: JobId) -> BoxFuture<'static, Result<JobStatus, DispatcherError>> {
        via_leader!(self, |g| g.job_status(job_id))
    }
    fn job_details(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobDetails, DispatcherError>> {
        via_leader!(self, |g| g.job_details(job_id))
    }
    fn job_exceptions(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<JobExceptions, DispatcherError>> {
        via_leader!(self, |g| g.job_exceptions(job_id))
    }
    fn job_result(
        &self,
        job_id: JobId,
    ) -> BoxFuture<'static, Result<Option<JobResult>, DispatcherError>> {
        via_leader!(self, |g| g.job_result(job_id))
    }
    fn cluster_overview(&self) -> BoxFuture<'static, Result<ClusterOverview, DispatcherError>> {
        via_leader!(self, |g| g.cluster_overview())
    }
    fn task_managers(&self) -> BoxFuture<'static, Result<Vec<TaskManagerInfo>, DispatcherError>> {
        via_leader!(self, |g| g.task_managers())
    }
    fn checkpoint_stats(
        &self,
        job_id: JobId,
    ) -> BoxFuture<
        'static,
        Result<Option<crate::checkpoint::stats::CheckpointStatsView>, DispatcherError>,
    > {
        via_leader!(self, |g| g.checkpoint_stats(job_id))
    }
    fn trigger_savepoint(
        &self,
        job_id: JobId,
        target_directory: Option<String>,
        terminate: bool,
    ) -> BoxFuture<'static, Result<u64, DispatcherError>> {
        via_leader!(self, |g| g.trigger_savepoint(
            job_id,
            target_directory,
            terminate
        ))
    }
    fn savepoint_status(
        &self,
        job_id: JobId,
        id: u64,
    ) -> BoxFuture<'static, Result<Option<crate::jobmaster::SavepointStatus>, DispatcherError>>
    {
        via_leader!(self, |g| g.savepoint_status(job_id, id))
    }
}
