//! A streaming reader of tar as OCI layers use it (ustar and GNU headers, GNU long
//! names, PAX extended headers), charging every byte to the image's budget before it
//! is read. IO: reads from the given (decompressed) stream only.
//!
//! We read the member structure ourselves and use the `tar` crate only to decode
//! header fields, because `tar::Archive` reads GNU long names and PAX headers of any
//! declared size into memory: a layer declaring a 30 GiB PAX header would take the
//! runner down. Here such members are capped at 1 MiB (Go's `archive/tar` limit), the
//! PAX `size` record is honoured so the member boundaries agree with Go's reader, and
//! nothing else about an entry is guessed.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use tar::Header;

use super::UnpackLimits;
use super::error::{LayerError, Limit};

/// The tar block size: headers are one block, data is padded to whole blocks.
const BLOCK: u64 = 512;

/// The largest GNU long name, long link or PAX header we hold in memory.
const MAX_EXTENSION_SIZE: u64 = 1 << 20;

/// Scratch buffer size for skipping and draining.
const SKIP_CHUNK: usize = 64 * 1024;

/// The cumulative limits of one image and what its layers have used of them so far.
#[derive(Debug)]
pub(super) struct Budget {
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
}

impl Budget {
    pub(super) fn new(limits: UnpackLimits) -> Self {
        Self {
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    /// Reserves `n` stream bytes before they are read.
    fn charge_bytes(&mut self, n: u64, path: Option<&[u8]>) -> Result<(), LayerError> {
        match self.bytes.checked_add(n) {
            Some(total) if total <= self.limits.max_total_bytes => {
                self.bytes = total;
                Ok(())
            }
            _ => Err(LayerError::LimitExceeded {
                path: path.map(display_path),
                limit: Limit::TotalBytes,
                max: self.limits.max_total_bytes,
            }),
        }
    }

    /// Counts one more entry.
    fn charge_entry(&mut self, path: &[u8]) -> Result<(), LayerError> {
        if self.entries >= self.limits.max_entries {
            return Err(LayerError::LimitExceeded {
                path: Some(display_path(path)),
                limit: Limit::Entries,
                max: self.limits.max_entries,
            });
        }
        self.entries += 1;
        Ok(())
    }
}

/// What an entry creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A regular file (`0`, NUL, or contiguous `7`).
    File,
    Dir,
    Symlink,
    HardLink,
    /// A character or block device or a FIFO: never created.
    Special,
    /// A type flag we do not know: skipped, its data read past.
    Unknown(u8),
}

/// A modification time as the kernel takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mtime {
    pub(super) secs: i64,
    /// Always below 1_000_000_000.
    pub(super) nanos: u32,
}

/// One entry of the layer with its extension headers applied.
#[derive(Debug)]
pub(super) struct Entry {
    /// The raw path bytes, as the archive spells them.
    pub(super) path: Vec<u8>,
    /// The symlink target or hard link target, raw.
    pub(super) link: Option<Vec<u8>>,
    pub(super) kind: Kind,
    /// Data bytes following the header (after PAX `size`).
    pub(super) size: u64,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: Mtime,
}

impl Entry {
    pub(super) fn display_path(&self) -> PathBuf {
        display_path(&self.path)
    }
}

/// A raw entry path as a `PathBuf` for messages; non-UTF-8 bytes are kept.
pub(super) fn display_path(raw: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(raw))
}

/// The fields a PAX extended header can override for the next entry.
#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Mtime>,
}

/// Reads the members of one layer in order.
pub(super) struct Archive<R> {
    inner: R,
    /// Bytes consumed from `inner`, for error messages.
    offset: u64,
    /// Unread data bytes of the current entry.
    data_left: u64,
    /// Padding after the current entry's data.
    pad_left: u64,
    /// Set once the end-of-archive block or the end of the stream was seen.
    ended: bool,
    scratch: Vec<u8>,
}

