//! The contract between the runner and `bencher-init`, PID 1 of a VM sandbox's guest:
//! the job's [`GuestConfig`] (JSON, in the per-job initramfs) and the one framed stream
//! of [`Record`]s the guest sends back. Pure; no IO beyond the `Write` it is handed.
//!
//! # Framing
//!
//! Each record is a frame: one tag byte, the payload length as a little-endian `u32`,
//! the payload. Binary and serde-free so output chunks and files travel as they are;
//! [`FrameDecoder`] is incremental (feed it whatever the transport delivered) and
//! bounded (a frame longer than its limit is an error before anything is buffered).
//!
//! Order of one job: `Ready` once the guest is up; per iteration any number of
//! `Stdout`/`Stderr` chunks, then `File`s (or, for a job measuring file sizes,
//! `FileSize`s), then `IterationEnd` with the command's wall time; finally `Done`, or
//! an `Error` (after which the guest powers off).

use std::io::{self, Write};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Bumped when records or the config change incompatibly; the guest reports it in
/// `Ready` and the host refuses another. 2: `IterationEnd` carries the command's wall
/// time, `FileSize` records, `GuestConfig::file_size`. 3: `GuestConfig::disks` and
/// `GuestConfig::network`.
pub const GUEST_PROTOCOL_VERSION: u32 = 3;

/// Where the guest finds its config in the initramfs.
pub const GUEST_CONFIG_PATH: &str = "/bencher/job.json";
/// The kernel modules to load, one initramfs path a line, in load order.
pub const GUEST_MODULES_PATH: &str = "/bencher/modules";
/// The virtio-blk serial QEMU gives the image's root filesystem disk (read-only ext4).
pub const ROOT_DISK_SERIAL: &str = "bencher-root";
/// The virtio-blk serial QEMU gives the writable scratch disk (ext4).
pub const SCRATCH_DISK_SERIAL: &str = "bencher-scratch";
/// On the guest kernel's command line: end the guest by rebooting instead of powering
/// off. Firecracker has no power-off device; it exits when the guest reboots
/// (`reboot=k`), and QEMU with `-no-reboot` would too.
pub const REBOOT_TO_EXIT: &str = "bencher.exit=reboot";
/// The size of stdout/stderr chunks the guest sends.
pub const OUTPUT_CHUNK: usize = 64 * 1024;

/// How the guest reaches the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestChannel {
    /// A virtio-serial port with this name (`/sys/class/virtio-ports/*/name`).
    VirtioSerial { name: String },
    /// `AF_VSOCK` to the host (CID 2) on this port; Firecracker's and
    /// `vhost-device-vsock`'s hybrid vsock deliver it to `<uds>_<port>` on the host.
    Vsock { port: u32 },
}

/// Everything the guest needs to run the job; decided on the host (argv, env, user
/// from the image's passwd/group), so the guest interprets nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub channel: GuestChannel,
    /// How the guest tells its two disks apart.
    pub disks: GuestDisks,
    /// The network interface's configuration, when the Spec allows network (the guest
    /// then has one network device besides the loopback).
    pub network: Option<GuestNetwork>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Absolute, inside the image.
    pub working_dir: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// All iterations run in this one boot, each on a fresh writable layer.
    pub iterations: u32,
    pub allow_failure: bool,
    /// As the job gave them; relative ones are taken from `working_dir`.
    pub file_paths: Vec<String>,
    /// Whether `file_paths` are measured (`FileSize` records) instead of read (`File`
    /// records).
    pub file_size: bool,
    /// stdout+stderr bytes per iteration, and the largest output file.
    pub max_output_size: u64,
    pub max_symlinks: u32,
    /// After the command exits, how long what it left behind may keep running.
    pub grace_period_ms: u64,
}

/// The virtio-blk serials (`/sys/block/vd*/serial`) of the guest's disks: names, never
/// probe order. QEMU takes them from the command line ([`ROOT_DISK_SERIAL`],
/// [`SCRATCH_DISK_SERIAL`]); Firecracker derives each from its backing file (device
/// and inode numbers, see `vm::firecracker`), which the host computes beforehand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestDisks {
    pub root: String,
    pub scratch: String,
}

