//! The upstream resource subscriptions the sessions share: one per exposed URI, made for its
//! first subscriber, while later ones wait for how that went, and ended with its last.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// How many sessions subscribe to each exposed URI, and whether its upstream subscription
/// was made (`None` while it is being made).
#[derive(Default)]
pub(super) struct Subscriptions {
    table: Mutex<HashMap<String, Shared>>,
}

struct Shared {
    count: usize,
    made: Arc<watch::Sender<Option<bool>>>,
}

/// What a session that subscribes does next.
pub(super) enum Joined<'a> {
    /// It is the first: it makes the upstream subscription, and says how that went.
    First(Making<'a>),
    /// Another session made it, or is making it: whether that succeeded (wait for `Some`).
    Waiting(watch::Receiver<Option<bool>>),
}

/// The first subscriber's duty to make the upstream subscription. Dropped without
/// [`Making::made`] (it failed, or the session went away meanwhile), the URI is forgotten
/// with every session waiting on it, which are told it failed: none of them is subscribed, and
/// the next subscriber tries again.
pub(super) struct Making<'a> {
    table: &'a Subscriptions,
    uri: String,
    made: Arc<watch::Sender<Option<bool>>>,
    done: bool,
}

impl Making<'_> {
    /// The upstream subscription is made: the sessions waiting on it are subscribed.
    pub(super) fn made(mut self) {
        self.done = true;
        self.made.send_replace(Some(true));
    }
}

impl Drop for Making<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut table = self.table.table.lock().expect("subscriptions lock");
        if table.get(&self.uri).is_some_and(|shared| Arc::ptr_eq(&shared.made, &self.made)) {
            table.remove(&self.uri);
        }
        drop(table);
        self.made.send_replace(Some(false));
    }
}

impl Subscriptions {
    /// Counts one more session subscribed to `uri`.
    pub(super) fn join(&self, uri: &str) -> Joined<'_> {
        let mut table = self.table.lock().expect("subscriptions lock");
        if let Some(shared) = table.get_mut(uri) {
            shared.count += 1;
            return Joined::Waiting(shared.made.subscribe());
        }
        let made = Arc::new(watch::Sender::new(None));
        table.insert(uri.to_owned(), Shared { count: 1, made: made.clone() });
        Joined::First(Making { table: self, uri: uri.to_owned(), made, done: false })
    }

    /// Drops one session's subscription to `uri`; true when it was the last (the upstream
    /// subscription is to end).
    pub(super) fn release(&self, uri: &str) -> bool {
        let mut table = self.table.lock().expect("subscriptions lock");
        match table.get_mut(uri) {
            Some(shared) if shared.count > 1 => {
                shared.count -= 1;
                false
            }
            Some(_) => {
                table.remove(uri);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(joined: Joined<'_>) -> watch::Receiver<Option<bool>> {
        match joined {
            Joined::Waiting(made) => made,
            Joined::First(_) => panic!("not the first subscriber"),
        }
    }

    #[test]
    fn a_failed_first_subscription_fails_its_waiters_and_the_next_subscriber_tries_again() {
        let subscriptions = Subscriptions::default();
        let Joined::First(making) = subscriptions.join("u") else { panic!("the first") };
        let later = waiting(subscriptions.join("u"));
        assert_eq!(*later.borrow(), None, "waits while it is being made");
        drop(making);
        assert_eq!(*later.borrow(), Some(false), "told it failed, not that it is subscribed");
        assert!(!subscriptions.release("u"), "nobody is counted any more");
        let Joined::First(making) = subscriptions.join("u") else { panic!("the next one makes it again") };
        making.made();
        assert_eq!(*waiting(subscriptions.join("u")).borrow(), Some(true));
        assert!(!subscriptions.release("u"));
        assert!(subscriptions.release("u"), "the last one ends it");
    }
}
