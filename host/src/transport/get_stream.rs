//! A Streamable HTTP session's GET stream: what the relay sends a client outside any request
//! (list changes, resource updates, its backends' requests and logs), and when that stops.

use std::sync::Arc;

use axum::response::Response;
use futures::{StreamExt, stream};

use super::{TransportState, sse};
use crate::session::{GetStreamClaim, Session};

/// The GET stream of `session`, which `claim` holds. It ends when the session does, when its
/// credential expires, and when the relay drains; answers of running requests travel on their
/// POST's own stream, so nothing owed is lost. A session a plugin reload revoked hears nothing
/// more: at its next event the session ends (its next request gets 404).
pub(super) fn respond(state: Arc<TransportState>, session: Arc<Session>, claim: GetStreamClaim) -> Response {
    let (ended, draining, expires_in) = (claim.ended().clone(), session.draining(), session.expires_in());
    let end = async move {
        let expired = async {
            match expires_in {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = ended.cancelled() => {}
            () = draining.cancelled() => {}
            () = expired => {}
        }
    };
    let events = session.server_events();
    let stream = stream::unfold((events, claim, session, state), |(mut events, claim, session, state)| async move {
        let message = events.next().await?;
        if session.may_hear().await {
            return Some((message, (events, claim, session, state)));
        }
        tracing::info!(session = %session.tag(), principal = %session.principal.id, "session ended: its credential expired or no longer admits it");
        Box::pin(state.sessions.end(&session.id)).await;
        None
    });
    sse::respond(stream.take_until(end), true)
}