impl<R: Read> Archive<R> {
    pub(super) fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            data_left: 0,
            pad_left: 0,
            ended: false,
            scratch: Vec::new(),
        }
    }

    /// The next entry, or `None` at the end of the archive. Whatever the previous
    /// entry left unread is skipped first.
    pub(super) fn next_entry(&mut self, budget: &mut Budget) -> Result<Option<Entry>, LayerError> {
        if self.ended {
            return Ok(None);
        }
        self.skip_rest()?;

        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Pax> = None;
        loop {
            let header_offset = self.offset;
            budget.charge_bytes(BLOCK, None)?;
            let mut header = Header::new_old();
            let pending = long_name.is_some() || long_link.is_some() || pax.is_some();
            if !self.read_header(header.as_mut_bytes())?
                || header.as_bytes().iter().all(|b| *b == 0)
            {
                self.ended = true;
                if pending {
                    return Err(self.malformed(
                        header_offset,
                        "an extension header is not followed by the entry it describes",
                    ));
                }
                return Ok(None);
            }
            if !checksum_matches(&header) {
                return Err(self.malformed(header_offset, "header checksum mismatch"));
            }

            let flag = header.as_old().linkflag[0];
            let header_size = numeric_field(&header.as_old().size)
                .ok_or_else(|| self.malformed(header_offset, "unreadable size field"))?;
            match flag {
                b'L' | b'K' => {
                    if (flag == b'L' && long_name.is_some())
                        || (flag == b'K' && long_link.is_some())
                    {
                        return Err(
                            self.malformed(header_offset, "two GNU long names for the same entry")
                        );
                    }
                    let mut name = self.read_extension(header_offset, header_size, budget)?;
                    // GNU writes the name NUL-terminated.
                    if let Some(nul) = name.iter().position(|b| *b == 0) {
                        name.truncate(nul);
                    }
                    if flag == b'L' {
                        long_name = Some(name);
                    } else {
                        long_link = Some(name);
                    }
                    continue;
                }
                b'x' => {
                    if pax.is_some() {
                        return Err(
                            self.malformed(header_offset, "two PAX headers for the same entry")
                        );
                    }
                    let data = self.read_extension(header_offset, header_size, budget)?;
                    let parsed =
                        parse_pax(&data).map_err(|reason| self.malformed(header_offset, reason))?;
                    pax = Some(parsed);
                    continue;
                }
                b'g' => {
                    // Global PAX headers are ignored, as Go's reader and Docker do, but
                    // they are members: counted and charged so a stream of them is bounded.
                    let path = header.path_bytes().into_owned();
                    budget.charge_entry(&path)?;
                    self.start_data(header_size, budget, Some(&path))?;
                    self.skip_rest()?;
                    continue;
                }
                _ => {}
            }

            let pax = pax.unwrap_or_default();
            let path = match (long_name, pax.path) {
                (Some(name), _) | (None, Some(name)) => name,
                (None, None) => header.path_bytes().into_owned(),
            };
            budget.charge_entry(&path)?;
            let invalid = |reason: &str| LayerError::InvalidEntry {
                path: display_path(&path),
                reason: reason.to_owned(),
            };

            let kind = match flag {
                b'0' | b'7' => Kind::File,
                // The pre-POSIX convention: a regular file whose name ends in `/` is a
                // directory (only for the NUL flag, as Go's reader does).
                0 if path.ends_with(b"/") => Kind::Dir,
                0 => Kind::File,
                b'1' => Kind::HardLink,
                b'2' => Kind::Symlink,
                b'3' | b'4' | b'6' => Kind::Special,
                b'5' => Kind::Dir,
                b'S' => return Err(invalid("GNU sparse files are not supported")),
                other => Kind::Unknown(other),
            };
            let size = pax.size.unwrap_or(header_size);
            if size != 0 && !matches!(kind, Kind::File | Kind::Unknown(_)) {
                // Go's reader ignores the data of these types while tar-rs reads it:
                // refuse instead of picking one reading of an ambiguous archive.
                return Err(invalid(
                    "a header-only entry (directory, link or device) carries data",
                ));
            }

            let fields = header.as_old();
            let field = |bytes: &[u8], what: &str| {
                numeric_field(bytes).ok_or_else(|| invalid(&format!("unreadable {what} field")))
            };
            // Masked to the permission bits, so the narrowing cannot lose anything.
            let mode = (field(&fields.mode, "mode")? & 0o7777) as u32;
            let uid = match pax.uid {
                Some(uid) => uid,
                None => field(&fields.uid, "uid")?,
            };
            let gid = match pax.gid {
                Some(gid) => gid,
                None => field(&fields.gid, "gid")?,
            };
            let mtime = match pax.mtime {
                Some(mtime) => mtime,
                None => Mtime {
                    secs: i64::try_from(field(&fields.mtime, "mtime")?).unwrap_or(i64::MAX),
                    nanos: 0,
                },
            };
            let link = match (long_link, pax.linkpath) {
                (Some(link), _) | (None, Some(link)) => Some(link),
                (None, None) => header.link_name_bytes().map(|l| l.into_owned()),
            };

            // Reserve the data before any of it is read: a file that would pass the cap
            // is refused before it is created.
            self.start_data(size, budget, Some(&path))?;
            return Ok(Some(Entry {
                path,
                link,
                kind,
                size,
                mode,
                uid,
                gid,
                mtime,
            }));
        }
    }

    /// Reads data of the current entry; `Ok(0)` once it is exhausted or the stream
    /// ended early (the caller compares with the declared size).
    pub(super) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, LayerError> {
        let want = usize::try_from(self.data_left).map_or(buf.len(), |left| left.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.read_inner(&mut buf[..want])?;
        // `n <= want <= data_left`, so this cannot underflow.
        self.data_left -= n as u64;
        Ok(n)
    }

    /// Finishes the layer: skips what is left of the last entry and drains whatever
    /// follows the end-of-archive marker (tar padding, a second gzip member), charged
    /// to the budget, so a caller hashing the stream sees all of it.
    pub(super) fn finish(mut self, budget: &mut Budget) -> Result<(), LayerError> {
        self.skip_rest()?;
        self.scratch.resize(SKIP_CHUNK, 0);
        let mut scratch = std::mem::take(&mut self.scratch);
        loop {
            let n = self.read_inner(&mut scratch)?;
            if n == 0 {
                return Ok(());
            }
            budget.charge_bytes(n as u64, None)?;
        }
    }

    /// Charges `size` bytes of data plus padding and makes them the current data.
    /// `path` is `None` for extension headers, which belong to no entry yet.
    fn start_data(
        &mut self,
        size: u64,
        budget: &mut Budget,
        path: Option<&[u8]>,
    ) -> Result<(), LayerError> {
        let padded = padded(size)
            .ok_or_else(|| self.malformed(self.offset, format!("impossible data size {size}")))?;
        budget.charge_bytes(padded, path)?;
        self.data_left = size;
        self.pad_left = padded - size;
        Ok(())
    }

    /// Reads a GNU long name/link or PAX header body, bounded in size.
    fn read_extension(
        &mut self,
        header_offset: u64,
        size: u64,
        budget: &mut Budget,
    ) -> Result<Vec<u8>, LayerError> {
        if size > MAX_EXTENSION_SIZE {
            return Err(self.malformed(
                header_offset,
                format!("an extension header of {size} bytes exceeds the 1 MiB limit"),
            ));
        }
        self.start_data(size, budget, None)?;
        // `size` is at most 1 MiB, so it fits a usize.
        let mut data = vec![0; size as usize];
        let mut filled = 0;
        while filled < data.len() {
            let n = self.read_data(&mut data[filled..])?;
            if n == 0 {
                return Err(
                    self.malformed(self.offset, "the layer ends inside an extension header")
                );
            }
            filled += n;
        }
        self.skip_rest()?;
        Ok(data)
    }

    /// Skips the unread data and padding of the current member.
    fn skip_rest(&mut self) -> Result<(), LayerError> {
        let mut left = self.data_left.saturating_add(self.pad_left);
        self.data_left = 0;
        self.pad_left = 0;
        if left == 0 {
            return Ok(());
        }
        self.scratch.resize(SKIP_CHUNK, 0);
        let mut scratch = std::mem::take(&mut self.scratch);
        while left > 0 {
            let want = usize::try_from(left).map_or(scratch.len(), |l| l.min(scratch.len()));
            let n = self.read_inner(&mut scratch[..want])?;
            if n == 0 {
                return Err(self.malformed(self.offset, "the layer ends inside an entry's data"));
            }
            left -= n as u64;
        }
        self.scratch = scratch;
        Ok(())
    }

    /// Reads one header block; `false` if the stream ended cleanly before it.
    fn read_header(&mut self, block: &mut [u8; 512]) -> Result<bool, LayerError> {
        let start = self.offset;
        let mut filled = 0;
        while filled < block.len() {
            let n = self.read_inner(&mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    // A stream cut at a member boundary without the end marker: accepted
                    // like tar-rs and Go do; the blob digest guards against truncation.
                    return Ok(false);
                }
                return Err(self.malformed(start, "the layer ends inside a header"));
            }
            filled += n;
        }
        Ok(true)
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize, LayerError> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    // A reader claiming more than the buffer is broken; never trust it.
                    let n = n.min(buf.len());
                    self.offset = self.offset.saturating_add(n as u64);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LayerError::Read {
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
    }

    fn malformed(&self, offset: u64, reason: impl Into<String>) -> LayerError {
        LayerError::Malformed {
            offset,
            reason: reason.into(),
        }
    }
}

