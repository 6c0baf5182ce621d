//! How a backend is shown to clients without its secrets: user info and query values of its
//! URL, and the values of its `headers` and `env`, never appear in status output, in the URL
//! or in an error text that quotes them.

use super::{Backend, Transport};

/// Stands in for a secret.
const HIDDEN: &str = "***";

impl Backend {
    /// The backend's URL with user info and query values hidden, or its stdio command.
    pub fn shown_target(&self) -> String {
        match &self.transport {
            Transport::WebSocket { url, .. } | Transport::Http { url, .. } => redact_url(url),
            Transport::Stdio { command, .. } => command.clone(),
        }
    }

    /// `text` (an error message, say) with every secret of this backend hidden.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets = self.secrets();
        // Longest first, so a secret that contains another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut text = text.to_owned();
        if let Transport::WebSocket { url, .. } | Transport::Http { url, .. } = &self.transport {
            text = text.replace(url.as_str(), &redact_url(url));
        }
        for secret in secrets.iter().filter(|s| s.len() >= 3) {
            text = text.replace(secret.as_str(), HIDDEN);
        }
        text
    }

    /// `text` as a caller who may not see where backends live reads it: the secrets hidden as
    /// [`Backend::redact`] does, then the backend's URL, `host:port` and host (or its stdio
    /// command) replaced by `<backend NAME>`.
    pub fn without_address(&self, text: &str) -> String {
        let mut text = self.redact(text);
        let hidden = format!("<backend {}>", self.name);
        let mut places: Vec<String> = match &self.transport {
            Transport::WebSocket { url, .. } | Transport::Http { url, .. } => {
                let mut places = vec![url.clone(), redact_url(url)];
                if let Ok(parsed) = reqwest::Url::parse(url)
                    && let Some(host) = parsed.host_str()
                {
                    if let Some(port) = parsed.port_or_known_default() {
                        places.push(format!("{host}:{port}"));
                    }
                    places.push(host.to_owned());
                }
                places
            }
            Transport::Stdio { command, .. } => vec![command.clone()],
        };
        places.retain(|p| !p.is_empty());
        places.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for place in places {
            text = text.replace(&place, &hidden);
        }
        text
    }

    /// Every value of this backend that may be a credential.
    fn secrets(&self) -> Vec<String> {
        match &self.transport {
            Transport::WebSocket { url, headers } | Transport::Http { url, headers } => {
                let mut secrets: Vec<String> = headers.values().cloned().collect();
                if let Ok(parsed) = reqwest::Url::parse(url) {
                    secrets.push(parsed.username().to_owned());
                    secrets.extend(parsed.password().map(str::to_owned));
                    // Query values decoded and as written (percent-encoded): error texts quote either.
                    secrets.extend(parsed.query_pairs().map(|(_, v)| v.into_owned()));
                    secrets.extend(
                        parsed
                            .query()
                            .unwrap_or("")
                            .split('&')
                            .filter_map(|p| p.split_once('='))
                            .map(|(_, v)| v.to_owned()),
                    );
                }
                secrets
            }
            Transport::Stdio { env, .. } => env.values().cloned().collect(),
        }
    }
}

/// `url` with its user info and every query value replaced by `***` (and no fragment): how a
/// URL that may carry a credential is shown (status, logs).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else { return HIDDEN.to_owned() };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username(HIDDEN);
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let names: Vec<String> = parsed.query_pairs().map(|(name, _)| name.into_owned()).collect();
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for name in names {
            query.append_pair(&name, HIDDEN);
        }
    }
    parsed.set_fragment(None);
    // `***` in user info and query is percent-encoded by the URL type; show it plainly.
    parsed.to_string().replace("%2A%2A%2A", HIDDEN)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn user_info_query_values_and_header_values_are_hidden() {
        let url = "http://svc:PASSWORD@host:8080/mcp?api_key=KEY123&region=eu#frag";
        assert_eq!(redact_url(url), "http://***@host:8080/mcp?api_key=***&region=***");
        let backend = Backend {
            name: "b".into(),
            transport: Transport::Http {
                url: url.into(),
                headers: BTreeMap::from([("Authorization".into(), "Bearer HEADERSECRET".into())]),
            },
            call_timeout_secs: None,
            credentials: Default::default(),
            session_per_worker: false,
        };
        let error = format!("error sending request for url ({url}): refused; Bearer HEADERSECRET; KEY123");
        let shown = backend.redact(&error);
        for secret in ["PASSWORD", "KEY123", "HEADERSECRET"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("host:8080/mcp"), "{shown}");
        let for_anyone = backend.without_address(&format!("{error}; connect to host:8080 failed; dns host"));
        assert!(!for_anyone.contains("host:8080") && !for_anyone.contains("dns host"), "{for_anyone}");
        assert!(for_anyone.contains("<backend b>") && for_anyone.contains("refused"), "{for_anyone}");
    }
}
