//! Which calls an interceptor or policy sees (`bind`): backend and tool globs, compiled once at
//! load and asked on every call, and which of an interceptor's hooks run.

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::mcp::names::{PREFIX_SEPARATOR, unprefixed};

/// What an interceptor or policy is bound to: backends (or adapters) and tool names, as globs
/// (`*`, `?`, `[abc]`, `{a,b}`). Empty lists match everything. An interceptor bound by `tools`
/// sees those tools only; without `tools` it also sees the prompts and resources of its
/// backends. A bound policy runs only for the `tools/call`s it matches; an unbound one for
/// every request. An interceptor's `hooks` say which of its hooks run (all three when absent).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// Backend or adapter names.
    #[serde(default)]
    pub backends: Vec<String>,
    /// Tool names in the relay's catalog (before any interceptor renamed them).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The interceptor's hooks that run; absent, all three. An interceptor that only reads
    /// results (`redact`) need not be entered before every call with the call's arguments.
    #[serde(default)]
    pub hooks: Option<Vec<Hook>>,
}

/// One of an interceptor's hooks (`bind.hooks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// `on-list`: the lists each caller sees.
    List,
    /// `on-request`: a call's arguments, before it goes to its backend.
    Request,
    /// `on-result`: a call's result, before it goes to the client.
    Result,
}

impl Binding {
    /// The globs compiled (a bad glob is a configuration error).
    pub fn matcher(&self) -> Result<BindingMatcher, String> {
        let set = |globs: &[String]| -> Result<Option<GlobSet>, String> {
            if globs.is_empty() {
                return Ok(None);
            }
            let mut set = GlobSetBuilder::new();
            for glob in globs {
                set.add(Glob::new(glob).map_err(|e| format!("bind: {e}"))?);
            }
            set.build().map(Some).map_err(|e| format!("bind: {e}"))
        };
        if self.hooks.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "bind: hooks is empty; name at least one of list, request, result (or leave it out for all)".into()
            );
        }
        Ok(BindingMatcher {
            backends: set(&self.backends)?,
            tools: set(&self.tools)?,
            by_qualified_name: self.tools.iter().any(|glob| glob.contains(PREFIX_SEPARATOR)),
            hooks: self.hooks.clone(),
        })
    }
}

/// A [`Binding`], compiled once at load: asked on every call.
#[derive(Debug, Clone, Default)]
pub struct BindingMatcher {
    backends: Option<GlobSet>,
    tools: Option<GlobSet>,
    /// Whether some tool glob can match a qualified name (`<backend>__<name>`): only then is an
    /// unprefixed name matched qualified too (a name built for each call otherwise).
    by_qualified_name: bool,
    /// `None`: every hook.
    hooks: Option<Vec<Hook>>,
}

impl BindingMatcher {
    /// Whether an item served by `backend` is bound: the tool named `tool` (its catalog name),
    /// matched by every name it is known by: the catalog name, its backend's own name for it
    /// (without `<backend>__`) and its qualified name `<backend>__<own name>`, so a binding
    /// written either way keeps holding as a second backend starts or stops offering the same
    /// name; or, with `tool: None`, a prompt or resource (bound only when the binding names no
    /// tools).
    pub fn binds(&self, backend: &str, tool: Option<&str>) -> bool {
        let tools = match (tool, &self.tools) {
            (_, None) => true,
            (Some(tool), Some(set)) => {
                set.is_match(tool)
                    || match unprefixed(tool, backend) {
                        Some(own) => set.is_match(own),
                        None => self.by_qualified_name && set.is_match(format!("{backend}{PREFIX_SEPARATOR}{tool}")),
                    }
            }
            (None, Some(_)) => false,
        };
        tools && self.backends.as_ref().is_none_or(|set| set.is_match(backend))
    }

    /// Whether neither backends nor tools were given (everything is bound).
    pub fn is_unbound(&self) -> bool {
        self.backends.is_none() && self.tools.is_none()
    }

    /// Whether an interceptor's `hook` runs (`bind.hooks`).
    pub fn runs(&self, hook: Hook) -> bool {
        self.hooks.as_ref().is_none_or(|hooks| hooks.contains(&hook))
    }
}
