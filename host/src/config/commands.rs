//! `access.add_server_commands`: what `relay_add_server` may start, program *and* arguments.
//! Allowing a program by name alone allows everything it can be told to do (`npx -c 'id >
//! FILE'` runs a shell), so each entry names the arguments too:
//!
//! ```yaml
//! add_server_commands:
//!   - npx -y @modelcontextprotocol/server-everything stdio   # exactly this (split on spaces)
//!   - command: npx                                           # or, per argument, a glob
//!     args: ["-y", "@modelcontextprotocol/server-*", "stdio"]
//!     env: [LOG_LEVEL]                                       # env/inherit_env names it may set
//!     cwd: /srv/mcp                                          # the one working directory it may set
//! ```
//!
//! A backend matches an entry when its command is the entry's, it has as many arguments, each
//! matching its glob, every `env` and `inherit_env` name it sets is listed, and it sets no
//! working directory but the entry's (the directory decides what `python3 -m x`, `npx x` or
//! `./x` runs).

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

/// One allowed command line, as written in relay.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CommandRule {
    /// The program and its arguments, exactly, separated by spaces.
    Exact(String),
    /// The program, a glob per argument, and the environment names it may be given.
    Pattern {
        /// The program, exactly.
        command: String,
        /// One glob per argument.
        #[serde(default)]
        args: Vec<String>,
        /// Names `env` and `inherit_env` may set.
        #[serde(default)]
        env: Vec<String>,
        /// The working directory it may be given (none but the relay's own without it).
        #[serde(default)]
        cwd: Option<std::path::PathBuf>,
    },
}

/// A rule, compiled.
#[derive(Debug, Clone)]
pub struct AllowedCommand {
    command: String,
    args: Vec<GlobMatcher>,
    env: Vec<String>,
    cwd: Option<std::path::PathBuf>,
}

impl CommandRule {
    /// The compiled rule; a glob that does not compile is an error.
    pub fn compile(&self) -> Result<AllowedCommand, String> {
        let exact = |arg: &str| Glob::new(&globset::escape(arg)).map(|g| g.compile_matcher());
        let (command, args, env, cwd) = match self {
            CommandRule::Exact(line) => {
                let mut words = line.split_whitespace();
                let command = words.next().ok_or("access.add_server_commands: an empty entry")?.to_owned();
                let args = words.map(exact).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
                (command, args, Vec::new(), None)
            }
            CommandRule::Pattern { command, args, env, cwd } => {
                let args = args
                    .iter()
                    .map(|glob| Glob::new(glob).map(|g| g.compile_matcher()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("access.add_server_commands: {e}"))?;
                (command.clone(), args, env.clone(), cwd.clone())
            }
        };
        Ok(AllowedCommand { command, args, env, cwd })
    }
}

impl AllowedCommand {
    /// Whether `command args`, run in `cwd` (`None`: the relay's own) with environment names
    /// `env_names`, is allowed by this rule.
    pub fn allows<'a>(
        &self,
        command: &str,
        args: &[String],
        cwd: Option<&std::path::Path>,
        mut env_names: impl Iterator<Item = &'a str>,
    ) -> bool {
        self.command == command
            && self.args.len() == args.len()
            && self.args.iter().zip(args).all(|(glob, arg)| glob.is_match(arg))
            && (cwd.is_none() || cwd == self.cwd.as_deref())
            && env_names.all(|name| self.env.iter().any(|allowed| allowed == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> AllowedCommand {
        serde_yaml::from_str::<CommandRule>(yaml).unwrap().compile().unwrap()
    }

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn arguments_and_environment_are_part_of_what_is_allowed() {
        let exact = rule("npx -y @modelcontextprotocol/server-everything stdio");
        let none = std::iter::empty();
        assert!(exact.allows("npx", &args(&["-y", "@modelcontextprotocol/server-everything", "stdio"]), None, none));
        assert!(!exact.allows("npx", &args(&["-y", "-c", "id > /tmp/x"]), None, std::iter::empty()), "a shell");
        assert!(!exact.allows(
            "npx",
            &args(&["-y", "@modelcontextprotocol/server-everything"]),
            None,
            std::iter::empty()
        ));
        let bare = rule("npx");
        assert!(!bare.allows("npx", &args(&["-c", "id"]), None, std::iter::empty()), "a bare name allows no arguments");
        let pattern = rule("{command: npx, args: ['-y', '@modelcontextprotocol/server-*'], env: [LOG_LEVEL]}");
        assert!(pattern.allows(
            "npx",
            &args(&["-y", "@modelcontextprotocol/server-memory"]),
            None,
            ["LOG_LEVEL"].into_iter()
        ));
        assert!(!pattern.allows(
            "npx",
            &args(&["-c", "@modelcontextprotocol/server-memory"]),
            None,
            std::iter::empty()
        ));
        assert!(!pattern.allows("npx", &args(&["-y", "evil"]), None, std::iter::empty()));
        assert!(
            !pattern.allows(
                "npx",
                &args(&["-y", "@modelcontextprotocol/server-x"]),
                None,
                ["NODE_OPTIONS"].into_iter()
            ),
            "environment it does not list"
        );
        assert!(rule("'x a*'").allows("x", &args(&["a*"]), None, std::iter::empty()), "exact entries are literal");
        assert!(!rule("'x a*'").allows("x", &args(&["ab"]), None, std::iter::empty()));
        // The working directory decides what `python3 -m x` runs: only the entry's.
        let module = rule("python3 -m mcp_server_time");
        let (here, there) = (Some(std::path::Path::new("/srv/mcp")), Some(std::path::Path::new("/tmp/evil")));
        assert!(!module.allows("python3", &args(&["-m", "mcp_server_time"]), there, std::iter::empty()));
        let placed = rule("{command: python3, args: ['-m', 'mcp_server_time'], cwd: /srv/mcp}");
        assert!(placed.allows("python3", &args(&["-m", "mcp_server_time"]), here, std::iter::empty()));
        assert!(placed.allows("python3", &args(&["-m", "mcp_server_time"]), None, std::iter::empty()));
        assert!(!placed.allows("python3", &args(&["-m", "mcp_server_time"]), there, std::iter::empty()));
    }
}