/// A numeric header field: octal text padded with NULs or spaces (empty means 0, as
/// Go reads it), or GNU base-256 (high bit set) for values octal cannot hold. `None`
/// for anything else, negative base-256 values, and overflow.
fn numeric_field(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        if first != 0x80 {
            // 0xff marks a negative number; nothing we read may be negative.
            return None;
        }
        return rest.iter().try_fold(0u64, |acc, b| {
            acc.checked_mul(256)?.checked_add(u64::from(*b))
        });
    }
    let is_pad = |b: &u8| *b == 0 || *b == b' ';
    let start = field.iter().position(|b| !is_pad(b)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !is_pad(b))
        .map_or(start, |i| i + 1);
    field[start..end]
        .iter()
        .try_fold(0u64, |acc, digit| match digit {
            b'0'..=b'7' => acc.checked_mul(8)?.checked_add(u64::from(digit - b'0')),
            _ => None,
        })
}

/// `size` rounded up to whole blocks, `None` on overflow.
fn padded(size: u64) -> Option<u64> {
    Some(size.checked_add(BLOCK - 1)? & !(BLOCK - 1))
}

/// Whether the stored checksum matches the header, summed with unsigned or signed
/// bytes (old Sun tar wrote the signed sum; Go accepts both).
fn checksum_matches(header: &Header) -> bool {
    let Some(stored) = numeric_field(&header.as_old().cksum) else {
        return false;
    };
    let mut unsigned: u32 = 0;
    let mut signed: i32 = 0;
    for (i, byte) in header.as_bytes().iter().enumerate() {
        // The checksum field itself counts as eight spaces.
        let byte = if (148..156).contains(&i) { b' ' } else { *byte };
        unsigned += u32::from(byte);
        signed += i32::from(byte as i8);
    }
    stored == u64::from(unsigned) || i64::try_from(stored).ok() == Some(i64::from(signed))
}

