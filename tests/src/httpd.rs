//! Images of the test environment's static HTTP server (`testenv-httpd`, see
//! `celestial_testenv::httpd`): the payload of the container smoke tests. The binary is built on the
//! host, put into an image on the synthesized distroless base, pushed to the loopback registry,
//! pulled and run by podman or the real node, and answers real HTTP.

use std::path::Path;

/// A build context for an image of this server on `base`: the binary (`bin`, debug info stripped),
/// a page `www/index.html` holding `page`, and a `Containerfile` that serves `/srv/www`. The tests
/// pass [`crate::programs::path`]`("testenv-httpd")` as `bin`.
pub fn image_context(bin: &Path, base: &str, page: &str) -> std::io::Result<tempfile::TempDir> {
    let ctx = tempfile::tempdir()?;
    let status = std::process::Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(ctx.path().join("testenv-httpd"))
        .arg(bin)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "strip {}: {status}",
            bin.display()
        )));
    }
    std::fs::create_dir(ctx.path().join("www"))?;
    std::fs::write(
        ctx.path().join("www/index.html"),
        format!("<p>{page}</p>\n"),
    )?;
    std::fs::write(
        ctx.path().join("Containerfile"),
        format!(
            "FROM {base}\nCOPY testenv-httpd /usr/local/bin/testenv-httpd\nCOPY www/ /srv/www/\n\
             ENTRYPOINT [\"/usr/local/bin/testenv-httpd\"]\n"
        ),
    )?;
    Ok(ctx)
}
