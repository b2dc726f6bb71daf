//! What a task runs. Flink: `TaskInvokable` / `AbstractInvokable`, looked up by class name; here
//! by registry name.
//!
//! The testing invokables mirror Flink's (`NoOpInvokable`, `BlockingNoOpInvokable`, a failing
//! and a sleeping one): the control-plane tests need them for good, whatever the data plane adds.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::types::ExecutionAttemptId;

/// Why an invokable stopped without finishing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// It saw the cancellation and stopped.
    #[error("the task was canceled")]
    Canceled,
    /// It failed.
    #[error("{0}")]
    Failed(String),
}

/// A wake-up run when a task is cancelled (interrupting a blocked buffer request or input
/// read, say).
pub type CancelHook = Box<dyn Fn() + Send + Sync>;

/// Lets a task see its cancellation promptly, from its own thread.
#[derive(Default)]
pub struct CancelSignal {
    cancelled: Mutex<bool>,
    /// Mirrors `cancelled` for the per-record check on a task's hot path.
    flag: AtomicBool,
    cv: Condvar,
    hooks: Mutex<Vec<CancelHook>>,
}

impl std::fmt::Debug for CancelSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelSignal")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl CancelSignal {
    /// Requests cancellation; wakes every waiter and runs every hook.
    pub fn cancel(&self) {
        {
            let mut c = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
            *c = true;
            self.flag.store(true, Ordering::Release);
            self.cv.notify_all();
        }
        let hooks = std::mem::take(&mut *self.hooks.lock().unwrap_or_else(|p| p.into_inner()));
        for hook in hooks {
            hook();
        }
    }

    /// Runs `hook` on cancellation, or at once if the task is cancelled already.
    pub fn on_cancel(&self, hook: CancelHook) {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if self.flag.load(Ordering::Acquire) {
            drop(hooks);
            hook();
        } else {
            hooks.push(hook);
        }
    }

    /// True once cancellation was requested (one atomic load).
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Blocks up to `timeout` (forever if `None`) or until cancelled; true if cancelled.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut c = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        while !*c {
            match deadline {
                None => c = self.cv.wait(c).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    c = self
                        .cv
                        .wait_timeout(c, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// What a running task knows about itself.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The attempt.
    pub attempt: ExecutionAttemptId,
    /// `"name (i/n)"`.
    pub task_name: String,
    /// The subtask index.
    pub subtask_index: u32,
    /// The vertex's parallelism.
    pub parallelism: u32,
    /// The vertex's parameters.
    pub config: BTreeMap<String, String>,
    /// Its cancellation.
    pub cancel: Arc<CancelSignal>,
}

/// Code a task runs on its own thread.
pub trait Invokable: Send + 'static {
    /// Runs the task to its end. Should return promptly with [`TaskError::Canceled`] once
    /// `ctx.cancel` is signalled.
    fn invoke(&mut self, ctx: &TaskContext) -> Result<(), TaskError>;
}

/// Makes an invokable from the vertex's parameters.
pub type InvokableFactory =
    Arc<dyn Fn(&BTreeMap<String, String>) -> Result<Box<dyn Invokable>, String> + Send + Sync>;

/// Invokables by name. The TaskExecutor instantiates what a deployment names.
#[derive(Clone, Default)]
pub struct InvokableRegistry {
    factories: HashMap<String, InvokableFactory>,
}

impl std::fmt::Debug for InvokableRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.factories.keys().collect();
        names.sort();
        f.debug_struct("InvokableRegistry")
            .field("names", &names)
            .finish()
    }
}

