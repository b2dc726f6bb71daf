//! A task: one invokable on its own thread. Flink: `Task` (`doRun`).
//!
//! The thread reports INITIALIZING and RUNNING, runs the invokable, and reports the final state:
//! FINISHED, CANCELED (cancelled, whatever the invokable returned) or FAILED (an error or a panic,
//! which is caught: a panicking task never takes its TaskExecutor down). Reports go through the
//! TaskExecutor's main thread, which forwards them to the JobMaster.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use rflink_rpc::MainThreadHandle;

use super::invokable::{CancelSignal, Invokable, TaskContext, TaskError};
use super::{task_error, TaskExecutor};
use crate::executiongraph::{ErrorInfo, ExecutionState};
use crate::types::ExecutionAttemptId;

/// What the thread needs to know.
pub(crate) struct TaskSpec {
    pub(crate) job_id: crate::types::JobId,
    pub(crate) attempt: ExecutionAttemptId,
    pub(crate) task_name: String,
    pub(crate) parallelism: u32,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) location: String,
}

/// Starts the task thread.
pub(crate) fn spawn(
    spec: TaskSpec,
    mut invokable: Box<dyn Invokable>,
    cancel: Arc<CancelSignal>,
    te: MainThreadHandle<TaskExecutor>,
) -> std::io::Result<()> {
    let name = format!("task {}", spec.task_name);
    std::thread::Builder::new().name(name).spawn(move || {
        let attempt = spec.attempt;
        // Every event the task logs carries its job, task and attempt (as fields of the JSON
        // log format, as a prefix of the text one).
        let span = tracing::info_span!(
            "task",
            job_id = %spec.job_id,
            task = %spec.task_name,
            attempt = %attempt,
        );
        let _entered = span.enter();
        let report = |state: ExecutionState, error: Option<ErrorInfo>| {
            te.run_async(move |te, ctx| te.on_task_state(attempt, state, error, ctx));
        };
        report(ExecutionState::Initializing, None);
        report(ExecutionState::Running, None);
        let ctx = TaskContext {
            attempt,
            task_name: spec.task_name.clone(),
            subtask_index: attempt.vertex.subtask_index,
            parallelism: spec.parallelism,
            config: spec.config,
            cancel: Arc::clone(&cancel),
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| invokable.invoke(&ctx)));
        let (state, error) = match outcome {
            _ if cancel.is_cancelled() => (ExecutionState::Canceled, None),
            Ok(Ok(())) => (ExecutionState::Finished, None),
            Ok(Err(TaskError::Canceled)) => (ExecutionState::Canceled, None),
            Ok(Err(TaskError::Failed(message))) => (
                ExecutionState::Failed,
                Some(task_error(
                    "TaskFailure",
                    message,
                    &spec.task_name,
                    &spec.location,
                )),
            ),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                (
                    ExecutionState::Failed,
                    Some(task_error(
                        "TaskPanic",
                        format!("the task panicked: {what}"),
                        &spec.task_name,
                        &spec.location,
                    )),
                )
            }
        };
        // Flink logs every task's switch to its final state at INFO too.
        tracing::info!(%state, "task ended");
        report(state, error);
    })?;
    Ok(())
}