impl GuestDisks {
    /// QEMU's: the serials its command line sets.
    pub fn named() -> Self {
        Self {
            root: ROOT_DISK_SERIAL.to_owned(),
            scratch: SCRATCH_DISK_SERIAL.to_owned(),
        }
    }
}

/// A guest's static IPv4 configuration: its one network device gets `address`, a
/// default route through `gateway`, and jobs get `nameserver` in `/etc/resolv.conf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNetwork {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub nameserver: Ipv4Addr,
}

impl GuestNetwork {
    /// The user-mode network's (slirp's, as QEMU and slirp4netns set it up): the
    /// guest at 10.0.2.15/24, the virtual router 10.0.2.2, its DNS forwarder 10.0.2.3.
    pub const SLIRP: GuestNetwork = GuestNetwork {
        address: Ipv4Addr::new(10, 0, 2, 15),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 0, 2, 2),
        nameserver: Ipv4Addr::new(10, 0, 2, 3),
    };

    /// The netmask of `prefix_len` (at most 32).
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::from(self.prefix_len.min(32));
        Ipv4Addr::from(u32::MAX.checked_shl(32 - bits).unwrap_or(0))
    }
}

/// One message from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The guest is up and has its channel; the protocol version it speaks.
    Ready {
        version: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// An output file of the current iteration, whole (at most `max_output_size`).
    File {
        path: String,
        contents: Vec<u8>,
    },
    /// The size in bytes of an output file of the current iteration (a job measuring
    /// file sizes); a file that does not exist gets no record.
    FileSize {
        path: String,
        size: u64,
    },
    /// The current iteration ended.
    IterationEnd(IterationEnd),
    /// The guest failed; it powers off next.
    Error(String),
    /// Every iteration that was to run has run; the guest powers off next.
    Done,
}

/// How an iteration ended in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IterationEnd {
    /// The exit code, or 128 + N for a death by signal N.
    pub exit_code: i32,
    /// Output bytes dropped past the budget, per stream.
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
    /// The command's wall time in nanoseconds, from just before its spawn to its exit,
    /// on the guest's monotonic clock: the boot is not in it.
    pub elapsed_ns: u64,
    /// Why the output files could not be collected (the job fails).
    pub files_error: Option<String>,
}

/// The bytes of a frame header: tag and length.
pub const FRAME_HEADER_LEN: usize = 5;

mod tag {
    pub const READY: u8 = 1;
    pub const STDOUT: u8 = 2;
    pub const STDERR: u8 = 3;
    pub const FILE: u8 = 4;
    pub const ITERATION_END: u8 = 5;
    pub const ERROR: u8 = 6;
    pub const DONE: u8 = 7;
    pub const FILE_SIZE: u8 = 8;
}

impl Record {
    /// Appends the record's frame to `out`. Panics never; a payload over 4 GiB cannot
    /// be produced by the guest (chunks and files are bounded far below).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
        let tag = match self {
            Record::Ready { version } => {
                out.extend_from_slice(&version.to_le_bytes());
                tag::READY
            }
            Record::Stdout(bytes) => {
                out.extend_from_slice(bytes);
                tag::STDOUT
            }
            Record::Stderr(bytes) => {
                out.extend_from_slice(bytes);
                tag::STDERR
            }
            Record::File { path, contents } => {
                out.extend_from_slice(&(path.len() as u32).to_le_bytes());
                out.extend_from_slice(path.as_bytes());
                out.extend_from_slice(contents);
                tag::FILE
            }
            Record::FileSize { path, size } => {
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(path.as_bytes());
                tag::FILE_SIZE
            }
            Record::IterationEnd(end) => {
                out.extend_from_slice(&end.exit_code.to_le_bytes());
                out.extend_from_slice(&end.stdout_dropped.to_le_bytes());
                out.extend_from_slice(&end.stderr_dropped.to_le_bytes());
                out.extend_from_slice(&end.elapsed_ns.to_le_bytes());
                if let Some(error) = &end.files_error {
                    out.extend_from_slice(error.as_bytes());
                }
                tag::ITERATION_END
            }
            Record::Error(message) => {
                out.extend_from_slice(message.as_bytes());
                tag::ERROR
            }
            Record::Done => tag::DONE,
        };
        let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
        out[start] = tag;
        out[start + 1..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    }

