//! Sockets inside another network namespace (the real node's), made on a short-lived thread that
//! joined it: `setns(2)` with `CLONE_NEWNET` moves only the calling thread, and a socket stays in
//! the namespace it was created in, whichever thread uses it later. A fresh thread per socket
//! keeps the runtime's threads in the process's own namespace and follows a namespace that was
//! re-created under the same path.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

fn enter(path: &Path) -> io::Result<()> {
    let ns = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    // SAFETY: setns(2) on a file descriptor that stays open for the call; it changes the
    // network namespace of this thread only, which ends after making one socket.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setns {}: {e}", path.display()),
        ));
    }
    Ok(())
}

async fn inside<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let _ = tx.send(enter(&path).and_then(|()| f()));
        })?;
    rx.await
        .map_err(|_| io::Error::other("the network-namespace thread ended without an answer"))?
}

/// Connects to `addr` from inside the network namespace at `path` (e.g. `/run/netns/NAME`).
pub async fn connect(
    path: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let s = inside(path, move || {
        std::net::TcpStream::connect_timeout(&addr, timeout)
    })
    .await?;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

/// Listens on `addr` inside the network namespace at `path`.
pub async fn listen(path: &Path, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let l = inside(path, move || std::net::TcpListener::bind(addr)).await?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A network namespace of its own (a bind mount in a temporary directory), for as long as
    /// the guard lives. Needs root, like the whole test environment.
    struct Netns {
        dir: tempfile::TempDir,
    }

    impl Netns {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ns");
            std::fs::write(&path, b"").unwrap();
            let ok = std::process::Command::new("unshare")
                .arg(format!("--net={}", path.display()))
                .arg("true")
                .status()
                .unwrap()
                .success();
            assert!(ok, "unshare --net failed (needs root)");
            let ok = std::process::Command::new("nsenter")
                .arg(format!("--net={}", path.display()))
                .args(["ip", "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            Self { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("ns")
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.path())
                .status();
        }
    }

    #[tokio::test]
    async fn sockets_inside_another_network_namespace() {
        let ns = Netns::new();
        let listener = listen(&ns.path(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"inside").await.unwrap();
        });
        let mut conn = connect(&ns.path(), addr, Duration::from_secs(2))
            .await
            .unwrap();
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut got)
            .await
            .unwrap();
        assert_eq!(got, "inside");
        accept.await.unwrap();
        // the namespace's loopback is not the process's: nothing listens there on the host side
        // (the runtime's threads stayed in their own namespace)
        let outside = tokio::net::TcpStream::connect(addr).await;
        assert!(outside.is_err(), "{addr} answered outside the namespace");
        let missing = connect(
            Path::new("/nonexistent/netns"),
            addr,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/netns"),
            "{missing}"
        );
    }
}
