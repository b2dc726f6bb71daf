//! Registering at a leader, retrying until it works. Flink: `RetryingRegistration`,
//! `RegistrationResponse`.
//!
//! Used for TaskExecutor → ResourceManager, JobMaster → ResourceManager and
//! TaskExecutor → JobMaster. Each attempt gets a timeout that starts at
//! `cluster.registration.initial-timeout` and doubles after every timed-out attempt up to
//! `cluster.registration.max-timeout`. A rejection waits `refused-registration-delay`; a failure
//! reported by the leader waits `error-delay`.
//!
//! One improvement on Flink: when the leader's node cannot be reached at all (not started yet,
//! restarting), Flink waits the full `error-delay` (10 s) between attempts. Here such attempts back
//! off from the initial timeout, doubling up to `error-delay`, so a TaskManager reconnects to a
//! restarted JobManager within a fraction of a second.

use std::future::Future;
use std::time::Duration;

use rflink_rpc::RpcError;
use serde::{Deserialize, Serialize};

/// The leader's answer to a registration. Flink: `RegistrationResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrationResponse<S> {
    /// Registered.
    Success(S),
    /// The leader could not register the caller now (try again after the error delay).
    Failure(String),
    /// The leader refuses the caller (try again after the refused delay).
    Rejection(String),
}

impl<S> RegistrationResponse<S> {
    /// Maps the success value.
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> RegistrationResponse<T> {
        match self {
            RegistrationResponse::Success(s) => RegistrationResponse::Success(f(s)),
            RegistrationResponse::Failure(r) => RegistrationResponse::Failure(r),
            RegistrationResponse::Rejection(r) => RegistrationResponse::Rejection(r),
        }
    }
}

/// Timing of registration attempts (`cluster.registration.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First attempt's timeout. Default 100 ms.
    pub initial_timeout: Duration,
    /// Largest attempt timeout. Default 30 s.
    pub max_timeout: Duration,
    /// Pause after a failure. Default 10 s.
    pub error_delay: Duration,
    /// Pause after a rejection. Default 30 s.
    pub refused_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_timeout: Duration::from_millis(100),
            max_timeout: Duration::from_secs(30),
            error_delay: Duration::from_secs(10),
            refused_delay: Duration::from_secs(30),
        }
    }
}

/// What happened to one attempt, for logging and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Timed out after this long; the next attempt gets a longer timeout.
    TimedOut(Duration),
    /// The leader was unreachable; waiting this long.
    Unreachable(Duration),
    /// The leader failed the registration; waiting this long.
    Failed(Duration),
    /// The leader rejected the registration; waiting this long.
    Rejected(Duration),
}

/// Calls `attempt(timeout)` until it returns `Success`, following `policy`, and returns the
/// success. `on_attempt` sees every unsuccessful attempt (for logs and tests). The future never
/// ends otherwise: cancel it by dropping it.
pub async fn register_with_retries<S, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut attempt: F,
    mut on_attempt: impl FnMut(&AttemptOutcome),
) -> S
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<RegistrationResponse<S>, RpcError>>,
{
    let mut timeout = policy.initial_timeout;
    let mut unreachable_delay = policy.initial_timeout;
    loop {
        let outcome = match attempt(timeout).await {
            Ok(RegistrationResponse::Success(s)) => return s,
            Ok(RegistrationResponse::Rejection(reason)) => {
                tracing::warn!(what, reason, "registration rejected");
                timeout = policy.initial_timeout;
                AttemptOutcome::Rejected(policy.refused_delay)
            }
            Ok(RegistrationResponse::Failure(reason)) => {
                tracing::warn!(what, reason, "registration failed");
                AttemptOutcome::Failed(policy.error_delay)
            }
            Err(RpcError::Timeout { .. }) => {
                let used = timeout;
                timeout = (timeout * 2).min(policy.max_timeout);
                tracing::debug!(what, timeout = ?used, "registration attempt timed out");
                AttemptOutcome::TimedOut(used)
            }
            Err(err) if err.is_retryable() => {
                let delay = unreachable_delay;
                unreachable_delay = (unreachable_delay * 2).min(policy.error_delay);
                tracing::debug!(what, error = %err, ?delay, "registration target unreachable");
                AttemptOutcome::Unreachable(delay)
            }
            Err(err) => {
                tracing::warn!(what, error = %err, "registration attempt failed");
                AttemptOutcome::Failed(policy.error_delay)
            }
        };
        on_attempt(&outcome);
        match outcome {
            AttemptOutcome::TimedOut(_) => {}
            AttemptOutcome::Unreachable(d)
            | AttemptOutcome::Failed(d)
            | AttemptOutcome::Rejected(d) => {
                if !matches!(outcome, AttemptOutcome::Unreachable(_)) {
                    unreachable_delay = policy.initial_timeout;
                }
                tokio::time::sleep(d).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    type Script = Arc<Mutex<VecDeque<Result<RegistrationResponse<u32>, RpcError>>>>;

    fn timeout_err() -> RpcError {
        RpcError::Timeout {
            recipient: "r".into(),
            message: "Register".into(),
            timeout: Duration::from_millis(1),
        }
    }

    fn unreachable_err() -> RpcError {
        RpcError::RecipientUnreachable {
            recipient: "r".into(),
            message: "Register".into(),
            reason: "down".into(),
        }
    }

    /// Scenario 18: the timeout doubles up to the maximum; a failure waits error-delay, a
    /// rejection waits refused-delay. Runs on paused time, so no real waiting.
    #[tokio::test(start_paused = true)]
    async fn follows_flinks_retry_policy() {
        let policy = RetryPolicy {
            initial_timeout: Duration::from_millis(100),
            max_timeout: Duration::from_millis(500),
            error_delay: Duration::from_secs(10),
            refused_delay: Duration::from_secs(30),
        };
        let script: Script = Arc::new(Mutex::new(
            vec![
                Err(timeout_err()),
                Err(timeout_err()),
                Err(timeout_err()),
                Err(timeout_err()),
                Ok(RegistrationResponse::Failure("busy".into())),
                Ok(RegistrationResponse::Rejection("no".into())),
                Err(unreachable_err()),
                Err(unreachable_err()),
                Ok(RegistrationResponse::Success(7)),
            ]
            .into(),
        ));
        let timeouts = Arc::new(Mutex::new(Vec::new()));
        let mut outcomes = Vec::new();
        let start = tokio::time::Instant::now();
        let result = register_with_retries(
            policy,
            "test",
            |t| {
                timeouts.lock().expect("lock").push(t);
                let next = script
                    .lock()
                    .expect("lock")
                    .pop_front()
                    .expect("script long enough");
                async move { next }
            },
            |o| outcomes.push(o.clone()),
        )
        .await;
        assert_eq!(result, 7);
        let ms = Duration::from_millis;
        assert_eq!(
            outcomes,
            vec![
                AttemptOutcome::TimedOut(ms(100)),
                AttemptOutcome::TimedOut(ms(200)),
                AttemptOutcome::TimedOut(ms(400)),
                AttemptOutcome::TimedOut(ms(500)),
                AttemptOutcome::Failed(Duration::from_secs(10)),
                AttemptOutcome::Rejected(Duration::from_secs(30)),
                AttemptOutcome::Unreachable(ms(100)),
                AttemptOutcome::Unreachable(ms(200)),
            ]
        );
        // The rejection resets the attempt timeout.
        assert_eq!(timeouts.lock().expect("lock")[6], ms(100));
        // Only the delays were waited (timeouts are the attempt's own business here).
        assert_eq!(start.elapsed(), Duration::from_secs(40) + ms(300));
    }
}