impl InvokableRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        InvokableRegistry::default()
    }

    /// A registry with the testing invokables.
    pub fn with_testing_invokables() -> Self {
        let mut r = InvokableRegistry::new();
        r.register("NoOpInvokable", |_| Ok(Box::new(NoOpInvokable)));
        r.register("BlockingNoOpInvokable", |_| {
            Ok(Box::new(BlockingNoOpInvokable))
        });
        r.register("FailingInvokable", |config| {
            Ok(Box::new(FailingInvokable {
                message: config
                    .get("message")
                    .cloned()
                    .unwrap_or_else(|| "FailingInvokable failed as asked".into()),
            }))
        });
        r.register("SleepingInvokable", |config| {
            let millis = match config.get("millis") {
                Some(m) => m
                    .parse::<u64>()
                    .map_err(|_| format!("millis {m:?} is not a number"))?,
                None => 100,
            };
            Ok(Box::new(SleepingInvokable {
                duration: Duration::from_millis(millis),
            }))
        });
        r
    }

    /// Adds or replaces a factory.
    pub fn register(
        &mut self,
        name: &str,
        factory: impl Fn(&BTreeMap<String, String>) -> Result<Box<dyn Invokable>, String>
            + Send
            + Sync
            + 'static,
    ) {
        self.factories.insert(name.to_string(), Arc::new(factory));
    }

    /// Instantiates `name` with `config`.
    pub fn instantiate(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<Box<dyn Invokable>, String> {
        match self.factories.get(name) {
            Some(factory) => factory(config),
            None => Err(format!("no invokable named {name:?} is registered")),
        }
    }
}

/// Returns at once. Flink: `NoOpInvokable`.
#[derive(Debug)]
pub struct NoOpInvokable;
impl Invokable for NoOpInvokable {
    fn invoke(&mut self, _: &TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Runs until cancelled. Flink: `BlockingNoOpInvokable`.
#[derive(Debug)]
pub struct BlockingNoOpInvokable;
impl Invokable for BlockingNoOpInvokable {
    fn invoke(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        ctx.cancel.wait(None);
        Err(TaskError::Canceled)
    }
}

/// Fails with its message.
#[derive(Debug)]
pub struct FailingInvokable {
    /// The failure message.
    pub message: String,
}
impl Invokable for FailingInvokable {
    fn invoke(&mut self, _: &TaskContext) -> Result<(), TaskError> {
        Err(TaskError::Failed(self.message.clone()))
    }
}

/// Sleeps, then finishes; cancellable while sleeping.
#[derive(Debug)]
pub struct SleepingInvokable {
    /// How long.
    pub duration: Duration,
}
impl Invokable for SleepingInvokable {
    fn invoke(&mut self, ctx: &TaskContext) -> Result<(), TaskError> {
        if ctx.cancel.wait(Some(self.duration)) {
            Err(TaskError::Canceled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ExecutionGraphId, ExecutionVertexId, JobVertexId};

    fn ctx() -> TaskContext {
        TaskContext {
            attempt: ExecutionAttemptId {
                execution_graph_id: ExecutionGraphId::generate(),
                vertex: ExecutionVertexId {
                    job_vertex_id: JobVertexId::generate(),
                    subtask_index: 0,
                },
                attempt_number: 0,
            },
            task_name: "t (1/1)".into(),
            subtask_index: 0,
            parallelism: 1,
            config: BTreeMap::new(),
            cancel: Arc::new(CancelSignal::default()),
        }
    }

    #[test]
    fn testing_invokables_behave() {
        let r = InvokableRegistry::with_testing_invokables();
        let none = BTreeMap::new();
        let c = ctx();
        assert_eq!(
            r.instantiate("NoOpInvokable", &none)
                .expect("exists")
                .invoke(&c),
            Ok(())
        );
        let msg = BTreeMap::from([("message".to_string(), "boom".to_string())]);
        assert_eq!(
            r.instantiate("FailingInvokable", &msg)
                .expect("exists")
                .invoke(&c),
            Err(TaskError::Failed("boom".into()))
        );
        let fast = BTreeMap::from([("millis".to_string(), "1".to_string())]);
        assert_eq!(
            r.instantiate("SleepingInvokable", &fast)
                .expect("exists")
                .invoke(&c),
            Ok(())
        );
        let bad = BTreeMap::from([("millis".to_string(), "soon".to_string())]);
        assert!(r.instantiate("SleepingInvokable", &bad).is_err());
        assert!(r.instantiate("Nope", &none).is_err());

        let blocking_ctx = ctx();
        let cancel = Arc::clone(&blocking_ctx.cancel);
        let mut blocking = r
            .instantiate("BlockingNoOpInvokable", &none)
            .expect("exists");
        let t = std::thread::spawn(move || blocking.invoke(&blocking_ctx));
        cancel.cancel();
        assert_eq!(t.join().expect("thread"), Err(TaskError::Canceled));
    }
}
