//! The open-file limit: raised from the soft to the hard limit at start, so that the connection
//! limit, not the file-descriptor table, decides when connections are refused.

/// The process's `RLIMIT_NOFILE` before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

fn get() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raise the soft open-file limit to the hard limit (a no-op when they are equal). A refusal by
/// the system leaves the soft limit as it was.
pub fn raise() -> std::io::Result<FdLimit> {
    let lim = get()?;
    let soft_before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one valid rlimit; raising the soft limit up to the hard limit
        // needs no privilege.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
    let now = get()?;
    Ok(FdLimit {
        soft_before,
        soft: now.rlim_cur,
        hard: now.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let l = raise().unwrap();
        assert_eq!(l.soft, l.hard);
        assert!(l.soft >= l.soft_before);
        assert_eq!(raise().unwrap().soft_before, l.hard, "idempotent");
    }
}
