//! The CI configuration passes its linters, offline: actionlint (built from the pinned
//! Go module, tests/env/ci-tools.sh; with shellcheck on the `run:` scripts when it is installed) on
//! .github/workflows/*.yml, and the GitLab CI JSON schema (check-jsonschema's vendored copy) on
//! .gitlab-ci.yml. Each linter is also shown a broken file, so a linter that accepts anything
//! fails the test. And the workflows, the GitLab pipeline and docs/deploy.md agree: both release
//! jobs run scripts/release-job, and every variable they read is in its "Release from CI" table.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use celestial_e2e::ci::ci_tools;
use celestial_e2e::deployer::Scratch;
use celestial_e2e::repo_root;

fn run(cmd: &mut Command) -> Output {
    cmd.current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("running the linter")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn github_workflows_pass_actionlint() {
    let tools = ci_tools();
    let actionlint = tools.join("bin/actionlint");
    let t = Instant::now();
    let o = run(Command::new(&actionlint).args([
        "-no-color",
        ".github/workflows/ci.yml",
        ".github/workflows/release.yml",
    ]));
    assert!(o.status.success(), "actionlint: {}", text(&o));
    eprintln!(
        "measured: actionlint on both workflows {:.2}s (shellcheck {})",
        t.elapsed().as_secs_f64(),
        if which("shellcheck") { "on" } else { "absent" }
    );

    // A broken workflow is refused: an unknown context and a job without runs-on.
    let s = Scratch::new("actionlint");
    let bad = s.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on: push\njobs:\n  x:\n    steps:\n      - run: echo ${{ github.no_such_thing }}\n",
    )
    .unwrap();
    let o = run(Command::new(&actionlint).arg("-no-color").arg(&bad));
    assert!(!o.status.success(), "actionlint accepted {}", bad.display());
    let out = text(&o);
    assert!(
        out.contains("runs-on") && out.contains("no_such_thing"),
        "{out}"
    );
}

#[test]
fn gitlab_ci_passes_the_gitlab_ci_schema() {
    let tools = ci_tools();
    let check = tools.join("bin/check-jsonschema");
    let o =
        run(Command::new(&check).args(["--builtin-schema", "vendor.gitlab-ci", ".gitlab-ci.yml"]));
    assert!(o.status.success(), "check-jsonschema: {}", text(&o));

    // A broken pipeline is refused: a job whose `when` is not one GitLab knows.
    let s = Scratch::new("gitlab");
    let bad = s.path().join(".gitlab-ci.yml");
    let good = std::fs::read_to_string(repo_root().join(".gitlab-ci.yml")).unwrap();
    std::fs::write(&bad, good.replace("when: always", "when: sometimes")).unwrap();
    let o = run(Command::new(&check)
        .args(["--builtin-schema", "vendor.gitlab-ci"])
        .arg(&bad));
    assert!(
        !o.status.success(),
        "check-jsonschema accepted {}",
        bad.display()
    );
    assert!(text(&o).contains("sometimes"), "{}", text(&o));
}

#[test]
fn both_release_jobs_run_the_release_job_script_and_the_deploy_doc_names_every_variable() {
    let root = repo_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let (release, gitlab, doc) = (
        read(".github/workflows/release.yml"),
        read(".gitlab-ci.yml"),
        read("docs/deploy.md"),
    );
    assert!(release.contains("run: scripts/release-job"), "release.yml");
    assert!(gitlab.contains("- scripts/release-job"), ".gitlab-ci.yml");
    assert!(Path::new(&root.join("scripts/release-job")).is_file());
    let section = doc
        .split("## Release from CI")
        .nth(1)
        .expect("docs/deploy.md has a \"Release from CI\" section");
    // GitHub: every `vars.NAME` / `secrets.NAME`; GitLab: every $NAME that is not GitLab's own
    let mut names: Vec<String> = Vec::new();
    for prefix in ["vars.", "secrets."] {
        for part in release.split(prefix).skip(1) {
            names.push(
                part.chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect(),
            );
        }
    }
    for part in gitlab.split('$').skip(1) {
        let n: String = part
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let own = n.starts_with("CI_") || n.is_empty();
        let defined_here = gitlab.contains(&format!("  {n}:"));
        if !own && !defined_here {
            names.push(n);
        }
    }
    names.sort();
    names.dedup();
    assert!(!names.is_empty());
    for n in &names {
        assert!(
            section.contains(&format!("`{n}`")),
            "the \"Release from CI\" table of docs/deploy.md does not name {n}"
        );
    }
    eprintln!("variables in docs/deploy.md's table: {names:?}");
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}
