//! The relay process keeps its secrets from its own children. Stdio backends run as the same
//! user and get only the environment they are given, but a same-user process could still read
//! `/proc/<relay>/environ` (the admin token, model API keys) or its memory. A process that is
//! not dumpable (`PR_SET_DUMPABLE` 0) has its `/proc` entries owned by root and cannot be
//! ptrace-attached by its user: only root can look inside. Running backends as another user
//! (deploy/README.md) is the stronger separation; this is the floor.

/// Makes the process non-dumpable; says why when it cannot (the relay runs on regardless).
pub fn keep_secrets_from_same_user_processes() {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes plain integers and touches no memory of ours.
    let result = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if result != 0 {
        eprintln!(
            "relay: cannot make the process non-dumpable ({}); same-user processes may read its environment",
            std::io::Error::last_os_error()
        );
    }
}
