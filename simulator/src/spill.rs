//! The far end of the simulator's queue, on disk.
//!
//! A session is generated whole when it starts, and an order schedules its back-office events days
//! ahead, so at a steady rate of R events per second the queue holds R × (mean wait) records: about
//! 20 minutes' worth (sessions last up to half an hour, late devices deliver up to a day and a half
//! later, deliveries and returns come days later). At 5,000 events/s that is gigabytes, growing for
//! days. With a spill directory, only the records due in the current time bucket stay in memory;
//! later ones are appended to one file per bucket and read back when the simulation reaches it.
//!
//! The files are scratch: a simulator that stops leaves records it never handed out, which are
//! not events yet, so they are deleted when the next one opens the directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use shoplake_events::{EventName, Reason};

use super::{FraudLabel, Pending, RecordKind, SimRecord};

/// Width of a bucket, simulated time: the records in memory are those due in one bucket.
pub(super) const BUCKET_MICROS: i64 = 10_000_000;
/// Buffered bytes written out at once.
const FLUSH_BYTES: usize = 8 << 20;

pub(super) struct Spill {
    dir: PathBuf,
    /// Every record due before this time is in memory; the rest is here.
    pub(super) loaded_until: i64,
    /// Encoded records per bucket not yet written.
    buffers: BTreeMap<i64, Vec<u8>>,
    buffered: usize,
    on_disk: BTreeSet<i64>,
    /// Records held (buffered or on disk).
    pub(super) records: u64,
}

impl Spill {
    /// Opens `dir` empty (left-overs of an earlier simulator are removed).
    pub(super) fn open(dir: &Path, loaded_until: i64) -> io::Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
        Ok(Spill {
            dir: dir.to_owned(),
            loaded_until,
            buffers: BTreeMap::new(),
            buffered: 0,
            on_disk: BTreeSet::new(),
            records: 0,
        })
    }

    fn path(&self, bucket: i64) -> PathBuf {
        self.dir.join(format!("{bucket}.bin"))
    }

    /// Keeps a record due at or after `loaded_until`.
    pub(super) fn push(&mut self, seq: u64, pending: &Pending) -> io::Result<()> {
        let bucket = pending.record.server_time_micros.div_euclid(BUCKET_MICROS);
        let buf = self.buffers.entry(bucket).or_default();
        let before = buf.len();
        encode(buf, seq, pending);
        self.buffered += buf.len() - before;
        self.records += 1;
        if self.buffered >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends the buffers to their files. A bucket whose write fails stays buffered (its file is
    /// cut back to where it was, so a retry does not write a record twice).
    fn flush(&mut self) -> io::Result<()> {
        while let Some((&bucket, bytes)) = self.buffers.first_key_value() {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(bucket))?;
            let before = file.metadata()?.len();
            if let Err(e) = file.write_all(bytes) {
                let _ = file.set_len(before);
                return Err(e);
            }
            self.buffered -= bytes.len();
            self.buffers.remove(&bucket);
            self.on_disk.insert(bucket);
        }
        Ok(())
    }

    /// Takes every record of the earliest bucket, if it starts before `before`, and moves
    /// `loaded_until` to its end.
    pub(super) fn take_next_bucket(
        &mut self,
        before: Option<i64>,
    ) -> io::Result<Vec<(u64, Pending)>> {
        let first_buffered = self.buffers.keys().next().copied();
        let first_on_disk = self.on_disk.first().copied();
        let Some(bucket) = first_buffered.into_iter().chain(first_on_disk).min() else {
            return Ok(Vec::new());
        };
        if before.is_some_and(|t| bucket * BUCKET_MICROS >= t) {
            return Ok(Vec::new());
        }
        let mut bytes = Vec::new();
        if self.on_disk.remove(&bucket) {
            let path = self.path(bucket);
            bytes = fs::read(&path)?;
            fs::remove_file(&path)?;
        }
        if let Some(buffered) = self.buffers.remove(&bucket) {
            self.buffered -= buffered.len();
            bytes.extend_from_slice(&buffered);
        }
        let out = decode_all(&bytes)?;
        self.records -= out.len() as u64;
        self.loaded_until = self.loaded_until.max((bucket + 1) * BUCKET_MICROS);
        Ok(out)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// Record framing: seq u64, time i64, kind (tag u8 + name), partition key, payload, label JSON
// (empty: none); strings and byte strings are u32-length-prefixed, integers little-endian.

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

fn encode(buf: &mut Vec<u8>, seq: u64, p: &Pending) {
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&p.record.server_time_micros.to_le_bytes());
    let (tag, name) = match p.record.kind {
        RecordKind::Valid(name) => (0u8, name.as_str()),
        RecordKind::Duplicate => (1, ""),
        RecordKind::Bad(reason) => (2, reason.as_str()),
        RecordKind::StockSale => (3, ""),
    };
    buf.push(tag);
    put_bytes(buf, name.as_bytes());
    put_bytes(buf, p.record.partition_key.as_bytes());
    put_bytes(buf, &p.record.payload);
    let label = p
        .label
        .as_ref()
        .and_then(|l| serde_json::to_vec(l).ok())
        .unwrap_or_default();
    put_bytes(buf, &label);
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("simulator spill file: {what}"),
    )
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("truncated record"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| corrupt("u64"))?,
        ))
    }

    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let b = self.take(4)?;
        let n = u32::from_le_bytes(b.try_into().map_err(|_| corrupt("length"))?);
        self.take(n as usize)
    }

    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("not UTF-8"))
    }
}

fn decode_all(bytes: &[u8]) -> io::Result<Vec<(u64, Pending)>> {
    let mut r = Reader(bytes);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let seq = r.u64()?;
        let server_time_micros = r.u64()? as i64;
        let tag = r.take(1)?[0];
        let name = r.string()?;
        let kind = match tag {
            0 => RecordKind::Valid(
                name.parse::<EventName>()
                    .map_err(|()| corrupt("event name"))?,
            ),
            1 => RecordKind::Duplicate,
            2 => RecordKind::Bad(
                Reason::ALL
                    .iter()
                    .copied()
                    .find(|r| r.as_str() == name)
                    .ok_or_else(|| corrupt("reason"))?,
            ),
            3 => RecordKind::StockSale,
            _ => return Err(corrupt("record kind")),
        };
        let partition_key = r.string()?;
        let payload = r.bytes()?.to_vec();
        let label = r.bytes()?;
        let label: Option<FraudLabel> = if label.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(label).map_err(|_| corrupt("fraud label"))?)
        };
        out.push((
            seq,
            Pending {
                record: SimRecord {
                    partition_key,
                    payload,
                    kind,
                    server_time_micros,
                },
                label,
            },
        ));
    }
    Ok(out)
}
