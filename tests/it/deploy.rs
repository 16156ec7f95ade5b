//! What deployments rely on: the Dockerfile names things that exist, the
//! Clever Cloud script runs the right `clever` commands without showing a
//! secret, and the binary reads nothing from disk at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

use oauth_consumer_server::config::DEFAULT_PORT;
use oauth_consumer_server::healthcheck::SUBCOMMAND;

use crate::support::process::BINARY;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The Dockerfile's instructions, continuation lines joined, comments out.
fn instructions() -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|instruction| {
            let (keyword, rest) = instruction.split_once(' ').unwrap_or((&instruction, ""));
            (keyword.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

fn all(keyword: &str) -> Vec<String> {
    instructions()
        .into_iter()
        .filter(|(found, _)| found == keyword)
        .map(|(_, rest)| rest)
        .collect()
}

/// The items of an exec-form array: `["a", "b"]`.
fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not exec form ({error}): {text}"))
}

fn binary_name() -> String {
    PathBuf::from(BINARY)
        .file_name()
        .and_then(|name| name.to_str())
        .expect("binary file name")
        .to_owned()
}

#[test]
fn the_dockerfile_copies_what_exists_and_runs_the_real_binary() {
    let binary = binary_name();
    let ignored = read(".dockerignore");
    let ignored: Vec<&str> = ignored
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(ignored.contains(&"target/") && ignored.contains(&".git/"));

    let mut runtime_binary = None;
    for copy in all("COPY") {
        let words: Vec<&str> = copy.split_whitespace().collect();
        let (sources, destination) = words.split_at(words.len() - 1);
        if let Some(from_build) = sources.iter().find_map(|word| word.strip_prefix("--from=")) {
            assert_eq!(from_build, "build");
            assert_eq!(
                sources.last().copied(),
                Some(format!("/app/target/release/{binary}").as_str()),
                "the runtime stage copies the cargo binary"
            );
            runtime_binary = destination.first().map(|path| path.to_string());
            continue;
        }
        for source in sources {
            let source = source.trim_end_matches('/');
            assert!(
                repo().join(source).exists(),
                "the Dockerfile copies {source}, which does not exist"
            );
            assert!(
                !ignored
                    .iter()
                    .any(|pattern| pattern.trim_end_matches('/') == source),
                "{source} is copied but .dockerignore leaves it out"
            );
        }
    }
    let runtime_binary = runtime_binary.expect("a COPY --from=build of the binary");
    assert_eq!(
        runtime_binary,
        format!("/usr/local/bin/{binary}"),
        "on PATH"
    );

    assert_eq!(all("EXPOSE"), vec![DEFAULT_PORT.to_string()]);
    assert_eq!(all("ENV"), vec![format!("PORT={DEFAULT_PORT}")]);
    assert_eq!(
        all("CMD").last().map(|cmd| exec_form(cmd)),
        Some(vec![binary.clone()])
    );
    let healthcheck = all("HEALTHCHECK").pop().expect("a HEALTHCHECK");
    let command = healthcheck
        .split_once("CMD ")
        .map(|(_, command)| exec_form(command))
        .expect("HEALTHCHECK … CMD [...]");
    assert_eq!(command, vec![binary, SUBCOMMAND.to_owned()]);
    let user = all("USER").pop().expect("a USER");
    assert!(
        user != "root" && user != "0",
        "runs as non-root, not {user}"
    );
}

#[test]
fn the_docker_dependency_layer_knows_every_cargo_target() {
    // The first build stage compiles the dependencies against a dummy crate
    // made of src/main.rs and src/lib.rs; cargo refuses a manifest whose
    // declared targets have no file, so a new one needs a dummy there too.
    let manifest = read("Cargo.toml");
    let targets: Vec<&str> = manifest
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("[[") || line.starts_with("[lib]"))
        .collect();
    assert_eq!(
        targets,
        vec!["[lib]", "[[bin]]"],
        "new Cargo targets: give them a dummy file in the Dockerfile's dependency stage"
    );
}

