//! `Client`: one async method per REST endpoint, and the plumbing they share (URL
//! building, authentication, status and body decoding, list totals).

use std::time::{Duration, SystemTime};

use bencher_types::{
    AlertQuery, AlertUuid, JsonAlert, JsonBenchmark, JsonMeasure, JsonNewThreshold, JsonPerf,
    JsonReport, JsonThreshold, JsonUpdateAlert, JsonUpdateThreshold, PerfQuery, ReportQuery,
    ReportUuid, ThresholdQuery, ThresholdUuid,
};
use bencher_types::{
    ApiToken, JobQuery, JobUuid, JsonCreatedToken, JsonHealth, JsonJob, JsonNewProject,
    JsonNewResults, JsonNewRun, JsonNewRunner, JsonNewRunnerSpec, JsonNewSpec, JsonNewToken,
    JsonProject, JsonResultsReport, JsonRunner, JsonRunnerKey, JsonServerVersion, JsonSpec,
    JsonToken, JsonUpdateRunner, JsonUpdateSpec, Pagination, ProjectQuery, ResourceId, RunnerQuery,
    SpecQuery, TOTAL_COUNT_HEADER, TokenUuid,
};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::ClientError;

/// Sent with every request, so server logs tell CLI and runner versions apart.
pub const USER_AGENT: &str = concat!("bencher/", env!("CARGO_PKG_VERSION"));

/// Short enough that a wrong `--host` fails fast; the request timeout covers the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Every endpoint here answers from the database; a minute means the server is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One page of a list endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Number of items matching the filters across all pages (`X-Total-Count`).
    pub total: u64,
}

/// A client of one Bencher API server, optionally authenticated with an API token.
///
/// Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    host: Url,
    // `ApiToken`'s `Debug` is redacted, so deriving `Debug` here is safe.
    token: Option<ApiToken>,
}

/// A response that arrived, whatever its status.
struct Reply {
    method: Method,
    url: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|source| ClientError::Decode {
            method: self.method.to_string(),
            url: self.url.clone(),
            status: self.status.as_u16(),
            source,
        })
    }

    fn page<T: DeserializeOwned>(&self) -> Result<Page<T>, ClientError> {
        let total = self
            .headers
            .get(TOTAL_COUNT_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| ClientError::MissingTotal {
                method: self.method.to_string(),
                url: self.url.clone(),
                header: TOTAL_COUNT_HEADER,
            })?;
        Ok(Page {
            items: self.json()?,
            total,
        })
    }
}

