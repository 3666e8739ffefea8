//! The report queries over HTTP against a real server, on SQLite and on PostgreSQL:
//! reports list and view, the perf history, threshold CRUD with model versions, alerts
//! and dismissing them, measures and benchmarks. Reports are made the way the server
//! makes them (`Store::create_run` places them in their branch's history) and filled
//! through `Store::write_report`, the write processing uses.

use bencher_server::store::jobs::NewRun;
use bencher_server::store::report_queries::{Named, PerfError, PerfSelection};
use bencher_server::store::reports::{NewBoundary, NewMetric, ReportWrite};
use bencher_test_support::reqwest::{Method, Response, StatusCode};
use bencher_test_support::{Backend, TestServer, backend_tests};
use bencher_types::protocol::JobConfig;
use bencher_types::{JsonNewProject, ProjectUuid, ResourceId, SpecUuid, ThresholdUuid};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

async fn body(response: Response) -> (StatusCode, Value, Option<u64>) {
    let status = response.status();
    let total = response
        .headers()
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let text = response.text().await.expect("response body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, value, total)
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    payload: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.request(method, path);
    if let Some(payload) = payload {
        request = request.json(&payload);
    }
    let (status, value, _) = body(request.send().await.expect("request")).await;
    (status, value)
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    call(server, Method::GET, path, None).await
}

/// A list: its items and `X-Total-Count`.
async fn list(server: &TestServer, path: &str) -> (Vec<Value>, u64) {
    let (status, value, total) =
        body(server.request(Method::GET, path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{path}: {value}");
    (
        value.as_array().unwrap().clone(),
        total.expect("X-Total-Count"),
    )
}

#[track_caller]
fn assert_error(response: &(StatusCode, Value), status: StatusCode, needle: &str) {
    let (actual, body) = response;
    assert_eq!(*actual, status, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "expected `{needle}` in `{message}`"
    );
}

fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn minutes(n: i64) -> DateTime<Utc> {
    base_time() + TimeDelta::minutes(n)
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        .replace('+', "%2B")
}

struct Fixture {
    server: TestServer,
    project: ProjectUuid,
    intel: SpecUuid,
    amd: SpecUuid,
}

async fn create_spec(server: &TestServer, name: &str, fallback: bool) -> SpecUuid {
    let (status, spec) = call(
        server,
        Method::POST,
        "/v0/specs",
        Some(json!({
            "name": name, "os": "linux", "architecture": "x86_64", "sandbox": "firecracker",
            "cpu": 4, "memory": 51539607552u64, "disk": 137438953472u64, "fallback": fallback,
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{spec}");
    spec["uuid"].as_str().unwrap().parse().unwrap()
}

async fn fixture(backend: Backend) -> Fixture {
    let server = TestServer::start(backend).await;
    let project = server
        .store()
        .create_project(
            &JsonNewProject {
                name: "Bench".parse().unwrap(),
                slug: None,
            },
            server.clock.now(),
        )
        .await
        .unwrap()
        .uuid;
    let intel = create_spec(&server, "Intel v1", true).await;
    let amd = create_spec(&server, "AMD v1", false).await;
    Fixture {
        server,
        project,
        intel,
        amd,
    }
}

/// One run to seed: where, when, and the metrics and boundaries it gets.
struct Seed<'a> {
    branch: &'a str,
    testbed: &'a str,
    spec: Option<SpecUuid>,
    hash: Option<&'a str>,
    at: DateTime<Utc>,
    iterations: u32,
    metrics: Vec<NewMetric>,
    boundaries: Vec<NewBoundary>,
}

impl Default for Seed<'_> {
    fn default() -> Self {
        Self {
            branch: "main",
            testbed: "localhost",
            spec: None,
            hash: None,
            at: base_time(),
            iterations: 1,
            metrics: Vec::new(),
            boundaries: Vec::new(),
        }
    }
}

fn metric(iteration: u32, benchmark: &str, measure: &str, value: f64) -> NewMetric {
    NewMetric {
        iteration,
        benchmark: benchmark.into(),
        measure: measure.into(),
        value,
        lower_value: None,
        upper_value: None,
    }
}

/// Submits a run (the report shell, its head and version) and writes its results.
/// Returns the report's UUID.
async fn seed(fixture: &Fixture, seed: Seed<'_>) -> String {
    let store = fixture.server.store();
    let job = store
        .create_run(
            &NewRun {
                project: fixture.project,
                branch: seed.branch.parse().unwrap(),
                testbed: seed.testbed.parse().unwrap(),
                spec: seed.spec.map(|s| ResourceId::Uuid(s.as_uuid())),
                adapter: Some(bencher_types::Adapter::Json),
                hash: seed.hash.map(|h| h.parse().unwrap()),
                fold: None,
                config: JobConfig {
                    registry: "http://localhost:6610".into(),
                    project: fixture.project,
                    digest: format!("sha256:{}", "a".repeat(64)),
                    image: None,
                    entrypoint: None,
                    cmd: None,
                    env: None,
                    timeout: 60,
                    file_paths: None,
                    build_time: None,
                    file_size: None,
                    iter: Some(seed.iterations),
                    allow_failure: None,
                },
                thresholds: Vec::new(),
                priority: 0,
            },
            seed.at,
        )
        .await
        .unwrap();
    let report = job.report.to_string();
    let written = store
        .write_report(
            &ReportWrite {
                report: &report,
                project: fixture.project,
                job: None,
                start_time: Some(seed.at + TimeDelta::seconds(10)),
                end_time: Some(seed.at + TimeDelta::seconds(30)),
                iterations: seed.iterations,
                metrics: &seed.metrics,
                boundaries: &seed.boundaries,
                environment: None,
                environment_changed: None,
            },
            seed.at + TimeDelta::seconds(31),
        )
        .await
        .unwrap();
    assert!(written);
    report
}

/// Creates a threshold over HTTP; returns `(threshold, model)` UUIDs.
async fn threshold(
    fixture: &Fixture,
    branch: &str,
    measure: &str,
    model: Value,
) -> (String, String) {
    let mut body = json!({ "branch": branch, "testbed": "localhost", "measure": measure });
    body.as_object_mut()
        .unwrap()
        .extend(model.as_object().unwrap().clone());
    let (status, threshold) = call(
        &fixture.server,
        Method::POST,
        &format!("/v0/projects/{}/thresholds", fixture.project),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{threshold}");
    (
        threshold["uuid"].as_str().unwrap().to_owned(),
        threshold["model"]["uuid"].as_str().unwrap().to_owned(),
    )
}

fn boundary(
    metric: usize,
    (threshold, model): &(String, String),
    limits: (Option<f64>, Option<f64>, Option<f64>),
    alert: Option<&'static str>,
) -> NewBoundary {
    NewBoundary {
        metric,
        threshold: threshold.clone(),
        model: model.clone(),
        baseline: limits.0,
        lower_limit: limits.1,
        upper_limit: limits.2,
        alert,
    }
}

backend_tests!(
    reports_list_and_view,
    thresholds_crud_and_model_versions,
    alerts_list_view_and_dismiss,
    perf_series_and_spec_filter,
    perf_refuses_too_much
);

async fn reports_list_and_view(backend: Backend) {
    let f = fixture(backend).await;
    let p = f.project;
    // The first run makes the branch and testbed a threshold needs.
    let empty = seed(
        &f,
        Seed {
            at: minutes(0),
            ..Seed::default()
        },
    )
    .await;
    let latency = threshold(
        &f,
        "main",
        "latency",
        json!({ "test": "t_test", "upper_boundary": 0.99 }),
    )
    .await;
    let mut fib = metric(0, "fib", "latency", 100.0);
    fib.lower_value = Some(90.0);
    fib.upper_value = Some(110.0);
    let a = seed(
        &f,
        Seed {
            hash: Some("aaaa1111"),
            at: minutes(10),
            iterations: 2,
            metrics: vec![
                fib,
                metric(0, "fib", "throughput", 5.0),
                metric(0, "sort", "latency", 200.0),
                metric(1, "fib", "latency", 102.0),
            ],
            boundaries: vec![boundary(
                0,
                &latency,
                (Some(95.0), None, Some(99.0)),
                Some("upper"),
            )],
            ..Seed::default()
        },
    )
    .await;
    let b = seed(
        &f,
        Seed {
            branch: "feature",
            at: minutes(20),
            metrics: vec![metric(0, "fib", "latency", 50.0)],
            ..Seed::default()
        },
    )
    .await;

    // Newest first, with the total.
    let (reports, total) = list(&f.server, &format!("/v0/projects/{p}/reports")).await;
    assert_eq!(total, 3);
    let uuids: Vec<&str> = reports
        .iter()
        .map(|r| r["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids, [b.as_str(), a.as_str(), empty.as_str()]);
    assert!(
        reports[0].get("results").is_none(),
        "lists leave results out"
    );
    assert_eq!(reports[1]["alerts"], 1);
    // Oldest first on request; pages.
    let (reports, _) = list(
        &f.server,
        &format!("/v0/projects/{p}/reports?direction=asc"),
    )
    .await;
    assert_eq!(reports[0]["uuid"], empty.as_str());
    let (reports, total) = list(&f.server, "/v0/projects/bench/reports?per_page=1&page=2").await;
    assert_eq!((reports.len(), total), (1, 3));
    assert_eq!(reports[0]["uuid"], a.as_str());
    // Filters: branch and testbed by name, slug or UUID; time range.
    let (reports, total) = list(
        &f.server,
        &format!("/v0/projects/{p}/reports?branch=feature"),
    )
    .await;
    assert_eq!(total, 1);
    let feature = reports[0]["branch"]["uuid"].as_str().unwrap().to_owned();
    let (_, total) = list(
        &f.server,
        &format!("/v0/projects/{p}/reports?branch={feature}"),
    )
    .await;
    assert_eq!(total, 1);
    let (_, total) = list(
        &f.server,
        &format!("/v0/projects/{p}/reports?testbed=localhost"),
    )
    .await;
    assert_eq!(total, 3);
    let (reports, total) = list(
        &f.server,
        &format!(
            "/v0/projects/{p}/reports?start_time={}&end_time={}",
            rfc3339(minutes(5)),
            rfc3339(minutes(15))
        ),
    )
    .await;
    assert_eq!(total, 1);
    assert_eq!(reports[0]["uuid"], a.as_str());
    assert_error(
        &get(
            &f.server,
            &format!("/v0/projects/{p}/reports?branch=nothing"),
        )
        .await,
        StatusCode::NOT_FOUND,
        "branch `nothing` not found",
    );
    assert_error(
        &get(&f.server, &format!("/v0/projects/{p}/reports?sort=name")).await,
        StatusCode::BAD_REQUEST,
        "created",
    );
    assert_error(
        &get(
            &f.server,
            &format!("/v0/projects/{p}/reports?start_time=yesterday"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "start_time",
    );

    // One report, whole.
    let (status, report) = get(&f.server, &format!("/v0/projects/{p}/reports/{a}")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["branch"]["name"], "main");
    assert_eq!(report["testbed"]["slug"], "localhost");
    assert_eq!(report["spec"]["uuid"], f.intel.to_string());
    assert_eq!(
        report["version"],
        json!({ "number": 2, "hash": "aaaa1111" })
    );
    assert_eq!(report["adapter"], "json");
    assert_eq!(report["iterations"], 2);
    assert!(report["job"].is_string());
    assert!(report["processed"].is_string());
    assert_eq!(
        report["start_time"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        minutes(10) + TimeDelta::seconds(10)
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{report}");
    let first: Vec<&str> = results[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["benchmark"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(first, ["fib", "sort"]);
    let fib = &results[0][0]["measures"];
    assert_eq!(fib.as_array().unwrap().len(), 2);
    assert_eq!(fib[0]["measure"]["slug"], "latency");
    assert_eq!(fib[0]["metric"]["value"], 100.0);
    assert_eq!(fib[0]["metric"]["lower_value"], 90.0);
    assert_eq!(fib[0]["metric"]["upper_value"], 110.0);
    assert_eq!(fib[0]["boundary"]["baseline"], 95.0);
    assert_eq!(fib[0]["boundary"]["upper_limit"], 99.0);
    assert!(fib[0]["boundary"].get("lower_limit").is_none());
    assert_eq!(fib[0]["boundary"]["threshold"], latency.0.as_str());
    assert_eq!(fib[0]["boundary"]["model"]["test"], "t_test");
    assert_eq!(fib[0]["alert"]["side"], "upper");
    assert_eq!(fib[0]["alert"]["status"], "active");
    assert_eq!(fib[1]["measure"]["slug"], "throughput");
    assert!(fib[1].get("boundary").is_none() && fib[1].get("alert").is_none());
    assert_eq!(results[1][0]["measures"][0]["metric"]["value"], 102.0);
    // A report without results has an empty list; the first version is 1.
    let (_, report) = get(&f.server, &format!("/v0/projects/{p}/reports/{empty}")).await;
    assert_eq!(report["results"], json!([]));
    assert_eq!(report["version"]["number"], 1);

    // Unknown report, or another project's: 404.
    assert_error(
        &get(
            &f.server,
            &format!("/v0/projects/{p}/reports/67e55044-10b1-426f-9247-bb680e5fe0c8"),
        )
        .await,
        StatusCode::NOT_FOUND,
        "report",
    );
    let (status, _) = call(
        &f.server,
        Method::POST,
        "/v0/projects",
        Some(json!({ "name": "Other" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_error(
        &get(&f.server, &format!("/v0/projects/other/reports/{a}")).await,
        StatusCode::NOT_FOUND,
        "report",
    );
    assert_error(
        &get(&f.server, &format!("/v0/projects/{p}/reports/not-a-uuid")).await,
        StatusCode::BAD_REQUEST,
        "",
    );
    // Without a token: 401.
    let response = f
        .server
        .request_as(Method::GET, &format!("/v0/projects/{p}/reports"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Measures and benchmarks the results named.
    let (benchmarks, total) = list(&f.server, &format!("/v0/projects/{p}/benchmarks")).await;
    assert_eq!(total, 2);
    assert_eq!(benchmarks[0]["name"], "fib");
    assert_eq!(benchmarks[1]["name"], "sort");
    let (measures, total) = list(&f.server, &format!("/v0/projects/{p}/measures")).await;
    assert_eq!(total, 2);
    assert_eq!(measures[0]["slug"], "latency");
    assert_eq!(measures[0]["units"], "nanoseconds (ns)");
    assert_eq!(measures[1]["slug"], "throughput");
    let (measures, total) = list(
        &f.server,
        &format!("/v0/projects/{p}/measures?per_page=1&page=2"),
    )
    .await;
    assert_eq!((measures.len(), total), (1, 2));
    f.server.stop().await;
}

async fn thresholds_crud_and_model_versions(backend: Backend) {
    let f = fixture(backend).await;
    let p = f.project;
    seed(&f, Seed::default()).await;
    let path = format!("/v0/projects/{p}/thresholds");
    let post = |body: Value| call(&f.server, Method::POST, &path, Some(body));

    // Impossible models and unknown names: 4xx, nothing written.
    assert_error(
        &post(
            json!({ "branch": "main", "testbed": "localhost", "measure": "latency",
                      "test": "t_test", "upper_boundary": 2.0 }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "confidence level",
    );
    assert_error(
        &post(
            json!({ "branch": "main", "testbed": "localhost", "measure": "latency",
                      "test": "z_score", "upper_boundary": 0.9,
                      "min_sample_size": 10, "max_sample_size": 5 }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "min sample size",
    );
    assert_error(
        &post(
            json!({ "branch": "main", "testbed": "localhost", "measure": "latency",
                      "test": "percentage" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "boundary",
    );
    assert_error(
        &post(
            json!({ "branch": "main", "testbed": "localhost", "measure": "latency",
                      "test": "t-test", "upper_boundary": 0.9 }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "test",
    );
    assert_error(
        &post(
            json!({ "branch": "main", "testbed": "localhost", "measure": "latency",
                      "test": "t_test", "upper": 0.9 }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "upper",
    );
    assert_error(
        &post(
            json!({ "branch": "nothing", "testbed": "localhost", "measure": "latency",
                      "test": "t_test", "upper_boundary": 0.9 }),
        )
        .await,
        StatusCode::NOT_FOUND,
        "branch `nothing`",
    );
    assert_error(
        &post(
            json!({ "branch": "main", "testbed": "localhost", "measure": "bogus",
                      "test": "t_test", "upper_boundary": 0.9 }),
        )
        .await,
        StatusCode::NOT_FOUND,
        "measure `bogus`",
    );
    let (_, total) = list(&f.server, &path).await;
    assert_eq!(total, 0);
    let (_, total) = list(&f.server, &format!("/v0/projects/{p}/measures")).await;
    assert_eq!(total, 0, "a refused threshold creates no measure");

    // Create: the built-in measure is created with its units.
    let (status, created) = post(json!({
        "branch": "main", "testbed": "localhost", "measure": "latency",
        "test": "t_test", "max_sample_size": 64, "upper_boundary": 0.99
    }))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["branch"]["name"], "main");
    assert_eq!(created["testbed"]["name"], "localhost");
    assert_eq!(created["measure"]["slug"], "latency");
    assert_eq!(created["model"]["test"], "t_test");
    assert_eq!(created["model"]["max_sample_size"], 64);
    assert_eq!(created["model"]["upper_boundary"], 0.99);
    assert!(created["model"].get("replaced").is_none());
    let uuid = created["uuid"].as_str().unwrap().to_owned();
    let first_model = created["model"]["uuid"].as_str().unwrap().to_owned();
    let (measures, _) = list(&f.server, &format!("/v0/projects/{p}/measures")).await;
    assert_eq!(measures[0]["units"], "nanoseconds (ns)");
    // By name and by slug; one threshold per branch, testbed and measure.
    assert_error(
        &post(
            json!({ "branch": "main", "testbed": "localhost", "measure": "Latency",
                      "test": "static", "upper_boundary": 5.0 }),
        )
        .await,
        StatusCode::CONFLICT,
        "already have a threshold",
    );
    let (status, build) = post(json!({
        "branch": "main", "testbed": "localhost", "measure": "build-time",
        "test": "static", "lower_boundary": 1.0, "upper_boundary": 5.0
    }))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{build}");
    assert_eq!(build["measure"]["name"], "Build Time");

    // A report checked against the first model.
    let old = (uuid.clone(), first_model.clone());
    let report = seed(
        &f,
        Seed {
            at: minutes(5),
            metrics: vec![metric(0, "fib", "latency", 10.0)],
            boundaries: vec![boundary(0, &old, (Some(10.0), None, Some(12.0)), None)],
            ..Seed::default()
        },
    )
    .await;

    // List, filters, view.
    let (items, total) = list(&f.server, &path).await;
    assert_eq!(total, 2);
    assert_eq!(items[0]["uuid"], uuid.as_str());
    let (_, total) = list(&f.server, &format!("{path}?measure=latency")).await;
    assert_eq!(total, 1);
    let (_, total) = list(&f.server, &format!("{path}?branch=main&testbed=localhost")).await;
    assert_eq!(total, 2);
    assert_error(
        &get(&f.server, &format!("{path}?branch=nothing")).await,
        StatusCode::NOT_FOUND,
        "branch `nothing` not found",
    );
    let (_, total) = list(&f.server, &format!("{path}?per_page=1&direction=desc")).await;
    assert_eq!(total, 2);
    let (status, viewed) = get(&f.server, &format!("{path}/{uuid}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(viewed, created);

    // Update: a new model version; the old one is kept and marked replaced.
    let (status, updated) = call(
        &f.server,
        Method::PUT,
        &format!("{path}/{uuid}"),
        Some(json!({ "test": "percentage", "upper_boundary": 0.1, "window": 86400 })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["model"]["test"], "percentage");
    assert_eq!(updated["model"]["window"], 86400);
    assert!(updated["model"].get("max_sample_size").is_none());
    assert_ne!(updated["model"]["uuid"], first_model.as_str());
    let models = f
        .server
        .store()
        .threshold_models(uuid.parse::<ThresholdUuid>().unwrap())
        .await
        .unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0].uuid.to_string(), first_model);
    assert!(models[0].replaced.is_some());
    assert!(models[1].replaced.is_none());
    // The boundary keeps the model it used.
    let (_, viewed) = get(&f.server, &format!("/v0/projects/{p}/reports/{report}")).await;
    let model = &viewed["results"][0][0]["measures"][0]["boundary"]["model"];
    assert_eq!(model["uuid"], first_model.as_str());
    assert_eq!(model["test"], "t_test");
    assert!(model["replaced"].is_string());
    // An impossible update changes nothing.
    assert_error(
        &call(
            &f.server,
            Method::PUT,
            &format!("{path}/{uuid}"),
            Some(json!({ "test": "percentage", "lower_boundary": -1.0 })),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "at least 0",
    );
    let (_, viewed) = get(&f.server, &format!("{path}/{uuid}")).await;
    assert_eq!(viewed["model"], updated["model"]);
    assert_error(
        &call(
            &f.server,
            Method::PUT,
            &format!("{path}/67e55044-10b1-426f-9247-bb680e5fe0c8"),
            Some(json!({ "test": "static", "upper_boundary": 1.0 })),
        )
        .await,
        StatusCode::NOT_FOUND,
        "threshold",
    );

    // Models alternating one-sided boundaries: a NULL float then a real one in the same
    // cached statement (PostgreSQL rejected this before `store::float`).
    for round in 0..16 {
        let model = if round % 2 == 0 {
            json!({ "test": "static", "upper_boundary": 5.0 })
        } else {
            json!({ "test": "static", "lower_boundary": 1.0 })
        };
        let (status, updated) = call(
            &f.server,
            Method::PUT,
            &format!("{path}/{uuid}"),
            Some(model),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "round {round}: {updated}");
    }
    let (_, viewed) = get(&f.server, &format!("{path}/{uuid}")).await;
    assert_eq!(viewed["model"]["lower_boundary"], 1.0);
    assert!(viewed["model"].get("upper_boundary").is_none());

    // Delete.
    let (status, _) = call(&f.server, Method::DELETE, &format!("{path}/{uuid}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &get(&f.server, &format!("{path}/{uuid}")).await,
        StatusCode::NOT_FOUND,
        "threshold",
    );
    assert_error(
        &call(&f.server, Method::DELETE, &format!("{path}/{uuid}"), None).await,
        StatusCode::NOT_FOUND,
        "threshold",
    );
    let (_, total) = list(&f.server, &path).await;
    assert_eq!(total, 1);
    f.server.stop().await;
}

async fn alerts_list_view_and_dismiss(backend: Backend) {
    let f = fixture(backend).await;
    let p = f.project;
    seed(&f, Seed::default()).await;
    // One-sided and two-sided boundaries mixed: a NULL limit then a real one through the
    // same cached statement (the PostgreSQL float4 NULL trap, see `store::float`).
    let latency = threshold(
        &f,
        "main",
        "latency",
        json!({ "test": "static", "upper_boundary": 10.0 }),
    )
    .await;
    let throughput = threshold(
        &f,
        "main",
        "throughput",
        json!({ "test": "static", "lower_boundary": 100.0, "upper_boundary": 1000.0 }),
    )
    .await;
    let first = seed(
        &f,
        Seed {
            at: minutes(1),
            metrics: vec![
                metric(0, "fib", "latency", 12.0),
                metric(0, "fib", "throughput", 150.0),
            ],
            boundaries: vec![
                boundary(0, &latency, (None, None, Some(10.0)), Some("upper")),
                boundary(1, &throughput, (None, Some(100.0), Some(1000.0)), None),
            ],
            ..Seed::default()
        },
    )
    .await;
    let second = seed(
        &f,
        Seed {
            at: minutes(2),
            metrics: vec![metric(0, "sort", "throughput", 50.0)],
            boundaries: vec![boundary(
                0,
                &throughput,
                (None, Some(100.0), Some(1000.0)),
                Some("lower"),
            )],
            ..Seed::default()
        },
    )
    .await;

    let path = format!("/v0/projects/{p}/alerts");
    let (alerts, total) = list(&f.server, &path).await;
    assert_eq!(total, 2);
    // Newest first.
    assert_eq!(alerts[0]["report"], second.as_str());
    assert_eq!(alerts[0]["side"], "lower");
    assert_eq!(alerts[0]["benchmark"]["name"], "sort");
    assert_eq!(alerts[0]["measure"]["slug"], "throughput");
    assert_eq!(alerts[0]["metric"]["value"], 50.0);
    assert_eq!(alerts[0]["boundary"]["lower_limit"], 100.0);
    assert_eq!(alerts[0]["boundary"]["threshold"], throughput.0.as_str());
    assert_eq!(alerts[0]["branch"]["name"], "main");
    assert_eq!(alerts[0]["testbed"]["name"], "localhost");
    assert_eq!(alerts[0]["version"]["number"], 3);
    assert_eq!(alerts[0]["status"], "active");
    assert_eq!(alerts[1]["report"], first.as_str());
    assert_eq!(alerts[1]["side"], "upper");
    let alert = alerts[1]["uuid"].as_str().unwrap().to_owned();

    // Dismiss, filter by status, re-activate.
    let (status, dismissed) = call(
        &f.server,
        Method::PATCH,
        &format!("{path}/{alert}"),
        Some(json!({ "status": "dismissed" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dismissed}");
    assert_eq!(dismissed["status"], "dismissed");
    let (status, viewed) = get(&f.server, &format!("{path}/{alert}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(viewed, dismissed);
    let (items, total) = list(&f.server, &format!("{path}?status=dismissed")).await;
    assert_eq!(
        (total, items[0]["uuid"].as_str()),
        (1, Some(alert.as_str()))
    );
    let (_, total) = list(&f.server, &format!("{path}?status=active")).await;
    assert_eq!(total, 1);
    // The report's view shows the new status too.
    let (_, report) = get(&f.server, &format!("/v0/projects/{p}/reports/{first}")).await;
    assert_eq!(
        report["results"][0][0]["measures"][0]["alert"]["status"],
        "dismissed"
    );
    let (_, active) = call(
        &f.server,
        Method::PATCH,
        &format!("{path}/{alert}"),
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_eq!(active["status"], "active");

    assert_error(
        &call(
            &f.server,
            Method::PATCH,
            &format!("{path}/{alert}"),
            Some(json!({ "status": "gone" })),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "status",
    );
    assert_error(
        &call(
            &f.server,
            Method::PATCH,
            &format!("{path}/67e55044-10b1-426f-9247-bb680e5fe0c8"),
            Some(json!({ "status": "dismissed" })),
        )
        .await,
        StatusCode::NOT_FOUND,
        "alert",
    );
    assert_error(
        &get(&f.server, &format!("{path}?status=gone")).await,
        StatusCode::BAD_REQUEST,
        "status",
    );
    let (items, total) = list(&f.server, &format!("{path}?per_page=1&page=2")).await;
    assert_eq!((items.len(), total), (1, 2));
    f.server.stop().await;
}

async fn perf_series_and_spec_filter(backend: Backend) {
    let f = fixture(backend).await;
    let p = f.project;
    let point = |at, spec, branch, fib: f64, sort: f64| Seed {
        branch,
        spec,
        at,
        metrics: vec![
            metric(0, "fib", "latency", fib),
            metric(0, "sort", "latency", sort),
        ],
        ..Seed::default()
    };
    let r1 = seed(&f, point(minutes(1), Some(f.intel), "main", 10.0, 20.0)).await;
    let r2 = seed(&f, point(minutes(2), Some(f.intel), "main", 11.0, 21.0)).await;
    let r3 = seed(&f, point(minutes(3), Some(f.amd), "main", 30.0, 40.0)).await;
    let r4 = seed(&f, point(minutes(4), Some(f.intel), "feature", 12.0, 22.0)).await;
    let latency = threshold(
        &f,
        "main",
        "latency",
        json!({ "test": "static", "upper_boundary": 25.0 }),
    )
    .await;
    let r5 = seed(
        &f,
        Seed {
            spec: Some(f.amd),
            at: minutes(5),
            metrics: vec![metric(0, "fib", "latency", 31.0)],
            boundaries: vec![boundary(
                0,
                &latency,
                (None, None, Some(25.0)),
                Some("upper"),
            )],
            ..Seed::default()
        },
    )
    .await;

    let perf = |query: String| {
        let server = &f.server;
        async move { get(server, &format!("/v0/projects/{p}/perf?{query}")).await }
    };
    let (status, all) = perf(
        "branches=main,feature&testbeds=localhost&benchmarks=fib,sort&measures=latency".into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let series = all["results"].as_array().unwrap();
    assert_eq!(series.len(), 4);
    let names: Vec<(&str, &str)> = series
        .iter()
        .map(|s| {
            (
                s["branch"]["name"].as_str().unwrap(),
                s["benchmark"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("main", "fib"),
            ("main", "sort"),
            ("feature", "fib"),
            ("feature", "sort")
        ]
    );
    let main_fib = series[0]["metrics"].as_array().unwrap();
    let reports: Vec<&str> = main_fib
        .iter()
        .map(|m| m["report"].as_str().unwrap())
        .collect();
    assert_eq!(
        reports,
        [r1.as_str(), r2.as_str(), r3.as_str(), r5.as_str()]
    );
    let values: Vec<f64> = main_fib
        .iter()
        .map(|m| m["metric"]["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [10.0, 11.0, 30.0, 31.0]);
    let versions: Vec<u64> = main_fib
        .iter()
        .map(|m| m["version"]["number"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(main_fib[0]["spec"]["slug"], "intel-v1");
    assert_eq!(main_fib[2]["spec"]["slug"], "amd-v1");
    assert_eq!(main_fib[0]["iteration"], 0);
    assert!(main_fib[0].get("boundary").is_none());
    assert_eq!(main_fib[3]["boundary"]["upper_limit"], 25.0);
    assert_eq!(main_fib[3]["alert"]["side"], "upper");
    assert_eq!(series[1]["metrics"].as_array().unwrap().len(), 3);
    let feature_fib = series[2]["metrics"].as_array().unwrap();
    assert_eq!(feature_fib.len(), 1);
    assert_eq!(feature_fib[0]["report"], r4.as_str());

    // Only one Spec's history: results from other hardware never mix in.
    let (_, intel) = perf(
        "branches=main&testbeds=localhost&benchmarks=fib&measures=latency&specs=intel-v1".into(),
    )
    .await;
    let values: Vec<f64> = intel["results"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metric"]["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [10.0, 11.0]);
    let (_, amd) = perf(format!(
        "branches=main&testbeds=localhost&benchmarks=fib&measures=latency&specs={}",
        f.amd
    ))
    .await;
    assert_eq!(amd["results"][0]["metrics"].as_array().unwrap().len(), 2);
    // A time range (a report's time is its end time: 30 s after its start).
    let (_, ranged) = perf(format!(
        "branches=main&testbeds=localhost&benchmarks=fib&measures=latency&start_time={}&end_time={}",
        rfc3339(minutes(2)),
        rfc3339(minutes(3) + TimeDelta::seconds(30)),
    ))
    .await;
    let reports: Vec<&str> = ranged["results"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["report"].as_str().unwrap())
        .collect();
    assert_eq!(reports, [r2.as_str(), r3.as_str()]);
    // By UUID too, duplicates once.
    let (_, by_uuid) = perf(format!(
        "branches={0},main&testbeds=localhost&benchmarks=fib&measures=latency",
        all["results"][0]["branch"]["uuid"].as_str().unwrap()
    ))
    .await;
    let series = by_uuid["results"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{by_uuid}");
    assert_eq!(series[0]["metrics"].as_array().unwrap().len(), 4);

    assert_error(
        &perf("branches=main&testbeds=localhost&benchmarks=fib&measures=latency,throughput".into())
            .await,
        StatusCode::NOT_FOUND,
        "measure `throughput` not found",
    );
    assert_error(
        &perf("branches=main&testbeds=localhost&benchmarks=nothing&measures=latency".into()).await,
        StatusCode::NOT_FOUND,
        "benchmark `nothing` not found",
    );
    assert_error(
        &perf(
            "branches=main&testbeds=localhost&benchmarks=fib&measures=latency&specs=nothing".into(),
        )
        .await,
        StatusCode::NOT_FOUND,
        "spec `nothing` not found",
    );
    assert_error(
        &perf("branches=main&testbeds=localhost&benchmarks=fib".into()).await,
        StatusCode::BAD_REQUEST,
        "measures",
    );
    assert_error(
        &perf("branches=,&testbeds=localhost&benchmarks=fib&measures=latency".into()).await,
        StatusCode::BAD_REQUEST,
        "`branches` needs at least one",
    );
    assert_error(
        &perf(format!(
            "branches=main&testbeds=localhost&benchmarks=fib&measures=latency&start_time={}&end_time={}",
            rfc3339(minutes(3)),
            rfc3339(minutes(2))
        ))
        .await,
        StatusCode::BAD_REQUEST,
        "after `end_time`",
    );
    f.server.stop().await;
}

async fn perf_refuses_too_much(backend: Backend) {
    let f = fixture(backend).await;
    let p = f.project;
    // 9 benchmarks × 8 measures = 72 series, over the limit of 64.
    let benchmarks: Vec<String> = (0..9).map(|i| format!("bench-{i}")).collect();
    let measures: Vec<String> = (0..8).map(|i| format!("measure-{i}")).collect();
    let mut metrics = Vec::new();
    for benchmark in &benchmarks {
        for measure in &measures {
            metrics.push(metric(0, benchmark, measure, 1.0));
        }
    }
    seed(
        &f,
        Seed {
            metrics,
            ..Seed::default()
        },
    )
    .await;
    let query = |benchmarks: &[String], measures: &[String]| {
        format!(
            "/v0/projects/{p}/perf?branches=main&testbeds=localhost&benchmarks={}&measures={}",
            benchmarks.join(","),
            measures.join(",")
        )
    };
    assert_error(
        &get(&f.server, &query(&benchmarks, &measures)).await,
        StatusCode::BAD_REQUEST,
        "72 series",
    );
    // 8 × 8 = 64 is answered, every series with its one point.
    let (status, perf) = get(&f.server, &query(&benchmarks[..8], &measures)).await;
    assert_eq!(status, StatusCode::OK, "{perf}");
    let series = perf["results"].as_array().unwrap();
    assert_eq!(series.len(), 64);
    assert!(
        series
            .iter()
            .all(|s| s["metrics"].as_array().unwrap().len() == 1)
    );
    let (_, total) = list(&f.server, &format!("/v0/projects/{p}/measures")).await;
    assert_eq!(total, 8);
    // The points cap: the store counts before it reads (the server's cap is
    // MAX_PERF_POINTS; a small one here keeps the test quick).
    let store = f.server.store();
    let named = |kind, id: &str| {
        let id = id.to_owned();
        async move { store.find_named(kind, p, &id).await.unwrap().unwrap() }
    };
    let selection = PerfSelection {
        branches: vec![named(Named::Branch, "main").await],
        testbeds: vec![named(Named::Testbed, "localhost").await],
        benchmarks: vec![named(Named::Benchmark, "bench-0").await],
        measures: vec![
            named(Named::Measure, "measure-0").await,
            named(Named::Measure, "measure-1").await,
        ],
        specs: Vec::new(),
        start_time: None,
        end_time: None,
    };
    let error = store.perf_points(p, &selection, 1).await.err().unwrap();
    assert!(
        matches!(error, PerfError::TooManyPoints { points: 2, max: 1 }),
        "{error}"
    );
    assert!(error.to_string().contains("narrow it"), "{error}");
    assert_eq!(store.perf_points(p, &selection, 2).await.unwrap().len(), 2);
    f.server.stop().await;
}
