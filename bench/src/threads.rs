//! OS threads and single-threaded runtimes for the two sides of a benchmark.

use std::future::Future;
use std::thread::JoinHandle;

use crate::BoxError;

/// A named OS thread whose body returns a `Result`.
pub struct Worker<T> {
    name: &'static str,
    handle: JoinHandle<Result<T, BoxError>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts `body` on a new thread called `name`.
    pub fn spawn(
        name: &'static str,
        body: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
    ) -> Result<Self, BoxError> {
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|e| format!("starting thread {name}: {e}"))?;
        Ok(Worker { name, handle })
    }

    /// Waits for the thread; a panic becomes an error.
    pub fn join(self) -> Result<T, BoxError> {
        match self.handle.join() {
            Ok(result) => result.map_err(|e| format!("{}: {e}", self.name).into()),
            Err(_) => Err(format!("thread {} panicked", self.name).into()),
        }
    }
}

/// Runs `body` on a new thread called `name` and waits for it.
pub fn run<T: Send + 'static>(
    name: &'static str,
    body: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    Worker::spawn(name, body)?.join()
}

/// Runs `fut` as a task of a fresh current-thread tokio runtime on the calling thread (a task,
/// not the `block_on` future itself, as actors' futures are) and returns its output.
pub fn tokio_task<T, F>(fut: F) -> Result<T, BoxError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, BoxError>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::spawn(fut)
            .await
            .map_err(|e| BoxError::from(format!("task failed: {e}")))?
    })
}
