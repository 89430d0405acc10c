//! The documented process exit codes (docs/deploy.md, "Exit codes", and `deployer --help`).
//!
//! A leaf: it imports nothing from the crate, so every layer may name an exit code without
//! importing the layers above it. Which error ends with which code is decided in one place,
//! [`crate::error`].

/// Process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCode {
    /// Everything worked.
    Success = 0,
    /// An unexpected internal error (a bug, or an I/O error outside the categories below).
    Internal = 1,
    /// Bad flags, an unreadable or malformed manifest, a bad kubeconfig or registry configuration.
    Usage = 2,
    /// The Kubernetes API refused or could not be reached: apply, diff, status or delete failed.
    Apply = 3,
    /// The rollout failed (a pod's reason such as ImagePullBackOff, Unschedulable, CrashLoopBackOff,
    /// or ProgressDeadlineExceeded), whether or not it was rolled back.
    Rollout = 4,
    /// A wait (rollout, load-balancer address, deletion) ran out of time.
    Timeout = 5,
    /// The deployment is up but the smoke test through its public URL failed.
    Smoke = 6,
    /// Building, pulling or pushing an image failed (registry unreachable, credentials refused, glibc too old).
    Image = 7,
    /// The new model failed its checks (the server's start-up self-check, the smoke test, the
    /// evaluation before traffic, the canary on live traffic) and the previous one serves:
    /// restored, or never replaced.
    ModelRejected = 8,
    /// Interrupted by SIGINT (Ctrl-C): the command stopped and said what state it left.
    Interrupted = 130,
    /// Terminated by SIGTERM (e.g. a cancelled CI job): as for SIGINT.
    Terminated = 143,
}

impl ExitCode {
    /// Every exit code, in numeric order.
    pub const ALL: [ExitCode; 11] = [
        ExitCode::Success,
        ExitCode::Internal,
        ExitCode::Usage,
        ExitCode::Apply,
        ExitCode::Rollout,
        ExitCode::Timeout,
        ExitCode::Smoke,
        ExitCode::Image,
        ExitCode::ModelRejected,
        ExitCode::Interrupted,
        ExitCode::Terminated,
    ];

    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_in_order() {
        let codes: Vec<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 130, 143]);
    }
}
