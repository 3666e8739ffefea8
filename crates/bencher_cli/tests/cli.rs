//! End-to-end tests of the real `bencher` binary against a real server on
//! 127.0.0.1:0, on SQLite and on PostgreSQL. The seed's own command lines run verbatim.

use std::process::Output;

use bencher_test_support::{Backend, TestServer, backend_tests};
use serde_json::Value;

/// Runs `bencher` with `args` against `server`, as the admin, with a clean environment.
async fn bencher(server: &TestServer, args: &[&str]) -> Output {
    bencher_as(server, Some(server.admin_token.expose_secret()), args).await
}

async fn bencher_as(server: &TestServer, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bencher"));
    command
        .args(args)
        .env_remove("BENCHER_HOST")
        .env_remove("BENCHER_API_TOKEN")
        .env_remove("BENCHER_FORMAT")
        .env("NO_COLOR", "1");
    // The seed passes `--host` on the command line; where a test does not, the
    // environment variable points at the test server.
    if !args.contains(&"--host") {
        command.env("BENCHER_HOST", server.url.as_str());
    }
    if let Some(token) = token {
        command.env("BENCHER_API_TOKEN", token);
    }
    command.output().await.expect("run bencher")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "bencher failed: {}\n{}",
        stderr(output),
        stdout(output)
    );
    stdout(output)
}

#[track_caller]
fn fails(output: &Output, code: i32, needle: &str) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
    let err = stderr(output);
    assert!(err.contains(needle), "expected `{needle}` in stderr: {err}");
    err
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&ok(output))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

backend_tests!(
    seed_command_lines_work_verbatim,
    json_output_and_lists,
    runner_keys_rotate_and_archive,
    errors_are_clear,
    tokens
);

