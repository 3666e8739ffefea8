//! The runner's one WebSocket to the server: `GET {host}/v0/runners/{runner}/channel`
//! with `Authorization: Bearer <key>`, over rustls for `https` hosts. One task owns it:
//! it connects, reconnects with backoff, turns frames into events for the driver, and
//! writes what the driver sends. IO: the network, timers.
//!
//! Liveness of the link itself (not of jobs): the task pings the server every
//! `ping_interval` and drops a connection that sent nothing at all (pongs included) for
//! `silence_limit`, since a dead TCP connection can take many minutes to fail on its
//! own. The library answers the server's pings.
//!
//! Frames the driver queues carry the id of the connection they were meant for; a frame
//! for an older connection is dropped, so a `ready` decided before a reconnect can never
//! overtake the re-sent terminal messages on the new connection.
//!
//! Protocol extension `upload`: a `completed` or `failed` larger than
//! `UPLOAD_THRESHOLD` is not sent inline; its output document `{results, error?}` is
//! first uploaded to `PUT {host}/v0/runners/{runner}/jobs/{job}/output` (same key, same
//! TLS setup) and the message sent with `output` (the returned digest) and no results.
//! The spool keeps the full message, so every re-send uploads again (same content, same
//! digest).

use std::sync::Arc;
use std::time::Duration;

use bencher_types::protocol::{ParseError, RunnerMessage, ServerMessage};
use bencher_types::{JobUuid, JsonSpec, MAX_PER_PAGE, ResourceId, RunnerKey};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::backoff::Backoff;

/// The largest message accepted from the server. A `job` is a few kilobytes; this is
/// far above it and far below harm.
const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// A terminal message larger than this is sent by reference to an uploaded document.
pub const UPLOAD_THRESHOLD: usize = 1 << 20;

/// How long one output upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How the link connects and watches its connection.
#[derive(Clone)]
pub struct LinkConfig {
    /// `ws(s)://…/v0/runners/{runner}/channel`.
    pub url: Url,
    pub key: RunnerKey,
    pub tls: Arc<rustls::ClientConfig>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// A send that takes longer means the server stopped reading.
    pub send_timeout: Duration,
    pub ping_interval: Duration,
    pub silence_limit: Duration,
    /// How long to wait for the server's answer to our Close.
    pub close_timeout: Duration,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("url", &self.url.as_str())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    #[error("the host `{0}` is not an http or https URL")]
    Scheme(String),
    #[error("the host `{0}` cannot have paths appended")]
    NotABase(String),
    #[error("cannot set up TLS")]
    Tls(#[source] rustls::Error),
}

/// The channel URL for `runner` on `host` (which may carry a path prefix).
pub fn channel_url(host: &Url, runner: &ResourceId) -> Result<Url, LinkSetupError> {
    let scheme = match host.scheme() {
        "http" => "ws",
        "https" => "wss",
        _ => return Err(LinkSetupError::Scheme(host.to_string())),
    };
    let mut url = host.clone();
    url.set_scheme(scheme)
        .map_err(|()| LinkSetupError::Scheme(host.to_string()))?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| LinkSetupError::NotABase(host.to_string()))?
        .pop_if_empty()
        .extend(["v0", "runners", &runner.to_string(), "channel"]);
    Ok(url)
}

/// rustls with ring (the provider reqwest uses here, so one crypto stack) and the
/// webpki roots (the ones the registry client trusts, so the WebSocket and image pulls
/// agree on which servers are valid).
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, LinkSetupError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(LinkSetupError::Tls)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What the link tells the driver.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a server message lives only between the socket and one step; boxing buys nothing"
)]
pub enum LinkEvent {
    Connected {
        id: u64,
    },
    Message(Result<ServerMessage, ParseError>),
    Disconnected {
        id: u64,
        reason: String,
    },
    /// An attempt to connect failed; the link retries after a backoff. Only the status
    /// file cares (`crate::status::file`): the core sees nothing of it.
    ConnectFailed {
        error: String,
    },
    /// HTTP 401 on the upgrade: the key is wrong, rotated, or the runner archived. The
    /// link stops.
    Unauthorized,
}

