//! Firecracker's HTTP API on its Unix socket: the requests that configure and start one
//! microVM (built purely, from a [`Machine`]), and a small client that sends them, one
//! HTTP/1.1 exchange per connection through hyper. IO: the API socket.
//!
//! Firecracker answers a good `PUT` with `204 No Content` and a bad one with `400` and
//! `{"fault_message": "…"}`; the message is what the operator needs, so it is kept.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::UnixStream;

/// Firecracker's answers are small; a larger one is not Firecracker.
const MAX_ANSWER: usize = 64 << 10;

/// What one request of the configuration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiRequest {
    pub path: String,
    pub body: serde_json::Value,
}

/// The microVM, as paths inside the VMM's root (its jail).
#[derive(Debug, Clone)]
pub(super) struct Machine<'a> {
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: &'a str,
    pub initramfs: &'a str,
    pub boot_args: &'a str,
    pub root_disk: &'a str,
    pub scratch_disk: &'a str,
    /// The vsock's Unix socket: the guest's connections to port P arrive at `<it>_P`.
    pub vsock: &'a str,
    pub guest_cid: u32,
    /// The host's tap device for the guest's `eth0`, when it has network.
    pub tap: Option<&'a str>,
}

#[derive(Serialize)]
struct MachineConfig {
    vcpu_count: u32,
    mem_size_mib: u64,
    /// One thread per vCPU, no sibling pairs: a benchmark's CPU count is its threads.
    smt: bool,
}

#[derive(Serialize)]
struct BootSource<'a> {
    kernel_image_path: &'a str,
    initrd_path: &'a str,
    boot_args: &'a str,
}

#[derive(Serialize)]
struct Drive<'a> {
    drive_id: &'a str,
    path_on_host: &'a str,
    /// Never: the guest boots from the initramfs and mounts both disks itself.
    is_root_device: bool,
    is_read_only: bool,
}

#[derive(Serialize)]
struct Vsock<'a> {
    guest_cid: u32,
    uds_path: &'a str,
}

#[derive(Serialize)]
struct NetworkInterface<'a> {
    iface_id: &'a str,
    host_dev_name: &'a str,
}

#[derive(Serialize)]
struct Action {
    action_type: &'static str,
}

/// The requests, in order, that configure `machine` and boot it; the last one,
/// `InstanceStart`, boots it. A network interface only with a tap.
pub(super) fn configuration(machine: &Machine<'_>) -> Vec<ApiRequest> {
    let drive = |id: &str, path: &str, read_only: bool| ApiRequest {
        path: format!("/drives/{id}"),
        body: json(&Drive {
            drive_id: id,
            path_on_host: path,
            is_root_device: false,
            is_read_only: read_only,
        }),
    };
    let mut requests = vec![
        ApiRequest {
            path: "/machine-config".to_owned(),
            body: json(&MachineConfig {
                vcpu_count: machine.cpus,
                mem_size_mib: machine.memory_mib,
                smt: false,
            }),
        },
        ApiRequest {
            path: "/boot-source".to_owned(),
            body: json(&BootSource {
                kernel_image_path: machine.kernel,
                initrd_path: machine.initramfs,
                boot_args: machine.boot_args,
            }),
        },
        drive("root", machine.root_disk, true),
        drive("scratch", machine.scratch_disk, false),
        ApiRequest {
            path: "/vsock".to_owned(),
            body: json(&Vsock {
                guest_cid: machine.guest_cid,
                uds_path: machine.vsock,
            }),
        },
    ];
    if let Some(tap) = machine.tap {
        requests.push(ApiRequest {
            path: "/network-interfaces/eth0".to_owned(),
            body: json(&NetworkInterface {
                iface_id: "eth0",
                host_dev_name: tap,
            }),
        });
    }
    requests.push(ApiRequest {
        path: "/actions".to_owned(),
        body: json(&Action {
            action_type: "InstanceStart",
        }),
    });
    requests
}

/// A body as JSON. `to_value` cannot fail for these plain structs of strings and
/// numbers.
fn json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// One call to the API failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    #[error("cannot connect to Firecracker's API socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP exchange with Firecracker's API failed on `{method} {path}`")]
    Http {
        method: Method,
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("Firecracker's answer to `{method} {path}` is larger than {MAX_ANSWER} bytes")]
    TooLarge { method: Method, path: String },
    #[error("Firecracker refused `{method} {path}` ({status}): {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
}

/// The client of one VMM's API socket.
pub(super) struct Api {
    socket: PathBuf,
}

impl Api {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
        }
    }

    /// `PUT path` with `body`; any 2xx is success.
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> Result<(), ApiError> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.call(Method::PUT, path, body).await.map(drop)
    }

    /// One exchange on a new connection: the answer's body for a 2xx.
    async fn call(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Bytes, ApiError> {
        let http = |source| ApiError::Http {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection is driven until the exchange ends; it ends with the stream.
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            // HTTP/1.1 needs a Host; Firecracker ignores it.
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ApiError::Refused {
                method: method.clone(),
                path: path.to_owned(),
                status: StatusCode::BAD_REQUEST,
                message: format!("the request cannot be built: {e}"),
            })?;
        let answer = sender.send_request(request).await.map_err(http);
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                driver.abort();
                return Err(error);
            }
        };
        let status = answer.status();
        let collected = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await;
        driver.abort();
        let bytes = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return Err(match error.downcast::<hyper::Error>() {
                    Ok(source) => http(*source),
                    Err(_) => ApiError::TooLarge {
                        method,
                        path: path.to_owned(),
                    },
                });
            }
        };
        if status.is_success() {
            return Ok(bytes);
        }
        Err(ApiError::Refused {
            method,
            path: path.to_owned(),
            status,
            message: fault_message(&bytes),
        })
    }
}