    /// Writes the record as one `write_all`, so records from several threads sharing a
    /// locked writer never interleave.
    pub fn write_to(&self, writer: &mut impl Write) -> io::Result<()> {
        let mut frame = Vec::new();
        self.encode(&mut frame);
        writer.write_all(&frame)
    }

    fn decode(tag: u8, payload: &[u8]) -> Result<Record, FrameError> {
        let malformed = || FrameError::Malformed { tag };
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Ok(match tag {
            tag::READY => Record::Ready {
                version: u32::from_le_bytes(payload.try_into().map_err(|_| malformed())?),
            },
            tag::STDOUT => Record::Stdout(payload.to_vec()),
            tag::STDERR => Record::Stderr(payload.to_vec()),
            tag::FILE => {
                let (len, rest) = payload.split_first_chunk::<4>().ok_or_else(malformed)?;
                let len = u32::from_le_bytes(*len) as usize;
                if rest.len() < len {
                    return Err(malformed());
                }
                let (path, contents) = rest.split_at(len);
                Record::File {
                    path: String::from_utf8(path.to_vec()).map_err(|_| malformed())?,
                    contents: contents.to_vec(),
                }
            }
            tag::FILE_SIZE => {
                let (size, path) = payload.split_first_chunk::<8>().ok_or_else(malformed)?;
                Record::FileSize {
                    path: String::from_utf8(path.to_vec()).map_err(|_| malformed())?,
                    size: u64::from_le_bytes(*size),
                }
            }
            tag::ITERATION_END => {
                let (code, rest) = payload.split_first_chunk::<4>().ok_or_else(malformed)?;
                let (stdout, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
                let (stderr, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
                let (elapsed, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
                Record::IterationEnd(IterationEnd {
                    exit_code: i32::from_le_bytes(*code),
                    stdout_dropped: u64::from_le_bytes(*stdout),
                    stderr_dropped: u64::from_le_bytes(*stderr),
                    elapsed_ns: u64::from_le_bytes(*elapsed),
                    files_error: (!rest.is_empty()).then(|| text(rest)),
                })
            }
            tag::ERROR => Record::Error(text(payload)),
            tag::DONE if payload.is_empty() => Record::Done,
            _ => return Err(malformed()),
        })
    }
}

/// Why the stream from a guest cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the guest sent a frame of {len} bytes; at most {max} are accepted")]
    TooLong { len: u64, max: u64 },
    #[error("the guest sent a malformed frame (tag {tag})")]
    Malformed { tag: u8 },
}

/// Splits a byte stream into records, holding at most one frame's bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    max_payload: u64,
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max_payload` bytes.
    pub fn new(max_payload: u64) -> Self {
        Self {
            buffer: Vec::new(),
            max_payload,
        }
    }

    /// Adds bytes read from the transport.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete record, `None` until one is complete. After an error the
    /// stream is unusable.
    pub fn next_record(&mut self) -> Result<Option<Record>, FrameError> {
        let Some((header, rest)) = self.buffer.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let tag = header[0];
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as u64;
        if len > self.max_payload {
            return Err(FrameError::TooLong {
                len,
                max: self.max_payload,
            });
        }
        if (rest.len() as u64) < len {
            return Ok(None);
        }
        let record = Record::decode(tag, &rest[..len as usize])?;
        self.buffer.drain(..FRAME_HEADER_LEN + len as usize);
        Ok(Some(record))
    }

    /// Bytes received that do not yet form a record (a stream ending with some was cut).
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_records() -> Vec<Record> {
        vec![
            Record::Ready {
                version: GUEST_PROTOCOL_VERSION,
            },
            Record::Stdout(b"hello\n".to_vec()),
            Record::Stderr(vec![0xff, 0, 1]),
            Record::Stdout(Vec::new()),
            Record::File {
                path: "out/ré.json".to_owned(),
                contents: b"{}".to_vec(),
            },
            Record::FileSize {
                path: "out/ré.bin".to_owned(),
                size: (1 << 40) + 3,
            },
            Record::FileSize {
                path: String::new(),
                size: 0,
            },
            Record::IterationEnd(IterationEnd {
                exit_code: -3,
                stdout_dropped: 1 << 40,
                stderr_dropped: 7,
                elapsed_ns: 200_000_001,
                files_error: Some("`x` does not exist".to_owned()),
            }),
            Record::IterationEnd(IterationEnd {
                exit_code: 137,
                stdout_dropped: 0,
                stderr_dropped: 0,
                elapsed_ns: u64::MAX,
                files_error: None,
            }),
            Record::Error("boom".to_owned()),
            Record::Done,
        ]
    }

    #[test]
    fn records_round_trip_byte_by_byte_and_at_once() {
        let mut stream = Vec::new();
        for record in all_records() {
            record.encode(&mut stream);
        }
        // Delivered one byte at a time: nothing is decoded early or lost.
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut decoded = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(record) = decoder.next_record().unwrap() {
                decoded.push(record);
            }
        }
        assert_eq!(decoded, all_records());
        assert_eq!(decoder.pending(), 0);
        // Delivered at once.
        let mut decoder = FrameDecoder::new(1 << 20);
        decoder.push(&stream);
        let mut decoded = Vec::new();
        while let Some(record) = decoder.next_record().unwrap() {
            decoded.push(record);
        }
        assert_eq!(decoded, all_records());
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut frame = Vec::new();
        Record::Stdout(vec![b'x'; 100]).encode(&mut frame);
        let mut decoder = FrameDecoder::new(99);
        // Refused from the header alone, before the payload arrives.
        decoder.push(&frame[..FRAME_HEADER_LEN]);
        assert_eq!(
            decoder.next_record(),
            Err(FrameError::TooLong { len: 100, max: 99 })
        );

        for bad in [
            vec![99, 0, 0, 0, 0],                             // unknown tag
            vec![tag::READY, 1, 0, 0, 0, 1],                  // short version
            vec![tag::DONE, 1, 0, 0, 0, 1],                   // Done with a payload
            vec![tag::FILE, 5, 0, 0, 0, 9, 0, 0, 0, b'a'],    // path longer than the frame
            vec![tag::ITERATION_END, 4, 0, 0, 0, 0, 0, 0, 0], // no dropped counts
            // Version 1's `IterationEnd`: no wall time.
            [vec![tag::ITERATION_END, 20, 0, 0, 0], vec![0; 20]].concat(),
            vec![tag::FILE_SIZE, 7, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7], // short size
            vec![tag::FILE_SIZE, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff], // path not UTF-8
        ] {
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.push(&bad);
            assert!(
                matches!(decoder.next_record(), Err(FrameError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn config_is_strict_json() {
        let config = GuestConfig {
            channel: GuestChannel::VirtioSerial {
                name: "bencher".to_owned(),
            },
            disks: GuestDisks::named(),
            network: Some(GuestNetwork::SLIRP),
            argv: vec!["sh".to_owned()],
            env: vec![("A".to_owned(), "1".to_owned())],
            working_dir: "/".to_owned(),
            uid: 1,
            gid: 2,
            groups: vec![3],
            iterations: 2,
            allow_failure: false,
            file_paths: vec![],
            file_size: true,
            max_output_size: 10,
            max_symlinks: 40,
            grace_period_ms: 0,
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            serde_json::from_value::<GuestConfig>(json.clone()).unwrap(),
            config
        );
        assert_eq!(json["network"]["address"], "10.0.2.15");
        let mut typo = json;
        typo["iteration"] = 3.into();
        assert!(serde_json::from_value::<GuestConfig>(typo).is_err());
    }

    #[test]
    fn netmasks_from_prefixes() {
        let mask = |prefix_len| {
            GuestNetwork {
                prefix_len,
                ..GuestNetwork::SLIRP
            }
            .netmask()
        };
        assert_eq!(mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(mask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(mask(40), Ipv4Addr::BROADCAST);
    }
}