/// What the driver gives the link to send.
#[derive(Debug)]
pub enum Outgoing {
    Text {
        conn: u64,
        text: String,
    },
    /// Close gracefully; frames still arriving are reported until the server answers.
    Close {
        conn: u64,
    },
}

enum ConnectError {
    Unauthorized,
    Other(String),
}

/// Runs the link until `stop` (then closes the connection gracefully) or a 401.
pub async fn run(
    config: LinkConfig,
    events: mpsc::UnboundedSender<LinkEvent>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut id = 0;
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = connect(&config) => attempt,
        };
        match attempt {
            Ok(socket) => {
                id += 1;
                tracing::debug!(url = %config.url, "WebSocket open");
                if events.send(LinkEvent::Connected { id }).is_err() {
                    return;
                }
                let reason = serve(
                    &config,
                    socket,
                    id,
                    &events,
                    &mut outgoing,
                    &stop,
                    &mut backoff,
                )
                .await;
                if stop.is_cancelled() {
                    return;
                }
                tracing::warn!(reason = %reason, "disconnected from the server");
                if events.send(LinkEvent::Disconnected { id, reason }).is_err() {
                    return;
                }
            }
            Err(ConnectError::Unauthorized) => {
                let _ = events.send(LinkEvent::Unauthorized);
                return;
            }
            Err(ConnectError::Other(error)) => {
                tracing::warn!(url = %config.url, error = %error, "cannot connect to the server");
                if events.send(LinkEvent::ConnectFailed { error }).is_err() {
                    return;
                }
            }
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        tracing::info!(in_ms = delay.as_millis(), "reconnecting");
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep(delay) => {}
        }
    }
}

async fn connect(config: &LinkConfig) -> Result<Socket, ConnectError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Other(e.to_string()))?;
    let mut bearer = HeaderValue::from_str(&format!("Bearer {}", config.key.expose_secret()))
        .map_err(|e| ConnectError::Other(format!("the key cannot be sent: {e}")))?;
    // Kept out of any debug output of the request.
    bearer.set_sensitive(true);
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    request.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("bencher-runner/", env!("CARGO_PKG_VERSION"))),
    );
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(ws_config),
        true,
        Some(Connector::Rustls(config.tls.clone())),
    );
    match timeout(config.connect_timeout, connecting).await {
        Err(_) => Err(ConnectError::Other(format!(
            "no answer within {} s",
            config.connect_timeout.as_secs()
        ))),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => match response.status() {
            StatusCode::UNAUTHORIZED => Err(ConnectError::Unauthorized),
            StatusCode::NOT_FOUND => Err(ConnectError::Other(
                "HTTP 404 instead of a WebSocket upgrade: is --host a Bencher API server?"
                    .to_owned(),
            )),
            status => Err(ConnectError::Other(format!(
                "HTTP {status} instead of a WebSocket upgrade"
            ))),
        },
        Ok(Err(error)) => Err(ConnectError::Other(error.to_string())),
    }
}

