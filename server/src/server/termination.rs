//! The termination message: the one line a server that stops on an error prints on stderr is also
//! written to `--termination-log`, the file Kubernetes reads into the container's last state
//! (`kubectl describe pod`, a rollout's wait), so the reason survives the container.

use std::path::Path;

/// Write `line` to the file at `path`, replacing what it held (Kubernetes keeps its first 4 KiB);
/// nothing for an empty path. Best effort: outside a container the default `/dev/termination-log`
/// is usually not writable, and the reason is on stderr anyway, so a failure is ignored.
pub fn write_termination_message(path: &Path, line: &str) {
    if path.as_os_str().is_empty() {
        return;
    }
    let _ = std::fs::write(path, format!("{line}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_line_and_ignores_what_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        std::fs::write(&path, "an earlier, longer message\n").unwrap();
        write_termination_message(&path, "celestial-server: error: why");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "celestial-server: error: why\n"
        );
        write_termination_message(&dir.path().join("no/such/dir/log"), "x");
        write_termination_message(Path::new(""), "x");
    }
}
