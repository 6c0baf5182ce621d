//! The upstream resource subscriptions the sessions share: one per exposed URI, made for its
//! first subscriber, while later ones wait for how that went, and ended with its last. Each
//! remembers where it was made (the backend and its own URI): the catalog may name things
//! otherwise by the time it ends (a collision that appeared, a template hidden or added), and
//! the backend's updates reach the URI its subscribers used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::Owner;

/// Where an upstream subscription was made: the backend, and the URI it knows the resource by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    pub(super) owner: Owner,
    pub(super) uri: String,
}

/// How many sessions subscribe to each exposed URI, and whether its upstream subscription
/// was made (`None` while it is being made).
#[derive(Default)]
pub(super) struct Subscriptions {
    table: Mutex<HashMap<String, Shared>>,
}

struct Shared {
    count: usize,
    made: Arc<watch::Sender<Option<bool>>>,
    /// Where it was made, once it was.
    source: Option<Source>,
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
    /// Counts one more session subscribed to `uri`. `serving` says whether a subscription's
    /// source still serves: one made at a backend removed since (or renamed) is made again.
    pub(super) fn join(&self, uri: &str, serving: impl Fn(&Source) -> bool) -> Joined {
        let mut table = self.table.lock().expect("subscriptions lock");
        let shared =
            table.entry(uri.to_owned()).or_insert_with(|| Shared { count: 0, made: Arc::default(), source: None });
        shared.count += 1;
        let gone = shared.source.as_ref().is_some_and(|source| !serving(source));
        // The first, or the first since the last attempt failed or its backend went: this one
        // makes it.
        if shared.count == 1 || *shared.made.borrow() == Some(false) || gone {
            shared.source = None;
            shared.made = Arc::new(watch::Sender::new(None));
            return Joined::First(Making { made: shared.made.clone(), done: false });
        }
        Joined::Waiting(shared.made.subscribe())
    }

    /// The upstream subscription `making` made for `uri` was made at `source`.
    pub(super) fn made(&self, uri: &str, making: Making, source: Source) {
        if let Some(shared) = self.table.lock().expect("subscriptions lock").get_mut(uri)
            && Arc::ptr_eq(&shared.made, &making.made)
        {
            shared.source = Some(source);
        }
        making.made();
    }

    /// Drops one session's subscription to `uri`; where to end the upstream subscription when
    /// it was the last, the subscription was made, and no other exposed URI holds the same one
    /// (a resource subscribed to by its name before and after a collision renamed it).
    pub(super) fn release(&self, uri: &str) -> Option<Source> {
        let mut table = self.table.lock().expect("subscriptions lock");
        match table.get_mut(uri) {
            Some(shared) if shared.count > 1 => {
                shared.count -= 1;
                None
            }
            Some(_) => {
                let shared = table.remove(uri)?;
                let source = shared.source.filter(|_| *shared.made.borrow() == Some(true))?;
                let still_held = table.values().any(|other| other.source.as_ref() == Some(&source));
                (!still_held).then_some(source)
            }
            None => None,
        }
    }

    /// The exposed URIs subscribed to at `owner`'s `uri`: where its update goes.
    pub(super) fn names_of(&self, owner: &Owner, uri: &str) -> Vec<String> {
        let table = self.table.lock().expect("subscriptions lock");
        let at = |source: &Source| source.owner == *owner && source.uri == uri;
        table
            .iter()
            .filter(|(_, shared)| shared.source.as_ref().is_some_and(at))
            .map(|(name, _)| name.clone())
            .collect()
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
        let Joined::First(making) = subscriptions.join("u", |_| true) else { panic!("the first") };
        let later = waiting(subscriptions.join("u", |_| true));
        assert_eq!(*later.borrow(), None, "waits while it is being made");
        drop(making);
        assert_eq!(*later.borrow(), Some(false), "told it failed, not that it is subscribed");
        // The waiter gives its count back at once; the first's session (gone meanwhile) later.
        assert!(subscriptions.release("u").is_none());
        let Joined::First(making) = subscriptions.join("u", |_| true) else { panic!("the next one makes it again") };
        subscriptions.made("u", making, at("a", "file:///u"));
        assert!(subscriptions.release("u").is_none(), "the first's session ends: the new one still counts");
        assert_eq!(*waiting(subscriptions.join("u", |_| true)).borrow(), Some(true));
        assert!(subscriptions.release("u").is_none());
        assert_eq!(subscriptions.release("u"), Some(at("a", "file:///u")), "the last one ends it");
        assert!(subscriptions.release("u").is_none(), "once");
    }

    #[test]
    fn a_subscription_never_made_is_not_ended_upstream() {
        let subscriptions = Subscriptions::default();
        let Joined::First(making) = subscriptions.join("u", |_| true) else { panic!("the first") };
        drop(making);
        assert!(subscriptions.release("u").is_none(), "nothing to unsubscribe");
    }

    fn at(backend: &str, uri: &str) -> Source {
        Source { owner: Owner::Backend(backend.into()), uri: uri.into() }
    }

    /// A resource subscribed to by one name, then by another (a collision renamed it
    /// meanwhile), is one upstream subscription: it ends with the last of both, where it was
    /// made, and its updates reach both names.
    #[test]
    fn a_subscription_ends_where_it_was_made_and_once_no_name_holds_it() {
        let subscriptions = Subscriptions::default();
        let Joined::First(making) = subscriptions.join("file:///x", |_| true) else { panic!("the first") };
        subscriptions.made("file:///x", making, at("a", "file:///x"));
        let Joined::First(making) = subscriptions.join("relay://a/file:///x", |_| true) else { panic!("another name") };
        subscriptions.made("relay://a/file:///x", making, at("a", "file:///x"));
        let mut names = subscriptions.names_of(&Owner::Backend("a".into()), "file:///x");
        names.sort();
        assert_eq!(names, ["file:///x", "relay://a/file:///x"]);
        assert!(subscriptions.names_of(&Owner::Backend("b".into()), "file:///x").is_empty(), "b's is not a's");
        assert!(subscriptions.release("file:///x").is_none(), "the other name still holds it");
        assert_eq!(subscriptions.release("relay://a/file:///x"), Some(at("a", "file:///x")));
    }
}
