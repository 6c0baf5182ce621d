//! The three scenarios: `reference` (the old relay's stress test as written: each client
//! connects, initializes, makes one call and disconnects), `hold` (open N sessions, keep them
//! all, then every one calls at once) and `rate` (C connections calling as fast as they can, or
//! at a fixed total rate, for D seconds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Client, Target, call_retrying, http_client, open_retrying};
use crate::report::{Progress, Stats};

/// What one run does.
pub struct Plan {
    /// Where to.
    pub target: Target,
    /// The tool each call names, and its arguments.
    pub tool: String,
    pub arguments: Value,
    /// How many clients (reference, hold) or connections (rate).
    pub count: usize,
    /// How long `rate` runs.
    pub duration: Duration,
    /// `rate` at this many calls a second in all (none: as fast as possible).
    pub rate: Option<f64>,
    /// How many connections may be opening at once (hold).
    pub opening_at_once: usize,
}

/// Every client connects, initializes, calls once and disconnects, all at once; a success is
/// the whole client, timed from connect to disconnect.
pub async fn reference(plan: &Plan, stats: &Arc<Stats>, progress: &Progress) -> Value {
    let http = http_client(&plan.target, plan.count);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..plan.count {
        let (target, tool, arguments, http, stats) =
            (plan.target.clone(), plan.tool.clone(), plan.arguments.clone(), http.clone(), stats.clone());
        tasks.spawn(async move {
            let began = Instant::now();
            let outcome = async {
                let mut client = Client::open(&target, &http).await?;
                let answer = client.call(&target, &tool, &arguments).await;
                client.close(&target).await;
                answer
            }
            .await;
            match outcome {
                Ok(_) => stats.success(began.elapsed()),
                Err(failure) => stats.failure(failure),
            }
        });
    }
    drain(&mut tasks, stats, progress, started).await;
    json!({})
}

/// Opens `count` sessions and keeps them all open; then each calls once, all at once.
pub async fn hold(plan: &Plan, stats: &Arc<Stats>, progress: &Progress) -> Value {
    let http = http_client(&plan.target, plan.count.min(4096));
    let opening = Arc::new(Semaphore::new(plan.opening_at_once));
    let go = Arc::new(tokio::sync::Notify::new());
    let opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..plan.count {
        let (target, tool, arguments, http, stats) =
            (plan.target.clone(), plan.tool.clone(), plan.arguments.clone(), http.clone(), stats.clone());
        let (opening, go, opened) = (opening.clone(), go.clone(), opened.clone());
        tasks.spawn(async move {
            let client = {
                let _turn = opening.acquire().await.expect("never closed");
                Client::open(&target, &http).await
            };
            let mut client = match client {
                Ok(client) => client,
                Err(failure) => {
                    stats.failure(failure);
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return None;
                }
            };
            let waiting = go.notified();
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            waiting.await;
            let began = Instant::now();
            match client.call(&target, &tool, &arguments).await {
                Ok(_) => stats.success(began.elapsed()),
                Err(failure) => stats.failure(failure),
            }
            Some(client)
        });
    }
    // Every session is open (or failed): measure while all are held, then release the calls.
    while opened.load(std::sync::atomic::Ordering::Relaxed) < plan.count {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.update(stats, started.elapsed());
    }
    let (_, failed_to_open) = stats.counts();
    let held = plan.count as u64 - failed_to_open;
    let rss_holding = crate::report::target_rss(&plan.target, plan.target.metrics_url().as_deref()).await;
    go.notify_waiters();
    let mut clients = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(Ok(Some(client))) => clients.push(client),
                Some(_) => {}
                None => break,
            },
            _ = ticker.tick() => progress.update(stats, started.elapsed()),
        }
    }
    for client in clients {
        client.close(&plan.target).await;
    }
    json!({"sessions_held": held, "rss_holding": rss_holding})
}

/// `count` connections call for `duration`, as fast as they can or at `rate` calls/s in all.
pub async fn rate(plan: &Plan, stats: &Arc<Stats>, progress: &Progress) -> Value {
    let http = http_client(&plan.target, plan.count);
    let started = Instant::now();
    let until = started + plan.duration;
    let interval = plan.rate.map(|rate| Duration::from_secs_f64(plan.count as f64 / rate.max(0.001)));
    let mut tasks = JoinSet::new();
    for _ in 0..plan.count {
        let (target, tool, arguments, http, stats) =
            (plan.target.clone(), plan.tool.clone(), plan.arguments.clone(), http.clone(), stats.clone());
        tasks.spawn(async move {
            let retried = || stats.retried();
            let mut client = loop {
                match open_retrying(&target, &http, &retried).await {
                    Ok(client) => break client,
                    Err(failure) => {
                        stats.failure(failure);
                        if Instant::now() >= until {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            let mut next = Instant::now();
            while Instant::now() < until {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let began = Instant::now();
                match call_retrying(&mut client, &target, &http, &tool, &arguments, &retried).await {
                    Ok(_) => stats.success(began.elapsed()),
                    Err(failure) => {
                        stats.failure(failure);
                        // A broken connection is replaced, not hammered.
                        match open_retrying(&target, &http, &retried).await {
                            Ok(fresh) => client = fresh,
                            Err(failure) => {
                                stats.failure(failure);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            }
            client.close(&target).await;
        });
    }
    drain(&mut tasks, stats, progress, started).await;
    json!({})
}

async fn drain(tasks: &mut JoinSet<()>, stats: &Stats, progress: &Progress, started: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = ticker.tick() => progress.update(stats, started.elapsed()),
        }
    }
}
