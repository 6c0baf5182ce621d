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
pub(super) enum Joined {
    /// It is the first: it makes the upstream subscription, and says how that went.
    First(Making),
    /// Another session made it, or is making it: whether that succeeded (wait for `Some`).
    Waiting(watch::Receiver<Option<bool>>),
}

/// The first subscriber's duty to make the upstream subscription. Dropped without
/// [`Making::made`] (it failed, or the session went away meanwhile), the sessions waiting on it
/// are told it failed, and the next subscriber makes it again. Counts stay as they are: each
/// session gives its own back, once ([`Subscriptions::release`]: a session that was refused at
/// once, one that ended with the URI among its subscriptions later).
pub(super) struct Making {
    made: Arc<watch::Sender<Option<bool>>>,
    done: bool,
}

impl Making {
    /// The upstream subscription is made: the sessions waiting on it are subscribed.
    pub(super) fn made(mut self) {
        self.done = true;
        self.made.send_replace(Some(true));
    }
}

impl Drop for Making {
    fn drop(&mut self) {
        if !self.done {
            self.made.send_replace(Some(false));
        }
    }
}

impl Subscriptions {
    /// Counts one more session subscribed to `uri`.
    pub(super) fn join(&self, uri: &str) -> Joined {
        let mut table = self.table.lock().expect("subscriptions lock");
        let shared = table.entry(uri.to_owned()).or_insert_with(|| Shared { count: 0, made: Arc::default() });
        shared.count += 1;
        // The first, or the first since the last attempt failed: this one makes it.
        if shared.count == 1 || *shared.made.borrow() == Some(false) {
            shared.made = Arc::new(watch::Sender::new(None));
            return Joined::First(Making { made: shared.made.clone(), done: false });
        }
        Joined::Waiting(shared.made.subscribe())
    }

    /// Drops one session's subscription to `uri`; true when it was the last and the upstream
    /// subscription was made (it is to end).
    pub(super) fn release(&self, uri: &str) -> bool {
        let mut table = self.table.lock().expect("subscriptions lock");
        match table.get_mut(uri) {
            Some(shared) if shared.count > 1 => {
                shared.count -= 1;
                false
            }
            Some(_) => table.remove(uri).is_some_and(|shared| *shared.made.borrow() == Some(true)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(joined: Joined) -> watch::Receiver<Option<bool>> {
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
        // The waiter gives its count back at once; the first's session (gone meanwhile) later.
        assert!(!subscriptions.release("u"));
        let Joined::First(making) = subscriptions.join("u") else { panic!("the next one makes it again") };
        making.made();
        assert!(!subscriptions.release("u"), "the first's session ends: the new one still counts");
        assert_eq!(*waiting(subscriptions.join("u")).borrow(), Some(true));
        assert!(!subscriptions.release("u"));
        assert!(subscriptions.release("u"), "the last one ends it");
        assert!(!subscriptions.release("u"), "once");
    }

    #[test]
    fn a_subscription_never_made_is_not_ended_upstream() {
        let subscriptions = Subscriptions::default();
        let Joined::First(making) = subscriptions.join("u") else { panic!("the first") };
        drop(making);
        assert!(!subscriptions.release("u"), "nothing to unsubscribe");
    }
}
