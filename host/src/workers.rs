//! The threads that serve the port: one current-thread tokio runtime each, all accepting on the
//! one listener. A connection is served to its end by the worker that accepted it, with its
//! session's tasks and the upstream HTTP connections its calls take (each worker has its own
//! idle ones), so the wake-ups of a call stay on one thread: no task is stolen, and no idle
//! worker is woken to look for work. On a 2-core machine shared with its load, tokio's
//! work-stealing scheduler cost about a quarter more CPU per call than this.
//!
//! The main thread's runtime is worker 0: it also runs everything that is not a connection
//! (upstream supervisors and their WebSocket and stdio links, file watches, the metrics port).

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::config::MAX_WORKERS;

thread_local! {
    /// This thread's worker index; 0 on the main thread and on threads that are not workers.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers run (1 until [`start`]).
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// How many workers serve the port.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// The index of the worker running this code, in `0..count()`: what per-worker state (an
/// upstream's idle HTTP connections) is picked by.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Connections each worker serves now.
static CONNECTIONS: [AtomicUsize; MAX_WORKERS] = [const { AtomicUsize::new(0) }; MAX_WORKERS];

/// A connection, counted against the worker that serves it until dropped.
pub struct Assignment {
    worker: usize,
}

impl Assignment {
    /// The worker that serves it.
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Assignment {
    fn drop(&mut self) {
        CONNECTIONS[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The worker that serves a new connection, counted for one more: the one running this code,
/// unless it serves more than its [`slack`] beyond the worker with the fewest (then that one).
/// Moving a connection costs two `epoll_ctl`s and a wake-up of the other thread; the slack keeps
/// short connections where they were accepted while the workers stay within it of each other.
pub fn assign() -> Assignment {
    let here = current();
    let mut worker = here;
    let mut fewest = CONNECTIONS[here].load(Ordering::Relaxed);
    let mine = fewest;
    for (index, connections) in CONNECTIONS.iter().enumerate().take(count()) {
        let connections = connections.load(Ordering::Relaxed);
        if connections < fewest {
            (worker, fewest) = (index, connections);
        }
    }
    if mine <= fewest + slack(fewest) {
        worker = here;
    }
    CONNECTIONS[worker].fetch_add(1, Ordering::Relaxed);
    Assignment { worker }
}

/// How many more connections than the least busy worker a worker keeps before it hands new
/// ones on: [`SLACK`], or an eighth more on busy workers (1,000 connections each: 125).
fn slack(fewest: usize) -> usize {
    SLACK.max(fewest / 8)
}

/// The least imbalance a worker keeps new connections through.
const SLACK: usize = 2;

/// Makes this thread count as worker `index`, for tests of per-worker state.
#[cfg(test)]
pub(crate) fn pretend_to_be(index: usize) {
    INDEX.with(|cell| cell.set(index));
}

/// Every worker's runtime, worker 0's (the caller of [`start`]) first; set once by [`start`].
static RUNTIMES: OnceLock<Vec<Handle>> = OnceLock::new();

/// Starts workers 1 to `workers - 1`, each a thread running a current-thread runtime until
/// the process exits; the caller's own runtime is worker 0. Called once, from within that
/// runtime, before anything that keeps per-worker state is built. Nothing is served until
/// [`serve`].
pub fn start(workers: usize) -> std::io::Result<()> {
    if RUNTIMES.get().is_some() {
        return Err(std::io::Error::other("the workers were started already"));
    }
    let workers = workers.clamp(1, MAX_WORKERS);
    let mut handles = Vec::with_capacity(workers);
    handles.push(Handle::current());
    for index in 1..workers {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new().name(format!("relay-worker-{index}")).spawn(move || {
            INDEX.with(|cell| cell.set(index));
            runtime.block_on(std::future::pending::<()>());
        })?;
    }
    RUNTIMES.set(handles).map_err(|_| std::io::Error::other("the workers were started already"))?;
    COUNT.store(workers, Ordering::Relaxed);
    Ok(())
}

/// Runs `task` on worker `index`, whichever worker calls (before [`start`]: on the caller's
/// runtime).
pub fn spawn_on<F>(index: usize, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match RUNTIMES.get().and_then(|runtimes| runtimes.get(index)) {
        Some(runtime) => drop(runtime.spawn(task)),
        None => drop(tokio::spawn(task)),
    }
}

/// Has every worker run `serve` on its own handle of `listener`, registered with that worker's
/// runtime. Returns once `serve` is started everywhere.
pub fn serve<F, Fut>(listener: TcpListener, serve: F) -> std::io::Result<()>
where
    F: Fn(TcpListener) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = listener.into_std()?;
    let runtimes = RUNTIMES.get().ok_or_else(|| std::io::Error::other("the workers were not started"))?;
    for (index, runtime) in runtimes.iter().enumerate() {
        let own = listener.try_clone()?;
        // Registered with the worker's own runtime, whose thread will poll it.
        let own = {
            let _worker = runtime.enter();
            TcpListener::from_std(own)?
        };
        spawn_on(index, serve(own));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_accepts_on_the_shared_listener_and_knows_its_index() {
        // Worker 0 on a thread of its own that outlives this test, as the main thread does in
        // the relay: other tests of this process may still send work to it.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                started_tx.send(start(3)).unwrap();
                std::future::pending::<()>().await
            })
        });
        started_rx.recv().unwrap().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            assert_eq!(count(), 3);
            assert!(start(2).is_err(), "started once");
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // Each worker accepts one connection, answers with its index and stops accepting:
            // three connections are then served by three different workers.
            serve(listener, |listener: TcpListener| async move {
                let (mut stream, _) = listener.accept().await.unwrap();
                let index = u8::try_from(current()).unwrap();
                tokio::io::AsyncWriteExt::write_all(&mut stream, &[index]).await.unwrap();
                std::future::pending::<()>().await;
            })
            .unwrap();
            let mut seen = std::collections::BTreeSet::new();
            let mut clients = Vec::new();
            for _ in 0..3 {
                let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
                let mut index = [0u8; 1];
                tokio::io::AsyncReadExt::read_exact(&mut client, &mut index).await.unwrap();
                seen.insert(index[0]);
                clients.push(client);
            }
            assert_eq!(seen, [0, 1, 2].into(), "each worker served one connection");
            // This thread counts as worker 0: it keeps new connections until it has more than
            // SLACK beyond the fewest, then hands them to the fewest.
            let kept: Vec<_> = (0..=SLACK).map(|_| assign()).collect();
            assert!(kept.iter().all(|a| a.worker() == 0), "kept within the slack");
            let handed = assign();
            assert_eq!(handed.worker(), 1, "past the slack: the fewest");
            assert_eq!(assign().worker(), 2, "then the next fewest");
            drop(kept);
            assert_eq!(assign().worker(), 0, "a worker whose connections ended keeps the next");
            assert_eq!(slack(8000), 1000, "an eighth on busy workers");
            let (ran_tx, ran_rx) = tokio::sync::oneshot::channel();
            spawn_on(2, async move { ran_tx.send(current()).unwrap() });
            assert_eq!(ran_rx.await.unwrap(), 2, "spawn_on runs on that worker");
            // From another worker too, worker 0 included: where a connection accepted on one
            // worker is sent to be served.
            let (ran_tx, ran_rx) = tokio::sync::oneshot::channel();
            spawn_on(2, async move { spawn_on(0, async move { ran_tx.send(current()).unwrap() }) });
            assert_eq!(ran_rx.await.unwrap(), 0, "spawn_on(0) from worker 2 runs on worker 0");
            let (ran_tx, ran_rx) = tokio::sync::oneshot::channel();
            spawn_on(1, async move { spawn_on(2, async move { ran_tx.send(current()).unwrap() }) });
            assert_eq!(ran_rx.await.unwrap(), 2, "spawn_on(2) from worker 1 runs on worker 2");
        });
    }
}