/// Parses PAX records (`"<len> <key>=<value>\n"`, length-prefixed so values may hold
/// newlines). An empty value unsets the field, per POSIX.
fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            // Some writers pad the body with NULs.
            break;
        }
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or("a PAX record without a length")?;
        let len = parse_decimal(&data[..space])
            .and_then(|len| usize::try_from(len).ok())
            .ok_or("a PAX record with an unreadable length")?;
        if len <= space + 1 || len > data.len() {
            return Err("a PAX record length out of range".to_owned());
        }
        let record = data[space + 1..len]
            .strip_suffix(b"\n")
            .ok_or("a PAX record not ending in a newline")?;
        let equals = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or("a PAX record without '='")?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        data = &data[len..];

        let number = |what: &str| -> Result<Option<u64>, String> {
            if value.is_empty() {
                return Ok(None);
            }
            parse_decimal(value)
                .map(Some)
                .ok_or_else(|| format!("an unreadable PAX {what}"))
        };
        let bytes = || (!value.is_empty()).then(|| value.to_vec());
        match key {
            b"path" => pax.path = bytes(),
            b"linkpath" => pax.linkpath = bytes(),
            b"size" => pax.size = number("size")?,
            b"uid" => pax.uid = number("uid")?,
            b"gid" => pax.gid = number("gid")?,
            b"mtime" => {
                pax.mtime = if value.is_empty() {
                    None
                } else {
                    Some(parse_pax_time(value).ok_or("an unreadable PAX mtime")?)
                };
            }
            key if key.starts_with(b"GNU.sparse.") => {
                return Err("GNU sparse files are not supported".to_owned());
            }
            // atime, ctime, uname, gname, comment, charset, SCHILY.xattr.* and vendor
            // records: not applied (xattrs are documented as not carried over).
            _ => {}
        }
    }
    Ok(pax)
}

