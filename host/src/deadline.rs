//! Deadlines that cost nothing when the work is already done. Arming and cancelling a tokio
//! timer locks the runtime's timer wheel twice, from every worker; on the hot path (a plugin
//! call, a request body already in its first read) most work finishes in its first poll and
//! needs no timer at all.

use std::future::Future;
use std::time::Duration;

/// `work`, ended with `Err(Elapsed)` once `deadline` has passed since the call. Work that
/// finishes in its first poll takes no timer; work still running then gets one, measured from
/// the start.
pub async fn within<F: Future>(deadline: Duration, work: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    within_from(std::time::Instant::now(), deadline, work).await
}

/// [`within`], the deadline counted from `started` (a caller that reads the clock anyway
/// passes its reading instead of taking another).
pub async fn within_from<F: Future>(
    started: std::time::Instant,
    deadline: Duration,
    work: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let started = tokio::time::Instant::from_std(started);
    let mut work = std::pin::pin!(work);
    match futures::poll!(work.as_mut()) {
        std::task::Poll::Ready(output) => Ok(output),
        std::task::Poll::Pending => tokio::time::timeout_at(started + deadline, work).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_passes_and_slow_work_ends_at_the_deadline() {
        assert_eq!(within(Duration::ZERO, async { 7 }).await.unwrap(), 7, "ready work needs no time left");
        let started = tokio::time::Instant::now();
        assert!(within(Duration::from_millis(50), std::future::pending::<()>()).await.is_err());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(5), "{waited:?}");
    }
}