async fn seed_command_lines_work_verbatim(backend: Backend) {
    let server = TestServer::start(backend).await;
    let host = server.url.as_str().trim_end_matches('/').to_owned();

    // bencher runner create --host https://api.bencher.example.com --name "My Runner"
    let out = ok(&bencher(
        &server,
        &["runner", "create", "--host", &host, "--name", "My Runner"],
    )
    .await);
    let key = out
        .split_whitespace()
        .find(|word| word.starts_with("bencher_runner_"))
        .unwrap_or_else(|| panic!("no key in: {out}"));
    assert_eq!(key.len(), "bencher_runner_".len() + 30);
    assert!(out.contains("my-runner"), "{out}");
    assert!(out.to_lowercase().contains("only once"), "{out}");

    // bencher spec create --host … --name "Intel v1" --os linux --architecture x86_64
    //   --sandbox firecracker --cpu 4 --memory 51539607552 --disk 137438953472
    let out = ok(&bencher(
        &server,
        &[
            "spec",
            "create",
            "--host",
            &host,
            "--name",
            "Intel v1",
            "--os",
            "linux",
            "--architecture",
            "x86_64",
            "--sandbox",
            "firecracker",
            "--cpu",
            "4",
            "--memory",
            "51539607552",
            "--disk",
            "137438953472",
        ],
    )
    .await);
    assert!(
        out.contains("intel-v1") && out.contains("48 GiB") && out.contains("128 GiB"),
        "{out}"
    );

    // bencher runner spec add my-runner --host … --spec intel-v1
    ok(&bencher(
        &server,
        &[
            "runner",
            "spec",
            "add",
            "my-runner",
            "--host",
            &host,
            "--spec",
            "intel-v1",
        ],
    )
    .await);

    let runner = json(
        &bencher(
            &server,
            &["runner", "view", "my-runner", "--format", "json"],
        )
        .await,
    );
    assert_eq!(runner["specs"][0]["slug"], "intel-v1");
    assert_eq!(runner["specs"][0]["memory"], 51539607552u64);
    assert!(runner.get("key").is_none());

    // The key the CLI printed is the runner's key.
    let hash = bencher_server::hash_secret(key);
    let id = "my-runner".parse().unwrap();
    assert!(
        server
            .store()
            .authenticate_runner(&id, &hash)
            .await
            .unwrap()
            .is_some()
    );

    // Sizes also in 48GiB style, and the no-sandbox form.
    let spec = json(
        &bencher(
            &server,
            &[
                "spec",
                "create",
                "--name",
                "Bare",
                "--os",
                "linux",
                "--architecture",
                "aarch64",
                "--cpu",
                "2",
                "--memory",
                "48GiB",
                "--disk",
                "1TiB",
                "--network",
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(spec["memory"], 48u64 << 30);
    assert_eq!(spec["disk"], 1u64 << 40);
    assert_eq!(spec["network"], true);
    assert!(spec.get("sandbox").is_none());
    server.stop().await;
}

async fn json_output_and_lists(backend: Backend) {
    let server = TestServer::start(backend).await;
    for name in ["Alpha", "Bravo", "Charlie"] {
        ok(&bencher(&server, &["runner", "create", "--name", name]).await);
        ok(&bencher(
            &server,
            &[
                "spec",
                "create",
                "--name",
                name,
                "--os",
                "linux",
                "--architecture",
                "x86_64",
                "--cpu",
                "1",
                "--memory",
                "1GiB",
                "--disk",
                "1GiB",
            ],
        )
        .await);
    }
    let list = json(
        &bencher(
            &server,
            &["runner", "list", "--format", "json", "--per-page", "2"],
        )
        .await,
    );
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = ok(&bencher(&server, &["runner", "list", "--per-page", "2"]).await);
    assert!(
        table.contains("alpha") && table.contains("bravo") && !table.contains("charlie"),
        "{table}"
    );
    assert!(table.contains("2 of 3"), "{table}");
    let page2 = json(
        &bencher(
            &server,
            &[
                "spec",
                "list",
                "--format",
                "json",
                "--per-page",
                "2",
                "--page",
                "2",
            ],
        )
        .await,
    );
    assert_eq!(page2[0]["slug"], "charlie");
    let searched = json(
        &bencher(
            &server,
            &["spec", "list", "--format", "json", "--search", "AV"],
        )
        .await,
    );
    assert_eq!(searched.as_array().unwrap().len(), 1);

    // Fallback swap and archive through the CLI.
    ok(&bencher(&server, &["spec", "update", "alpha", "--fallback"]).await);
    ok(&bencher(&server, &["spec", "update", "bravo", "--fallback"]).await);
    let specs = json(&bencher(&server, &["spec", "list", "--format", "json"]).await);
    let fallbacks: Vec<_> = specs
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["fallback"] == true)
        .map(|s| s["slug"].clone())
        .collect();
    assert_eq!(fallbacks, ["bravo"]);
    ok(&bencher(&server, &["spec", "update", "charlie", "--archive"]).await);
    let archived =
        json(&bencher(&server, &["spec", "list", "--archived", "--format", "json"]).await);
    assert_eq!(archived[0]["slug"], "charlie");

    // Runner specs: add, list, remove; delete refused while in use.
    ok(&bencher(
        &server,
        &["runner", "spec", "add", "alpha", "--spec", "alpha"],
    )
    .await);
    let linked = json(
        &bencher(
            &server,
            &["runner", "spec", "list", "alpha", "--format", "json"],
        )
        .await,
    );
    assert_eq!(linked[0]["slug"], "alpha");
    fails(
        &bencher(&server, &["spec", "delete", "alpha"]).await,
        1,
        "in use",
    );
    ok(&bencher(&server, &["runner", "spec", "remove", "alpha", "alpha"]).await);
    ok(&bencher(&server, &["spec", "delete", "alpha"]).await);
    fails(
        &bencher(&server, &["spec", "view", "alpha"]).await,
        1,
        "not found",
    );

    let project = json(
        &bencher(
            &server,
            &[
                "project",
                "create",
                "--name",
                "My Project",
                "--format",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(project["slug"], "my-project");
    let shown = ok(&bencher(&server, &["project", "view", "my-project"]).await);
    assert!(
        shown.contains(&format!(":{}/my-project", server.url.port().unwrap())),
        "{shown}"
    );
    let projects = ok(&bencher(&server, &["project", "list"]).await);
    assert!(
        projects.contains("my-project") && projects.contains("1 of 1 project"),
        "{projects}"
    );

    let version = json(&bencher(&server, &["server", "version", "--format", "json"]).await);
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    ok(&bencher_as(&server, None, &["server", "health"]).await);
    server.stop().await;
}

async fn runner_keys_rotate_and_archive(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = json(
        &bencher(
            &server,
            &["runner", "create", "--name", "Rotating", "--format", "json"],
        )
        .await,
    );
    let old_key = created["key"].as_str().unwrap().to_owned();
    let rotated = json(&bencher(&server, &["runner", "key", "rotating", "--format", "json"]).await);
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(old_key, new_key);
    let human = ok(&bencher(&server, &["runner", "key", "rotating"]).await);
    let newest = human
        .split_whitespace()
        .find(|w| w.starts_with("bencher_runner_"))
        .unwrap()
        .to_owned();

    let id = "rotating".parse().unwrap();
    let store = server.store();
    for stale in [&old_key, &new_key] {
        assert!(
            store
                .authenticate_runner(&id, &bencher_server::hash_secret(stale))
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        store
            .authenticate_runner(&id, &bencher_server::hash_secret(&newest))
            .await
            .unwrap()
            .is_some()
    );

    ok(&bencher(&server, &["runner", "update", "rotating", "--archive"]).await);
    assert!(
        store
            .authenticate_runner(&id, &bencher_server::hash_secret(&newest))
            .await
            .unwrap()
            .is_none()
    );
    let view = ok(&bencher(&server, &["runner", "view", "rotating"]).await);
    assert!(view.to_lowercase().contains("archived"), "{view}");
    ok(&bencher(
        &server,
        &[
            "runner",
            "update",
            "rotating",
            "--unarchive",
            "--name",
            "Rotated",
        ],
    )
    .await);
    let view = json(&bencher(&server, &["runner", "view", "rotating", "--format", "json"]).await);
    assert_eq!(view["name"], "Rotated");
    assert!(view.get("archived").is_none());
    server.stop().await;
}

async fn errors_are_clear(backend: Backend) {
    let server = TestServer::start(backend).await;
    // Usage errors (exit 2) before any request.
    fails(
        &bencher(
            &server,
            &[
                "spec",
                "create",
                "--name",
                "x",
                "--os",
                "plan9",
                "--architecture",
                "x86_64",
                "--cpu",
                "1",
                "--memory",
                "1",
                "--disk",
                "1",
            ],
        )
        .await,
        2,
        "linux, macos, windows",
    );
    fails(
        &bencher(
            &server,
            &[
                "spec",
                "create",
                "--name",
                "x",
                "--os",
                "linux",
                "--architecture",
                "x86_64",
                "--cpu",
                "0",
                "--memory",
                "1",
                "--disk",
                "1",
            ],
        )
        .await,
        2,
        "cpu must be between 1 and 4096",
    );
    fails(
        &bencher(
            &server,
            &[
                "spec",
                "create",
                "--name",
                "x",
                "--os",
                "linux",
                "--architecture",
                "x86_64",
                "--cpu",
                "1",
                "--memory",
                "0",
                "--disk",
                "1",
            ],
        )
        .await,
        2,
        "at least 1 byte",
    );
    fails(
        &bencher(&server, &["runner", "create", "--name", &"x".repeat(65)]).await,
        2,
        "at most 64 characters",
    );
    fails(
        &bencher(
            &server,
            &["runner", "update", "r", "--archive", "--unarchive"],
        )
        .await,
        2,
        "cannot be used with",
    );
    let err = fails(
        &bencher_as(
            &server,
            Some("bencher_user_short-secret"),
            &["runner", "list"],
        )
        .await,
        2,
        "--token",
    );
    assert!(
        !err.contains("short-secret"),
        "the token must not be echoed: {err}"
    );

    // Server-side errors (exit 1) with the server's message and a hint.
    fails(
        &bencher_as(&server, None, &["runner", "list"]).await,
        1,
        "BENCHER_API_TOKEN",
    );
    fails(
        &bencher(&server, &["runner", "view", "nobody"]).await,
        1,
        "runner `nobody` not found",
    );
    ok(&bencher(
        &server,
        &["runner", "create", "--name", "Taken", "--slug", "taken"],
    )
    .await);
    fails(
        &bencher(
            &server,
            &["runner", "create", "--name", "Again", "--slug", "taken"],
        )
        .await,
        1,
        "already exists",
    );
    let user = json(
        &bencher(
            &server,
            &["token", "create", "--name", "user", "--format", "json"],
        )
        .await,
    );
    fails(
        &bencher_as(&server, user["token"].as_str(), &["spec", "list"]).await,
        1,
        "admin token",
    );

    // An unreachable server says so.
    let mut unreachable = server.url.clone();
    unreachable.set_port(Some(1)).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bencher"))
        .args(["server", "version", "--host", unreachable.as_str()])
        .env_remove("BENCHER_HOST")
        .output()
        .await
        .unwrap();
    fails(&output, 1, "is a Bencher API server running");
    server.stop().await;
}

async fn tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let human = ok(&bencher(&server, &["token", "create", "--name", "ops", "--admin"]).await);
    let token = human
        .split_whitespace()
        .find(|w| w.starts_with("bencher_user_"))
        .unwrap()
        .to_owned();
    assert!(human.to_lowercase().contains("only once"), "{human}");
    ok(&bencher_as(&server, Some(&token), &["runner", "list"]).await);
    let list = json(&bencher(&server, &["token", "list", "--format", "json"]).await);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("bencher_user_"));
    let ops = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ops")
        .unwrap();
    ok(&bencher(&server, &["token", "revoke", ops["uuid"].as_str().unwrap()]).await);
    fails(
        &bencher_as(&server, Some(&token), &["runner", "list"]).await,
        1,
        "revoked",
    );
    server.stop().await;
}
