//! The test environment's own programs (the crate celestial-testenv, tests/env/programs/) that the
//! tests run themselves: `testenv-httpd` in images, `testenv-exec-credential` and
//! `docker-credential-testenv` as the GKE credential plugins. They are not binaries of this crate,
//! so cargo names no `CARGO_BIN_EXE_*` path for them; `tests/env/testenv programs` builds them (or
//! finds them cached by a hash of their sources, the same copies `testenv up` starts the
//! environment's own from) and prints their directory.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::run_testenv;

/// The program `name` of the crate celestial-testenv (its file name in src/bin/), built for the
/// current sources. The first call per process runs `testenv programs`; panics when that fails or
/// the crate has no such program.
pub fn path(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| {
            let out = run_testenv(&["programs"])?;
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Ok(PathBuf::from(dir))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("the test environment's programs: {e}"));
    let program = dir.join(name);
    assert!(
        program.is_file(),
        "no program {name} in {} (celestial-testenv's src/bin/ names them)",
        dir.display()
    );
    program
}
