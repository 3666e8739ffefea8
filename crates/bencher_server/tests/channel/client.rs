//! A test runner: speaks the runner protocol to a test server over a real WebSocket
//! (tokio-tungstenite), written from `protocol.md` without the runner crate. Shared by
//! `tests/channel.rs` and `benches/dispatch.rs`; socket IO only.

#![allow(dead_code, reason = "each user takes what it needs")]

use std::time::Duration;

use bencher_test_support::TestServer;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message it expects before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// What the server sent next.
#[derive(Debug)]
pub enum Incoming {
    Message(Value),
    Pong,
    Closed(Option<CloseFrame>),
}

pub struct TestRunner {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Opens `runner`'s channel with `key`; an HTTP refusal comes back as its status and
/// body.
pub async fn connect(
    server: &TestServer,
    runner: &str,
    key: Option<&str>,
) -> Result<TestRunner, (StatusCode, Value)> {
    let mut request = server
        .ws_url(&format!("/v0/runners/{runner}/channel"))
        .into_client_request()
        .expect("valid WebSocket request");
    if let Some(key) = key {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {key}")).expect("valid header"),
        );
    }
    // Frames as large as the server may send (its request limit in the tests).
    let config = WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    match tokio_tungstenite::connect_async_with_config(request, Some(config), false).await {
        Ok((ws, _)) => Ok(TestRunner { ws }),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| serde_json::from_slice(b).expect("JSON error body"))
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(error) => panic!("cannot connect the test runner: {error}"),
    }
}

/// Opens `runner`'s channel over a TCP connection with a small, fixed receive buffer
/// (which turns off the kernel's autotuning): a runner that stops reading holds little,
/// so a large message from the server cannot be delivered.
pub async fn connect_small_buffer(server: &TestServer, runner: &str, key: &str) -> TestRunner {
    let mut request = server
        .ws_url(&format!("/v0/runners/{runner}/channel"))
        .into_client_request()
        .expect("valid WebSocket request");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).expect("valid header"),
    );
    let address = format!(
        "{}:{}",
        server.url.host_str().expect("a host"),
        server.url.port().expect("a port")
    )
    .parse()
    .expect("a socket address");
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .set_recv_buffer_size(16 * 1024)
        .expect("set the receive buffer");
    let stream = socket
        .connect(address)
        .await
        .expect("connect to the server");
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .expect("open the channel");
    TestRunner { ws }
}

impl TestRunner {
    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send to the server");
    }

    pub async fn send_raw(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(message).await
    }

    /// The next message, pong or close, within `PATIENCE`.
    pub async fn recv(&mut self) -> Incoming {
        self.recv_within(PATIENCE)
            .await
            .expect("the server sent nothing in time")
    }

    /// The next message, pong or close, or `None` if nothing came within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Incoming> {
        loop {
            let frame = tokio::time::timeout(limit, self.ws.next()).await.ok()?;
            return Some(match frame {
                None => Incoming::Closed(None),
                Some(Err(_)) => Incoming::Closed(None),
                Some(Ok(Message::Text(text))) => Incoming::Message(
                    serde_json::from_str(text.as_str()).expect("the server sends JSON"),
                ),
                Some(Ok(Message::Close(frame))) => Incoming::Closed(frame),
                Some(Ok(Message::Pong(_))) => Incoming::Pong,
                Some(Ok(Message::Ping(_) | Message::Binary(_) | Message::Frame(_))) => continue,
            });
        }
    }

    /// The next message, which must be `event`.
    pub async fn expect(&mut self, event: &str) -> Value {
        match self.recv().await {
            Incoming::Message(message) if message["event"] == event => message,
            other => panic!("expected `{event}`, got {other:?}"),
        }
    }

    /// Waits for the server to close the channel; returns its close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.recv().await {
                Incoming::Closed(frame) => return frame,
                Incoming::Pong => {}
                Incoming::Message(message) => panic!("expected a close, got {message}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
