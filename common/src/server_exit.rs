//! How `celestial-server` ends when the model it was given fails its own start-up check (the
//! golden set it carries), so that `deployer` can tell "this model is wrong" from any other crash:
//! the container's exit status, read from the pod's `terminated.exitCode`. The server's one-line
//! reason is its termination message.

/// The exit status of a server whose model failed its start-up self-check.
pub const MODEL_CHECK_FAILED: i32 = 3;