impl Client {
    /// A client of the server at `host` (such as `https://api.bencher.example.com`, or
    /// one with a path prefix when the API sits behind a reverse proxy).
    ///
    /// Fails when `host` cannot be the base of the API's URLs: not http(s), or carrying
    /// credentials, a query or a fragment that would be silently dropped or misused.
    pub fn new(host: Url, token: Option<ApiToken>) -> Result<Self, ClientError> {
        validate_host(&host)?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|source| ClientError::Transport {
                method: "(setup)".to_owned(),
                url: host.to_string(),
                source,
            })?;
        Ok(Self { http, host, token })
    }

    pub fn host(&self) -> &Url {
        &self.host
    }

    /// Whether requests carry an API token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    // ---- server ----

    /// `GET /v0/server/version`
    pub async fn server_version(&self) -> Result<JsonServerVersion, ClientError> {
        self.get(&["v0", "server", "version"]).await
    }

    /// `GET /v0/server/health`. A degraded server may answer 503 with the same body;
    /// that is still a health report, not a failure to get one.
    pub async fn server_health(&self) -> Result<JsonHealth, ClientError> {
        let url = self.url(&["v0", "server", "health"])?;
        let reply = self.exchange(Method::GET, url, |req| req).await?;
        let degraded = (reply.status == StatusCode::SERVICE_UNAVAILABLE)
            .then(|| serde_json::from_slice::<JsonHealth>(&reply.body).ok())
            .flatten();
        if let Some(health) = degraded {
            return Ok(health);
        }
        success(reply)?.json()
    }

    // ---- runners ----

    /// `GET /v0/runners`
    pub async fn list_runners(
        &self,
        query: &RunnerQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonRunner>, ClientError> {
        let url = self.url(&["v0", "runners"])?;
        self.list(url, query, pagination).await
    }

    /// `POST /v0/runners`: the returned key is never shown again.
    pub async fn create_runner(&self, body: &JsonNewRunner) -> Result<JsonRunnerKey, ClientError> {
        self.post(&["v0", "runners"], body).await
    }

    /// `GET /v0/runners/{runner}`
    pub async fn get_runner(&self, runner: &ResourceId) -> Result<JsonRunner, ClientError> {
        self.get(&["v0", "runners", &runner.to_string()]).await
    }

    /// `PATCH /v0/runners/{runner}`
    pub async fn update_runner(
        &self,
        runner: &ResourceId,
        body: &JsonUpdateRunner,
    ) -> Result<JsonRunner, ClientError> {
        let url = self.url(&["v0", "runners", &runner.to_string()])?;
        self.send(Method::PATCH, url, |req| req.json(body))
            .await?
            .json()
    }

    /// `POST /v0/runners/{runner}/key`: a new key; the previous one stops working at once.
    pub async fn rotate_runner_key(
        &self,
        runner: &ResourceId,
    ) -> Result<JsonRunnerKey, ClientError> {
        let url = self.url(&["v0", "runners", &runner.to_string(), "key"])?;
        self.send(Method::POST, url, |req| req).await?.json()
    }

    /// `GET /v0/runners/{runner}/specs`
    pub async fn list_runner_specs(
        &self,
        runner: &ResourceId,
        pagination: &Pagination,
    ) -> Result<Page<JsonSpec>, ClientError> {
        let url = self.url(&["v0", "runners", &runner.to_string(), "specs"])?;
        self.list(url, &(), pagination).await
    }

    /// `POST /v0/runners/{runner}/specs`
    pub async fn add_runner_spec(
        &self,
        runner: &ResourceId,
        body: &JsonNewRunnerSpec,
    ) -> Result<JsonSpec, ClientError> {
        self.post(&["v0", "runners", &runner.to_string(), "specs"], body)
            .await
    }

    /// `DELETE /v0/runners/{runner}/specs/{spec}`
    pub async fn remove_runner_spec(
        &self,
        runner: &ResourceId,
        spec: &ResourceId,
    ) -> Result<(), ClientError> {
        self.delete(&[
            "v0",
            "runners",
            &runner.to_string(),
            "specs",
            &spec.to_string(),
        ])
        .await
    }

    // ---- specs ----

    /// `GET /v0/specs`
    pub async fn list_specs(
        &self,
        query: &SpecQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonSpec>, ClientError> {
        let url = self.url(&["v0", "specs"])?;
        self.list(url, query, pagination).await
    }

    /// `POST /v0/specs`
    pub async fn create_spec(&self, body: &JsonNewSpec) -> Result<JsonSpec, ClientError> {
        self.post(&["v0", "specs"], body).await
    }

    /// `GET /v0/specs/{spec}`
    pub async fn get_spec(&self, spec: &ResourceId) -> Result<JsonSpec, ClientError> {
        self.get(&["v0", "specs", &spec.to_string()]).await
    }

    /// `PATCH /v0/specs/{spec}`
    pub async fn update_spec(
        &self,
        spec: &ResourceId,
        body: &JsonUpdateSpec,
    ) -> Result<JsonSpec, ClientError> {
        let url = self.url(&["v0", "specs", &spec.to_string()])?;
        self.send(Method::PATCH, url, |req| req.json(body))
            .await?
            .json()
    }

    /// `DELETE /v0/specs/{spec}`: refused (409) while a runner or a job references it.
    pub async fn delete_spec(&self, spec: &ResourceId) -> Result<(), ClientError> {
        self.delete(&["v0", "specs", &spec.to_string()]).await
    }

    // ---- tokens ----

    /// `GET /v0/tokens`
    pub async fn list_tokens(
        &self,
        pagination: &Pagination,
    ) -> Result<Page<JsonToken>, ClientError> {
        let url = self.url(&["v0", "tokens"])?;
        self.list(url, &(), pagination).await
    }

    /// `POST /v0/tokens`: the returned secret is never shown again.
    pub async fn create_token(&self, body: &JsonNewToken) -> Result<JsonCreatedToken, ClientError> {
        self.post(&["v0", "tokens"], body).await
    }

    /// `DELETE /v0/tokens/{token}`
    pub async fn revoke_token(&self, token: TokenUuid) -> Result<(), ClientError> {
        self.delete(&["v0", "tokens", &token.to_string()]).await
    }

    // ---- projects ----

    /// `GET /v0/projects`
    pub async fn list_projects(
        &self,
        query: &ProjectQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonProject>, ClientError> {
        let url = self.url(&["v0", "projects"])?;
        self.list(url, query, pagination).await
    }

    /// `POST /v0/projects`
    pub async fn create_project(&self, body: &JsonNewProject) -> Result<JsonProject, ClientError> {
        self.post(&["v0", "projects"], body).await
    }

    /// `GET /v0/projects/{project}`
    pub async fn get_project(&self, project: &ResourceId) -> Result<JsonProject, ClientError> {
        self.get(&["v0", "projects", &project.to_string()]).await
    }

    // ---- jobs ----

    /// `POST /v0/run`: a report shell and its pending job, in one transaction. The image
    /// is resolved to a digest now, so moving its tag later does not change the job.
    pub async fn create_run(&self, body: &JsonNewRun) -> Result<JsonJob, ClientError> {
        self.post(&["v0", "run"], body).await
    }

    /// `POST /v0/projects/{project}/results`: a local run's output becomes a report.
    pub async fn report_results(
        &self,
        project: &ResourceId,
        body: &JsonNewResults,
    ) -> Result<JsonResultsReport, ClientError> {
        self.post(&["v0", "projects", &project.to_string(), "results"], body)
            .await
    }

    /// `GET /v0/projects/{project}/jobs`, oldest first unless the pagination says `desc`.
    pub async fn list_jobs(
        &self,
        project: &ResourceId,
        query: &JobQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonJob>, ClientError> {
        let url = self.url(&["v0", "projects", &project.to_string(), "jobs"])?;
        self.list(url, query, pagination).await
    }

    /// `GET /v0/projects/{project}/jobs/{job}`
    pub async fn get_job(
        &self,
        project: &ResourceId,
        job: JobUuid,
    ) -> Result<JsonJob, ClientError> {
        let (project, job) = (project.to_string(), job.to_string());
        self.get(&["v0", "projects", &project, "jobs", &job]).await
    }

    /// `GET /v0/projects/{project}/jobs/{job}` for a caller that polls: the answer (job
    /// or error) together with how long the server (or a proxy in front of it) asked
    /// clients to wait before asking again (`Retry-After`), whatever the status.
    pub async fn poll_job(
        &self,
        project: &ResourceId,
        job: JobUuid,
    ) -> (Result<JsonJob, ClientError>, Option<Duration>) {
        let (project, job) = (project.to_string(), job.to_string());
        let url = match self.url(&["v0", "projects", &project, "jobs", &job]) {
            Ok(url) => url,
            Err(error) => return (Err(error), None),
        };
        match self.exchange(Method::GET, url, |req| req).await {
            Ok(reply) => {
                let wait = retry_after(&reply.headers, SystemTime::now());
                (success(reply).and_then(|reply| reply.json()), wait)
            }
            Err(error) => (Err(error), None),
        }
    }

    /// `POST /v0/projects/{project}/jobs/{job}/cancel`: only a pending, claimed or running
    /// job can be canceled; any other status is a conflict (409).
    pub async fn cancel_job(
        &self,
        project: &ResourceId,
        job: JobUuid,
    ) -> Result<JsonJob, ClientError> {
        let (project, job) = (project.to_string(), job.to_string());
        let url = self.url(&["v0", "projects", &project, "jobs", &job, "cancel"])?;
        self.send(Method::POST, url, |req| req).await?.json()
    }

    /// `GET /v0/jobs`: the jobs of every project (server admins).
    pub async fn list_all_jobs(
        &self,
        query: &JobQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonJob>, ClientError> {
        let url = self.url(&["v0", "jobs"])?;
        self.list(url, query, pagination).await
    }

    // ---- reports, perf, thresholds, alerts ----

    /// `GET /v0/projects/{project}/reports`: newest first unless the pagination says
    /// otherwise; without results (see [`Client::get_report`]).
    pub async fn list_reports(
        &self,
        project: &ResourceId,
        query: &ReportQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonReport>, ClientError> {
        let url = self.url(&["v0", "projects", &project.to_string(), "reports"])?;
        self.list(url, query, pagination).await
    }

    /// `GET /v0/projects/{project}/reports/{report}`: with its results.
    pub async fn get_report(
        &self,
        project: &ResourceId,
        report: ReportUuid,
    ) -> Result<JsonReport, ClientError> {
        let (project, report) = (project.to_string(), report.to_string());
        self.get(&["v0", "projects", &project, "reports", &report])
            .await
    }

    /// `GET /v0/projects/{project}/perf`
    pub async fn get_perf(
        &self,
        project: &ResourceId,
        query: &PerfQuery,
    ) -> Result<JsonPerf, ClientError> {
        let url = self.url(&["v0", "projects", &project.to_string(), "perf"])?;
        self.send(Method::GET, url, |req| req.query(query))
            .await?
            .json()
    }

    /// `GET /v0/projects/{project}/measures`
    pub async fn list_measures(
        &self,
        project: &ResourceId,
        pagination: &Pagination,
    ) -> Result<Page<JsonMeasure>, ClientError> {
        let url = self.url(&["v0", "projects", &project.to_string(), "measures"])?;
        self.list(url, &(), pagination).await
    }

    /// `GET /v0/projects/{project}/benchmarks`
    pub async fn list_benchmarks(
        &self,
        project: &ResourceId,
        pagination: &Pagination,
    ) -> Result<Page<JsonBenchmark>, ClientError> {
        let url = self.url(&["v0", "projects", &project.to_string(), "benchmarks"])?;
        self.list(url, &(), pagination).await
    }

    /// `GET /v0/projects/{project}/thresholds`
    pub async fn list_thresholds(
        &self,
        project: &ResourceId,
        query: &ThresholdQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonThreshold>, ClientError> {
        let url = self.url(&["v0", "projects", &project.to_string(), "thresholds"])?;
        self.list(url, query, pagination).await
    }

    /// `POST /v0/projects/{project}/thresholds`
    pub async fn create_threshold(
        &self,
        project: &ResourceId,
        body: &JsonNewThreshold,
    ) -> Result<JsonThreshold, ClientError> {
        self.post(
            &["v0", "projects", &project.to_string(), "thresholds"],
            body,
        )
        .await
    }

    /// `GET /v0/projects/{project}/thresholds/{threshold}`
    pub async fn get_threshold(
        &self,
        project: &ResourceId,
        threshold: ThresholdUuid,
    ) -> Result<JsonThreshold, ClientError> {
        let (project, threshold) = (project.to_string(), threshold.to_string());
        self.get(&["v0", "projects", &project, "thresholds", &threshold])
            .await
    }

    /// `PUT /v0/projects/{project}/thresholds/{threshold}`: a new model version.
    pub async fn update_threshold(
        &self,
        project: &ResourceId,
        threshold: ThresholdUuid,
        body: &JsonUpdateThreshold,
    ) -> Result<JsonThreshold, ClientError> {
        let (project, threshold) = (project.to_string(), threshold.to_string());
        let url = self.url(&["v0", "projects", &project, "thresholds", &threshold])?;
        self.send(Method::PUT, url, |req| req.json(body))
            .await?
            .json()
    }

    /// `DELETE /v0/projects/{project}/thresholds/{threshold}`
    pub async fn delete_threshold(
        &self,
        project: &ResourceId,
        threshold: ThresholdUuid,
    ) -> Result<(), ClientError> {
        let (project, threshold) = (project.to_string(), threshold.to_string());
        self.delete(&["v0", "projects", &project, "thresholds", &threshold])
            .await
    }

    /// `GET /v0/projects/{project}/alerts`: newest first unless the pagination says
    /// otherwise.
    pub async fn list_alerts(
        &self,
        project: &ResourceId,
        query: &AlertQuery,
        pagination: &Pagination,
    ) -> Result<Page<JsonAlert>, ClientError> {
        let url = self.url(&["v0", "projects", &project.to_string(), "alerts"])?;
        self.list(url, query, pagination).await
    }

    /// `GET /v0/projects/{project}/alerts/{alert}`
    pub async fn get_alert(
        &self,
        project: &ResourceId,
        alert: AlertUuid,
    ) -> Result<JsonAlert, ClientError> {
        let (project, alert) = (project.to_string(), alert.to_string());
        self.get(&["v0", "projects", &project, "alerts", &alert])
            .await
    }

    /// `PATCH /v0/projects/{project}/alerts/{alert}`: dismiss or re-activate.
    pub async fn update_alert(
        &self,
        project: &ResourceId,
        alert: AlertUuid,
        body: &JsonUpdateAlert,
    ) -> Result<JsonAlert, ClientError> {
        let (project, alert) = (project.to_string(), alert.to_string());
        let url = self.url(&["v0", "projects", &project, "alerts", &alert])?;
        self.send(Method::PATCH, url, |req| req.json(body))
            .await?
            .json()
    }

    // ---- plumbing ----

    /// The host with `segments` appended, each percent-encoded as one path segment, so a
    /// resource id can never add a segment or a query of its own.
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.host.clone();
        url.path_segments_mut()
            .map_err(|()| host_error(&self.host, "it cannot have a path"))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        let url = self.url(segments)?;
        self.send(Method::GET, url, |req| req).await?.json()
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(segments)?;
        self.send(Method::POST, url, |req| req.json(body))
            .await?
            .json()
    }

    async fn delete(&self, segments: &[&str]) -> Result<(), ClientError> {
        let url = self.url(segments)?;
        self.send(Method::DELETE, url, |req| req).await?;
        Ok(())
    }

    async fn list<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: Url,
        query: &Q,
        pagination: &Pagination,
    ) -> Result<Page<T>, ClientError> {
        self.send(Method::GET, url, |req| req.query(query).query(pagination))
            .await?
            .page()
    }

    /// Sends a request and fails unless the server answered with success.
    async fn send(
        &self,
        method: Method,
        url: Url,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Reply, ClientError> {
        success(self.exchange(method, url, build).await?)
    }

    /// Sends a request and reads the whole response, whatever its status.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Reply, ClientError> {
        // Errors name the URL without the query: filters may hold what a user searched for.
        let shown = url.to_string();
        let transport = |source: reqwest::Error| ClientError::Transport {
            method: method.to_string(),
            url: shown.clone(),
            source: source.without_url(),
        };
        let mut request = self.http.request(method.clone(), url);
        if let Some(token) = &self.token {
            // `bearer_auth` marks the header sensitive, so reqwest never prints it either.
            request = request.bearer_auth(token.expose_secret());
        }
        let response = build(request).send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        Ok(Reply {
            method,
            url: shown,
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

/// `Retry-After` as a wait from `now`: delta-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past means "now"; an unreadable value is ignored rather than guessed.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) is an RFC 2822 date with `GMT`.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(at.with_timezone(&chrono::Utc));
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn success(reply: Reply) -> Result<Reply, ClientError> {
    if reply.status.is_success() {
        Ok(reply)
    } else {
        Err(ClientError::from_response(reply.status, &reply.body))
    }
}

fn host_error(host: &Url, reason: &'static str) -> ClientError {
    ClientError::Host {
        host: host.to_string(),
        reason,
    }
}

fn validate_host(host: &Url) -> Result<(), ClientError> {
    if !matches!(host.scheme(), "http" | "https") {
        return Err(host_error(host, "the scheme must be http or https"));
    }
    if host.cannot_be_a_base() || host.host().is_none() {
        return Err(host_error(host, "it has no host name"));
    }
    if !host.username().is_empty() || host.password().is_some() {
        // Shown in errors and sent as Basic auth beside the bearer token: refuse it.
        let redacted = {
            let mut url = host.clone();
            // Both setters only fail for URLs without a host, ruled out above.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url
        };
        return Err(host_error(
            &redacted,
            "credentials do not belong in the URL; pass an API token instead",
        ));
    }
    if host.query().is_some() || host.fragment().is_some() {
        return Err(host_error(host, "it must not have a query or a fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(host: &str) -> Client {
        let host = Url::parse(host).expect("test host parses");
        Client::new(host, None).expect("test host is valid")
    }

    #[test]
    fn builds_urls_from_encoded_segments() {
        let c = client("http://localhost:6610");
        let url = c
            .url(&["v0", "runners", "my-runner", "specs"])
            .expect("url");
        assert_eq!(
            url.as_str(),
            "http://localhost:6610/v0/runners/my-runner/specs"
        );
        let url = c.url(&["v0", "specs", "../a b?c#d/e"]).expect("url");
        assert_eq!(
            url.as_str(),
            "http://localhost:6610/v0/specs/..%2Fa%20b%3Fc%23d%2Fe"
        );
    }

    #[test]
    fn keeps_a_path_prefix() {
        for host in [
            "https://example.com/bencher",
            "https://example.com/bencher/",
        ] {
            let url = client(host).url(&["v0", "server", "version"]).expect("url");
            assert_eq!(
                url.as_str(),
                "https://example.com/bencher/v0/server/version"
            );
        }
    }

    #[test]
    fn rejects_unusable_hosts() {
        for (host, why) in [
            ("mailto:admin@example.com", "scheme"),
            ("ftp://example.com", "scheme"),
            ("localhost:6610", "scheme"),
            ("https://admin:hunter2@example.com", "credentials"),
            ("https://example.com/?x=1", "query"),
            ("https://example.com/#top", "fragment"),
        ] {
            let url = Url::parse(host).expect("test host parses");
            let err = Client::new(url, None).expect_err(host).to_string();
            assert!(err.contains(why), "{host}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().expect("header value"));
            headers
        };
        // 1994-11-06T08:49:37Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(
            retry_after(&headers(" 120 "), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:50:07 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after(&headers("-1"), now), None);
        assert_eq!(retry_after(&headers("soon"), now), None);
    }

    #[test]
    fn debug_never_shows_the_token() {
        let token: ApiToken = "bencher_user_0123456789abcdefghijABCDEFGHIJ"
            .parse()
            .expect("test token parses");
        let host = Url::parse("http://localhost:6610").expect("test host parses");
        let c = Client::new(host, Some(token)).expect("valid client");
        let debug = format!("{c:?}");
        assert!(!debug.contains("0123456789abcdefghij"), "{debug}");
    }
}