/// Serves one connection until it ends; returns why.
async fn serve(
    config: &LinkConfig,
    mut socket: Socket,
    id: u64,
    events: &mpsc::UnboundedSender<LinkEvent>,
    outgoing: &mut mpsc::UnboundedReceiver<Outgoing>,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> String {
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut last_frame = Instant::now();
    let mut close_deadline: Option<Instant> = None;
    let mut close_reason = None;
    loop {
        let deadline = close_deadline.unwrap_or_else(|| Instant::now() + config.close_timeout);
        tokio::select! {
            frame = socket.next() => match frame {
                None => {
                    return close_reason.unwrap_or_else(|| "the connection closed".to_owned());
                }
                Some(Err(error)) => return error.to_string(),
                Some(Ok(message)) => {
                    last_frame = Instant::now();
                    match message {
                        Message::Text(text) => {
                            // The server speaks the protocol: this connection worked.
                            backoff.reset();
                            let parsed = ServerMessage::parse(text.as_str());
                            if events.send(LinkEvent::Message(parsed)).is_err() {
                                return "the agent stopped".to_owned();
                            }
                        }
                        Message::Close(frame) => {
                            // The library answers it; the stream ends next.
                            close_reason = Some(match frame {
                                Some(frame) => format!(
                                    "the server closed the connection ({}: {})",
                                    u16::from(frame.code),
                                    frame.reason
                                ),
                                None => "the server closed the connection".to_owned(),
                            });
                        }
                        Message::Binary(_) => {
                            tracing::debug!("ignored a binary frame from the server");
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
            },
            queued = outgoing.recv(), if close_deadline.is_none() => match queued {
                None => return "the agent stopped".to_owned(),
                Some(Outgoing::Text { conn, text }) if conn == id => {
                    let text = match by_reference(config, text).await {
                        Ok(text) => text,
                        Err(error) => return error,
                    };
                    if let Err(error) = send(config, &mut socket, Message::text(text)).await {
                        return error;
                    }
                }
                Some(Outgoing::Close { conn }) if conn == id => {
                    if let Err(error) = send(config, &mut socket, Message::Close(None)).await {
                        return error;
                    }
                    close_deadline = Some(Instant::now() + config.close_timeout);
                }
                // For an earlier connection: see the module docs.
                Some(_) => {}
            },
            () = sleep_until(deadline), if close_deadline.is_some() => {
                return "the server did not answer our close".to_owned();
            }
            _ = ping.tick() => {
                if last_frame.elapsed() >= config.silence_limit {
                    return format!(
                        "nothing from the server for {} s",
                        config.silence_limit.as_secs()
                    );
                }
                if close_deadline.is_none()
                    && let Err(error) = send(config, &mut socket, Message::Ping(Default::default())).await
                {
                    return error;
                }
            }
            () = stop.cancelled() => {
                let _ = timeout(config.close_timeout, socket.close(None)).await;
                return "the agent stopped".to_owned();
            }
        }
    }
}

/// `text` itself, or, for a terminal message over `UPLOAD_THRESHOLD`, the message
/// referencing its output uploaded first.
async fn by_reference(config: &LinkConfig, text: String) -> Result<String, String> {
    if text.len() <= UPLOAD_THRESHOLD {
        return Ok(text);
    }
    let Ok(message) = serde_json::from_str::<RunnerMessage>(&text) else {
        return Ok(text);
    };
    let (job, results, error) = match &message {
        RunnerMessage::Completed {
            job,
            results,
            output: None,
            ..
        } => (*job, results, None),
        RunnerMessage::Failed {
            job,
            results,
            error,
            output: None,
        } => (*job, results, Some(error)),
        _ => return Ok(text),
    };
    let mut document = serde_json::json!({ "results": results });
    if let Some(error) = error {
        document["error"] = serde_json::Value::String(error.clone());
    }
    let body =
        serde_json::to_vec(&document).map_err(|e| format!("cannot encode the output: {e}"))?;
    let size = body.len();
    let Some(digest) = upload(config, job, body).await? else {
        // The job ended and its output is recorded (a re-send whose `ack` was lost):
        // the message only needs its acknowledgement.
        tracing::info!(%job, "output already recorded; re-sending the message without it");
        let bare = match message {
            RunnerMessage::Completed {
                job, environment, ..
            } => RunnerMessage::Completed {
                job,
                results: Vec::new(),
                output: None,
                environment,
            },
            RunnerMessage::Failed { job, error, .. } => RunnerMessage::Failed {
                job,
                results: Vec::new(),
                error,
                output: None,
            },
            other => other,
        };
        return serde_json::to_string(&bare).map_err(|e| format!("cannot encode a message: {e}"));
    };
    tracing::info!(%job, size, %digest, "output uploaded");
    let reference = match message {
        RunnerMessage::Completed {
            job, environment, ..
        } => RunnerMessage::Completed {
            job,
            results: Vec::new(),
            output: Some(digest),
            environment,
        },
        RunnerMessage::Failed { job, error, .. } => RunnerMessage::Failed {
            job,
            results: Vec::new(),
            error,
            output: Some(digest),
        },
        other => other,
    };
    serde_json::to_string(&reference).map_err(|e| format!("cannot encode a message: {e}"))
}

/// The output endpoint next to the channel URL `ws(s)://…/v0/runners/{runner}/channel`.
fn output_url(channel: &Url, job: JobUuid) -> Result<Url, String> {
    runner_url(channel, &["jobs", &job.to_string(), "output"])
}

/// `…/v0/runners/{runner}/` + `segments`, over HTTP(S), from the channel URL.
fn runner_url(channel: &Url, segments: &[&str]) -> Result<Url, String> {
    let mut url = channel.clone();
    let scheme = if url.scheme() == "wss" {
        "https"
    } else {
        "http"
    };
    url.set_scheme(scheme)
        .map_err(|()| format!("cannot make an HTTP URL of {channel}"))?;
    url.path_segments_mut()
        .map_err(|()| format!("cannot make an HTTP URL of {channel}"))?
        .pop()
        .extend(segments);
    Ok(url)
}

/// The Specs linked to this runner (`GET /v0/runners/{runner}/specs` with the runner's
/// key), so the runner can say at start which of them it cannot serve.
pub async fn fetch_specs(config: &LinkConfig) -> Result<Vec<JsonSpec>, String> {
    let mut url = runner_url(&config.url, &["specs"])?;
    url.query_pairs_mut()
        .append_pair("per_page", &MAX_PER_PAGE.to_string());
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*config.tls).clone())
        .connect_timeout(config.connect_timeout)
        .timeout(config.connect_timeout)
        .build()
        .map_err(|e| format!("cannot set up the request: {e}"))?;
    let response = client
        .get(url.clone())
        .bearer_auth(config.key.expose_secret())
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{url} answered {status}: {text}"));
    }
    response
        .json()
        .await
        .map_err(|e| format!("unexpected answer from {url}: {e}"))
}

/// `PUT`s the output document; the digest the server stored it under, or `None` when
/// the server has the job's output already (409).
async fn upload(
    config: &LinkConfig,
    job: JobUuid,
    body: Vec<u8>,
) -> Result<Option<String>, String> {
    let url = output_url(&config.url, job)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*config.tls).clone())
        .connect_timeout(config.connect_timeout)
        .timeout(UPLOAD_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot set up the upload: {e}"))?;
    let response = client
        .put(url.clone())
        .bearer_auth(config.key.expose_secret())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot upload the output to {url}: {e}"))?;
    let status = response.status();
    if status == reqwest::StatusCode::CONFLICT {
        return Ok(None);
    }
    if status != reqwest::StatusCode::CREATED {
        let text = response.text().await.unwrap_or_default();
        return Err(format!(
            "the output upload to {url} answered {status}: {text}"
        ));
    }
    let stored: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("unexpected answer to the output upload: {e}"))?;
    stored["digest"]
        .as_str()
        .map(|digest| Some(digest.to_owned()))
        .ok_or_else(|| format!("no digest in the answer to the output upload: {stored}"))
}