#[test]
fn the_binary_reads_no_file_at_run_time() {
    // Templates are compiled by askama and static files embedded with
    // include_str!, so the binary alone is the app.
    let mut sources = vec![repo().join("src")];
    let mut offenders = Vec::new();
    while let Some(path) = sources.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).expect("read src");
            sources.extend(entries.filter_map(|entry| entry.ok().map(|entry| entry.path())));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let code = std::fs::read_to_string(&path).expect("read a source file");
            // Unit tests (at the end of a file) may read their fixtures.
            let code = code.split("#[cfg(test)]").next().unwrap_or_default();
            for needle in [
                "std::fs",
                "tokio::fs",
                "File::open",
                "ServeDir",
                "read_to_string(",
            ] {
                if code.contains(needle) {
                    offenders.push(format!("{} uses {needle}", path.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

fn deploy_dry_run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new("bash")
        .arg(repo().join("clevercloud/deploy.sh"))
        .arg("--dry-run")
        .args(args)
        .env_remove("OAUTH_CONSUMER_SECRET")
        .output()
        .expect("run deploy.sh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_clever_cloud_script_prints_every_step_and_masks_secrets() {
    // Act
    let secret = "consumer-s3cret-value";
    let (ok, out, err) = deploy_dry_run(&[
        "--app",
        "gw",
        "--domain",
        "gw.example.com",
        "--consumer-key",
        "ck-123",
        "--consumer-secret",
        secret,
        "--redis",
        "--metrics",
        "--region",
        "par",
        "--org",
        "orga_42",
    ]);

    // Assert
    assert!(ok, "{err}");
    let commands: Vec<&str> = out
        .lines()
        .filter_map(|line| line.strip_prefix("+ "))
        .collect();
    assert_eq!(
        commands,
        vec![
            "clever create --type rust gw --alias gw --region par --org orga_42",
            "clever domain add gw.example.com --alias gw",
            "clever env set APP_URL https://gw.example.com/ --alias gw",
            "clever env set CC_HEALTH_CHECK_PATH /health --alias gw",
            "clever env set CC_CACHE_DEPENDENCIES true --alias gw",
            "clever env set LOG_FORMAT json --alias gw",
            "clever env set OAUTH_CONSUMER_KEY ck-123 --alias gw",
            "clever env set OAUTH_CONSUMER_SECRET **** --alias gw",
            "clever addon create redis-addon gw-redis --plan s_mono --link gw --region par --org orga_42",
            "clever env set SESSION_KEY **** --alias gw",
            "clever env set METRICS_TOKEN **** --alias gw",
            "clever deploy --alias gw",
        ]
    );
    assert!(!out.contains(secret) && !err.contains(secret));
}

#[test]
fn the_clever_cloud_script_without_options_deploys_a_visitor_consumer_server() {
    let (ok, out, err) = deploy_dry_run(&["--app", "gw", "--domain", "gw.cleverapps.io"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("+ clever create --type rust gw --alias gw\n"),
        "{out}"
    );
    assert!(
        !out.contains("OAUTH_CONSUMER") && !out.contains("redis"),
        "{out}"
    );
    assert!(out.contains("+ clever deploy --alias gw"), "{out}");
}

#[test]
fn the_clever_cloud_script_refuses_incomplete_arguments() {
    for args in [
        &["--domain", "gw.example.com"][..],
        &["--app", "gw"],
        &["--app", "gw", "--domain", "https://gw.example.com/"],
        &[
            "--app",
            "gw",
            "--domain",
            "gw.example.com",
            "--consumer-key",
            "ck",
        ],
        &["--app", "gw", "--domain", "gw.example.com", "--bogus"],
    ] {
        let (ok, out, err) = deploy_dry_run(args);
        assert!(!ok, "{args:?} was accepted: {out}");
        assert!(
            !out.contains("+ clever"),
            "nothing runs on bad arguments: {out}"
        );
        assert!(err.contains("deploy.sh:"), "{err}");
    }
}
