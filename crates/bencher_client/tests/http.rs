//! The client against a canned one-shot HTTP server on loopback: what goes on the wire
//! (path, query, headers, body) and how each kind of answer is decoded.

use bencher_client::{Client, ClientError, USER_AGENT};
use bencher_types::{
    ApiToken, Direction, JsonNewRunner, JsonUpdateSpec, Pagination, ResourceId, RunnerQuery, SortBy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use url::Url;

const TOKEN: &str = "bencher_user_0123456789abcdefghijABCDEFGHIJ";

const SPEC: &str = r#"{"uuid":"67e55044-10b1-426f-9247-bb680e5fe0c8","name":"Intel v1","slug":"intel-v1","os":"linux","architecture":"x86_64","sandbox":"firecracker","cpu":4,"memory":51539607552,"disk":137438953472,"network":false,"fallback":false,"created":"2025-01-01T00:00:00Z","modified":"2025-01-01T00:00:00Z"}"#;

/// Answers one request with `response` and hands back the raw request it received.
async fn serve_once(
    status: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Url, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let mut response = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(body);
    let handle = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.expect("read request");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        stream
            .write_all(response.as_bytes())
            .await
            .expect("write response");
        stream.shutdown().await.expect("shutdown");
        String::from_utf8_lossy(&request).into_owned()
    });
    let url = Url::parse(&format!("http://{addr}")).expect("loopback url");
    (url, handle)
}

fn token() -> ApiToken {
    TOKEN.parse().expect("test token parses")
}

fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
    request.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn list_sends_filters_pagination_and_auth_and_reads_the_total() {
    let body = format!("[{SPEC}]");
    let (host, server) = serve_once("200 OK", &[("X-Total-Count", "7")], &body).await;
    let client = Client::new(host, Some(token())).expect("client");
    let page = client
        .list_specs(
            &bencher_types::SpecQuery {
                search: Some("intel & amd".to_owned()),
                archived: Some(true),
                ..Default::default()
            },
            &Pagination {
                per_page: Some(2),
                page: Some(3),
                sort: Some(SortBy::Created),
                direction: Some(Direction::Desc),
            },
        )
        .await
        .expect("list");
    assert_eq!(page.total, 7);
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].slug.as_str(), "intel-v1");

    let request = server.await.expect("server");
    let first = request.lines().next().expect("request line");
    assert_eq!(
        first,
        "GET /v0/specs?search=intel+%26+amd&archived=true&per_page=2&page=3&sort=created&direction=desc HTTP/1.1"
    );
    assert_eq!(
        header(&request, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(header(&request, "user-agent"), Some(USER_AGENT));
    assert!(USER_AGENT.starts_with("bencher/"));
}

#[tokio::test]
async fn create_posts_json_and_decodes_201() {
    let body = r#"{"uuid":"67e55044-10b1-426f-9247-bb680e5fe0c8","slug":"my-runner","key":"bencher_runner_0123456789abcdefghijABCDEFGHIJ"}"#;
    let (host, server) = serve_once("201 Created", &[], body).await;
    let client = Client::new(host, None).expect("client");
    let created = client
        .create_runner(&JsonNewRunner {
            name: "My Runner".parse().expect("name"),
            slug: None,
        })
        .await
        .expect("create");
    assert_eq!(created.slug.as_str(), "my-runner");
    assert!(created.key.expose_secret().starts_with("bencher_runner_"));

    let request = server.await.expect("server");
    assert!(
        request.starts_with("POST /v0/runners HTTP/1.1\r\n"),
        "{request}"
    );
    assert_eq!(header(&request, "content-type"), Some("application/json"));
    assert_eq!(header(&request, "authorization"), None);
    assert!(request.ends_with(r#"{"name":"My Runner"}"#), "{request}");
}

#[tokio::test]
async fn patch_and_delete_use_the_resource_path() {
    let (host, server) = serve_once("200 OK", &[], SPEC).await;
    let client = Client::new(host.clone(), Some(token())).expect("client");
    let spec: ResourceId = "intel-v1".parse().expect("id");
    let update = JsonUpdateSpec {
        fallback: Some(true),
        ..Default::default()
    };
    client.update_spec(&spec, &update).await.expect("update");
    let request = server.await.expect("server");
    assert!(
        request.starts_with("PATCH /v0/specs/intel-v1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.ends_with(r#"{"fallback":true}"#), "{request}");

    let (host, server) = serve_once("204 No Content", &[], "").await;
    let client = Client::new(host, Some(token())).expect("client");
    let runner: ResourceId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().expect("id");
    client
        .remove_runner_spec(&runner, &spec)
        .await
        .expect("remove");
    let request = server.await.expect("server");
    assert!(
        request.starts_with(
            "DELETE /v0/runners/67e55044-10b1-426f-9247-bb680e5fe0c8/specs/intel-v1 HTTP/1.1\r\n"
        ),
        "{request}"
    );
}

#[tokio::test]
async fn api_errors_carry_the_server_message() {
    let body = r#"{"status":409,"code":"conflict","message":"slug `my-runner` is taken"}"#;
    let (host, _server) = serve_once("409 Conflict", &[], body).await;
    let client = Client::new(host, Some(token())).expect("client");
    let err = client
        .create_runner(&JsonNewRunner {
            name: "My Runner".parse().expect("name"),
            slug: None,
        })
        .await
        .expect_err("conflict");
    assert_eq!(err.status(), Some(409));
    assert_eq!(
        err.to_string(),
        "slug `my-runner` is taken (HTTP 409 conflict)"
    );
    assert!(!format!("{err:?}").contains("0123456789abcdefghij"));
}

#[tokio::test]
async fn a_list_without_total_is_an_error() {
    let (host, _server) = serve_once("200 OK", &[], "[]").await;
    let client = Client::new(host, None).expect("client");
    let err = client
        .list_runners(&RunnerQuery::default(), &Pagination::default())
        .await
        .expect_err("no total");
    assert!(matches!(err, ClientError::MissingTotal { .. }), "{err:?}");
    assert!(err.to_string().contains("X-Total-Count"), "{err}");
}

#[tokio::test]
async fn a_bad_success_body_is_a_decode_error() {
    let (host, _server) = serve_once("200 OK", &[], r#"{"version":1}"#).await;
    let client = Client::new(host, None).expect("client");
    let err = client.server_version().await.expect_err("bad body");
    assert!(
        matches!(err, ClientError::Decode { status: 200, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_degraded_server_still_reports_its_health() {
    let body = r#"{"status":"degraded","database":"connection refused"}"#;
    let (host, _server) = serve_once("503 Service Unavailable", &[], body).await;
    let client = Client::new(host, None).expect("client");
    let health = client.server_health().await.expect("health");
    assert_eq!(health.status, "degraded");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    // Bind then drop, so the port is (almost certainly) closed.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let host = Url::parse(&format!("http://{addr}")).expect("url");
    let client = Client::new(host, Some(token())).expect("client");
    let err = client.server_version().await.expect_err("refused");
    match &err {
        ClientError::Transport { source, .. } => assert!(source.is_connect(), "{source:?}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("GET http://127.0.0.1:"),
        "{err}"
    );
}