async fn send(config: &LinkConfig, socket: &mut Socket, message: Message) -> Result<(), String> {
    match timeout(config.send_timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("cannot send: {error}")),
        Err(_) => Err(format!(
            "a send took longer than {} s",
            config.send_timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_urls() {
        let runner: ResourceId = "my-runner".parse().unwrap();
        let url = |host: &str| channel_url(&host.parse().unwrap(), &runner).map(|u| u.to_string());
        assert_eq!(
            url("https://api.bencher.dev").unwrap(),
            "wss://api.bencher.dev/v0/runners/my-runner/channel"
        );
        assert_eq!(
            url("http://localhost:6610/").unwrap(),
            "ws://localhost:6610/v0/runners/my-runner/channel"
        );
        assert_eq!(
            url("https://example.com/bencher/?x=1#y").unwrap(),
            "wss://example.com/bencher/v0/runners/my-runner/channel"
        );
        assert!(matches!(
            url("ftp://example.com"),
            Err(LinkSetupError::Scheme(_))
        ));
    }

    #[test]
    fn output_urls() {
        let job: JobUuid = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        let url = |channel: &str| {
            output_url(&channel.parse().unwrap(), job)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            url("wss://api.bencher.dev/v0/runners/r/channel"),
            format!("https://api.bencher.dev/v0/runners/r/jobs/{job}/output")
        );
        assert_eq!(
            url("ws://localhost:6610/prefix/v0/runners/r/channel"),
            format!("http://localhost:6610/prefix/v0/runners/r/jobs/{job}/output")
        );
    }

    #[test]
    fn tls_config_builds() {
        assert!(tls_config().is_ok());
    }
}
