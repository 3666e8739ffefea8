//! Capturing a job's stdout and stderr under one byte budget per iteration. IO: reads
//! the pipes it is given, nothing else.
//!
//! Both streams are read to their end whatever the budget: bytes past it are counted
//! and dropped, so a job printing without end never blocks on a full pipe, and the
//! captured text ends with a marker line saying how much was dropped. Text is decoded
//! as UTF-8 lossily (invalid bytes become U+FFFD): a benchmark's stray binary output
//! must not cost it its results.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// Read size: large enough that a job printing 50 MiB is read in few calls.
const CHUNK: usize = 64 * 1024;

/// The bytes stdout and stderr of one iteration may still keep, shared by both.
#[derive(Debug, Clone)]
pub(super) struct OutputBudget {
    remaining: Arc<AtomicU64>,
    limit: u64,
}

impl OutputBudget {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            remaining: Arc::new(AtomicU64::new(limit)),
            limit,
        }
    }

    /// Takes up to `wanted` bytes from the budget; returns how many were granted.
    fn take(&self, wanted: u64) -> u64 {
        let mut granted = 0;
        // `fetch_update` retries if the other stream took bytes in between.
        let _ = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                granted = left.min(wanted);
                Some(left - granted)
            });
        granted
    }
}

/// What one stream produced.
#[derive(Debug, Default)]
pub(super) struct Captured {
    kept: Vec<u8>,
    /// Bytes read past the budget and dropped.
    discarded: u64,
    /// The budget's limit, for the marker.
    limit: u64,
}

/// Reads `reader` to its end (or until `stop`), keeping what the budget allows.
pub(super) async fn capture(
    mut reader: impl AsyncRead + Unpin,
    budget: OutputBudget,
    stop: CancellationToken,
) -> Captured {
    let mut captured = Captured {
        limit: budget.limit,
        ..Captured::default()
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let read = tokio::select! {
            biased;
            read = reader.read(&mut buf) => read,
            () = stop.cancelled() => break,
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                // Only a broken pipe object gets here; what was read stays.
                tracing::warn!(%error, "reading the job's output failed");
                break;
            }
        };
        let granted = budget.take(n as u64) as usize;
        captured.kept.extend_from_slice(&buf[..granted]);
        captured.discarded += (n - granted) as u64;
    }
    captured
}

impl Captured {
    /// What a stream produced elsewhere (a VM guest), for the same text and marker.
    pub(super) fn from_parts(kept: Vec<u8>, discarded: u64, limit: u64) -> Self {
        Self {
            kept,
            discarded,
            limit,
        }
    }

    /// The text, with a truncation marker line when bytes were dropped. A multi-byte
    /// character cut by the budget is dropped whole rather than shown as U+FFFD.
    pub(super) fn into_text(self) -> String {
        let limit = self.limit;
        if self.discarded == 0 {
            return String::from_utf8_lossy(&self.kept).into_owned();
        }
        let mut kept = self.kept;
        let cut = incomplete_utf8_suffix(&kept);
        kept.truncate(kept.len() - cut);
        let discarded = self.discarded + cut as u64;
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        text.push_str(&format!(
            "\n[bencher: output truncated after {} bytes; {discarded} more bytes discarded \
             (stdout and stderr share a limit of {limit} bytes per iteration)]\n",
            kept.len()
        ));
        text
    }
}

/// How many bytes at the end of `bytes` start a UTF-8 character they do not finish.
fn incomplete_utf8_suffix(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead
        }
        let width = match byte {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return 0,
        };
        return if width > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(input: Vec<u8>, budget: &OutputBudget) -> String {
        capture(&input[..], budget.clone(), CancellationToken::new())
            .await
            .into_text()
    }

    #[tokio::test]
    async fn under_the_limit_is_untouched() {
        let budget = OutputBudget::new(100);
        assert_eq!(run(b"hello\n".to_vec(), &budget).await, "hello\n");
        assert_eq!(run(vec![0xff, b'a'], &budget).await, "\u{fffd}a");
    }

    #[tokio::test]
    async fn streams_share_the_budget_and_say_what_they_dropped() {
        let budget = OutputBudget::new(10);
        assert_eq!(run(b"123456".to_vec(), &budget).await, "123456");
        let text = run(b"abcdefgh".to_vec(), &budget).await;
        assert!(
            text.starts_with(
                "abcd\n[bencher: output truncated after 4 bytes; 4 more bytes discarded"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("limit of 10 bytes per iteration)]\n"),
            "{text}"
        );
        let text = run(b"more".to_vec(), &budget).await;
        assert!(
            text.starts_with("\n[bencher: output truncated after 0 bytes; 4 more"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn reads_to_the_end_far_past_the_budget() {
        let budget = OutputBudget::new(1000);
        let text = run(vec![b'x'; 5 << 20], &budget).await;
        assert!(text.contains(&format!("{} more bytes discarded", (5 << 20) - 1000)));
    }

    #[tokio::test]
    async fn a_cut_character_is_dropped_whole() {
        let budget = OutputBudget::new(5);
        // "aé€": 1 + 2 + 3 bytes; the budget ends inside "€".
        let text = run("aé€".as_bytes().to_vec(), &budget).await;
        assert!(
            text.starts_with("aé\n[bencher: output truncated after 3 bytes; 3 more"),
            "{text}"
        );
        assert_eq!(incomplete_utf8_suffix("a€".as_bytes()), 0);
        assert_eq!(incomplete_utf8_suffix(&"a€".as_bytes()[..3]), 2);
        assert_eq!(incomplete_utf8_suffix(&[0xf0, 0x9f, 0x98]), 3);
        assert_eq!(incomplete_utf8_suffix(&[0x80, 0x80, 0x80, 0x80]), 0);
    }

    #[tokio::test]
    async fn stop_ends_the_read() {
        let (_writer, reader) = tokio::io::duplex(64);
        let stop = CancellationToken::new();
        stop.cancel();
        let captured = capture(reader, OutputBudget::new(10), stop).await;
        assert!(captured.kept.is_empty());
    }
}