/// Firecracker's `{"fault_message": "…"}`, else the body as text.
fn fault_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    match serde_json::from_slice::<Fault>(body) {
        Ok(fault) => fault.fault_message,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "no message".to_owned()
            } else {
                text.chars().take(2000).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_configuration_boots_from_the_initramfs_with_two_disks_and_a_vsock() {
        let machine = Machine {
            cpus: 2,
            memory_mib: 512,
            kernel: "/vmlinux",
            initramfs: "/initramfs.cpio",
            boot_args: "console=ttyS0 reboot=k",
            root_disk: "/root.ext4",
            scratch_disk: "/scratch.ext4",
            vsock: "/vsock.sock",
            guest_cid: 3,
            tap: None,
        };
        let requests = configuration(&machine);
        let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/machine-config",
                "/boot-source",
                "/drives/root",
                "/drives/scratch",
                "/vsock",
                "/actions"
            ]
        );
        assert_eq!(
            requests[0].body,
            json!({"vcpu_count": 2, "mem_size_mib": 512, "smt": false})
        );
        assert_eq!(
            requests[1].body,
            json!({"kernel_image_path": "/vmlinux", "initrd_path": "/initramfs.cpio",
                   "boot_args": "console=ttyS0 reboot=k"})
        );
        assert_eq!(
            requests[2].body,
            json!({"drive_id": "root", "path_on_host": "/root.ext4",
                   "is_root_device": false, "is_read_only": true})
        );
        assert_eq!(requests[3].body["is_read_only"], false);
        assert_eq!(
            requests[4].body,
            json!({"guest_cid": 3, "uds_path": "/vsock.sock"})
        );
        assert_eq!(requests[5].body, json!({"action_type": "InstanceStart"}));

        // With network, the interface comes before the start.
        let requests = configuration(&Machine {
            tap: Some("vm0"),
            ..machine
        });
        assert_eq!(requests.len(), 7);
        assert_eq!(requests[5].path, "/network-interfaces/eth0");
        assert_eq!(
            requests[5].body,
            json!({"iface_id": "eth0", "host_dev_name": "vm0"})
        );
        assert_eq!(requests[6].path, "/actions");
    }

    #[test]
    fn fault_messages_are_kept() {
        assert_eq!(
            fault_message(br#"{"fault_message":"The kernel file cannot be opened"}"#),
            "The kernel file cannot be opened"
        );
        assert_eq!(fault_message(b"  plain text \n"), "plain text");
        assert_eq!(fault_message(b""), "no message");
    }

    /// The client speaks HTTP/1.1 over a Unix socket: checked against hyper's own
    /// server, which answers the way Firecracker documents (204 for a good PUT, 400
    /// with a fault message for a bad one).
    #[tokio::test]
    async fn the_client_puts_json_and_reports_faults() {
        use hyper::body::Incoming;
        use hyper::service::service_fn;

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let seen = seen.clone();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let method = request.method().clone();
                            let path = request.uri().path().to_owned();
                            let kind = request
                                .headers()
                                .get(hyper::header::CONTENT_TYPE)
                                .map(|v| v.to_str().unwrap().to_owned());
                            let body = request.into_body().collect().await?.to_bytes();
                            seen.lock().unwrap().push((
                                method.clone(),
                                path.clone(),
                                kind,
                                body.clone(),
                            ));
                            let answer = match (method, path.as_str()) {
                                (Method::PUT, "/boot-source") => hyper::Response::builder()
                                    .status(400)
                                    .body(Full::new(Bytes::from_static(
                                        br#"{"fault_message":"Invalid kernel path"}"#,
                                    ))),
                                _ => hyper::Response::builder()
                                    .status(204)
                                    .body(Full::new(Bytes::new())),
                            };
                            Ok::<_, hyper::Error>(answer.unwrap())
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service),
                    );
                }
            })
        };
        let api = Api::new(&socket);
        api.put("/machine-config", &json!({"vcpu_count": 1}))
            .await
            .unwrap();
        let error = api
            .put("/boot-source", &json!({"kernel_image_path": "/x"}))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Firecracker refused `PUT /boot-source` (400 Bad Request): Invalid kernel path"
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, Method::PUT);
        assert_eq!(seen[0].1, "/machine-config");
        assert_eq!(seen[0].2.as_deref(), Some("application/json"));
        assert_eq!(&seen[0].3[..], br#"{"vcpu_count":1}"#);
        assert_eq!(seen[1].1, "/boot-source");
        server.abort();

        let gone = Api::new(&dir.path().join("missing.sock"));
        let error = gone.put("/actions", &json!({})).await.unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot connect to Firecracker's API socket"),
            "{error}"
        );
    }
}
