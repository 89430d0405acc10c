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

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn finds_the_programs_built_from_the_current_sources() {
        let httpd = path("testenv-httpd");
        let out = Command::new(&httpd).arg("--help").output().unwrap();
        assert!(out.status.success(), "{} --help: {out:?}", httpd.display());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Serves a directory over HTTP/1.1"), "{help}");
        // every program of the crate lies in the same directory
        for name in [
            "testenv-lb",
            "testenv-netns-fwd",
            "testenv-exec-credential",
            "docker-credential-testenv",
        ] {
            assert_eq!(path(name).parent(), httpd.parent(), "{name}");
        }
    }

    #[test]
    #[should_panic(expected = "no program no-such-program")]
    fn names_a_program_the_crate_does_not_have() {
        path("no-such-program");
    }
}