/// A strictly decimal `u64` (digits only, no sign, no spaces).
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A PAX time: `[-]seconds[.fraction]`, fraction truncated to nanoseconds.
fn parse_pax_time(value: &[u8]) -> Option<Mtime> {
    let (negative, value) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match value.iter().position(|b| *b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    let secs = i64::try_from(parse_decimal(whole)?).ok()?;
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let digit = fraction.get(i).map_or(0, |d| u32::from(d - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(if !negative {
        Mtime { secs, nanos }
    } else if nanos == 0 {
        Mtime {
            secs: -secs,
            nanos: 0,
        }
    } else {
        // -1.25 is 1.25 s before the epoch: second -2 plus 0.75 s.
        Mtime {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_with_newlines_in_values_parse() {
        let value = b"a\nb";
        let record_len = 1 + 1 + "path=".len() + value.len() + 1;
        let data = [
            format!("{} path=", record_len + 1).into_bytes(),
            value.to_vec(),
            b"\n".to_vec(),
            b"12 size=123\n".to_vec(),
        ]
        .concat();
        let pax = parse_pax(&data).expect("valid records");
        assert_eq!(pax.path.as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(pax.size, Some(123));
    }

    #[test]
    fn pax_garbage_is_an_error_not_a_panic() {
        for data in [
            &b"x"[..],
            b"99999999999999999999999 path=a\n",
            b"3 a",
            b"5 ab\n",
            b"7 path\n",
            b"8 size=x\n",
            b"2 \n",
        ] {
            assert!(parse_pax(data).is_err(), "{data:?}");
        }
        assert!(parse_pax(b"29 GNU.sparse.major=1\n").is_err());
    }

    #[test]
    fn pax_times_parse_with_fractions_and_signs() {
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some(Mtime {
                secs: 1_700_000_000,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Mtime {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"12.1234567891234"),
            Some(Mtime {
                secs: 12,
                nanos: 123_456_789
            })
        );
        assert_eq!(parse_pax_time(b"1e5"), None);
        assert_eq!(parse_pax_time(b"99999999999999999999"), None);
    }

    #[test]
    fn numeric_fields_read_octal_padding_and_base256() {
        assert_eq!(numeric_field(b"0000644\0"), Some(0o644));
        assert_eq!(numeric_field(b"  644 \0"), Some(0o644));
        assert_eq!(numeric_field(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(numeric_field(b"00000008"), None);
        assert_eq!(numeric_field(b"6 4"), None);
        assert_eq!(
            numeric_field(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
        assert_eq!(
            numeric_field(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]),
            None
        );
        assert_eq!(
            numeric_field(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(numeric_field(b"77777777777777777777777"), None);
    }

    #[test]
    fn decimal_is_strict() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b" 1"), None);
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
    }
}
