//! `CaptureWriter`: the inference-table writer of one table directory
//! (`$KEEL_HOME/tables/<prefix>_payload/`), fed by request handlers.
//!
//! Flow: a handler [`CaptureWriter::submit`]s a record over a bounded channel
//! (`try_send`: a full channel drops the record, and the caller counts it — logging
//! never waits for capacity). The *writer thread* takes every queued record, appends
//! their frames to the open WAL segment with one `write` (group commit), then
//! acknowledges each: the record is in the segment file, i.e. in the OS page cache, so
//! a `kill -9` of the process from then on loses nothing. The segment is
//! `fdatasync`ed at most every `sync_interval` (50 ms) while it has unsynced bytes,
//! which bounds what a power loss can take to that window. Every `compact_records`
//! records, `compact_bytes` bytes or `compact_interval`, and at shutdown, the segment is
//! synced, closed (`.open` → `.wal`) and handed to the *compactor thread*, which turns
//! closed segments into Parquet parts ([`super::compaction`]) without holding up
//! appends.
//!
//! Start-up replays whatever a crash left in `_wal/` before the writer accepts records,
//! and takes an exclusive lock on `_wal/.lock`, so one process owns a table at a time.
//!
//! Invariants: memory is bounded — `channel_capacity` records queued, one segment
//! (≤ `compact_bytes` plus a record) read back at a time by the compactor; no panics —
//! I/O failures are logged, the records concerned are not acknowledged, and a failed
//! append closes its segment so later frames never follow a torn one.

use super::compaction::{compact_all, Compacted};
use super::parquet_part::remove_stale_temps;
use super::record::InferenceRecord;
use super::wal::{encode_frame, new_segment_id, segment_path, wal_dir, CLOSED_SUFFIX, OPEN_SUFFIX};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Tuning of a [`CaptureWriter`].
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Records that may wait for the writer thread; more are dropped (and counted).
    pub channel_capacity: usize,
    /// Longest time unsynced WAL bytes are left to the page cache.
    pub sync_interval: Duration,
    /// A segment is compacted once it holds this many records,
    pub compact_records: usize,
    /// or this many bytes,
    pub compact_bytes: u64,
    /// or is this old.
    pub compact_interval: Duration,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            channel_capacity: 1024,
            sync_interval: Duration::from_millis(50),
            compact_records: 10_000,
            compact_bytes: 64 << 20,
            compact_interval: Duration::from_secs(60),
        }
    }
}

/// Most records written by one group commit.
const MAX_BATCH: usize = 512;

enum Msg {
    Record(Box<InferenceRecord>, Option<oneshot::Sender<()>>),
    Shutdown,
}

enum Compact {
    Wake,
    Stop,
}

/// The acknowledgement of a submitted record: resolves to `true` once the record is in
/// the WAL file, `false` if the writer failed to write it.
pub struct Ack(oneshot::Receiver<()>);

impl Ack {
    pub async fn written(self) -> bool {
        self.0.await.is_ok()
    }

    /// Blocks the calling (non-async) thread until the outcome is known.
    pub fn wait_blocking(self) -> bool {
        self.0.blocking_recv().is_ok()
    }
}

/// Why a record was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The channel is full (the writer is behind).
    Full,
    /// The writer has stopped.
    Closed,
}

pub struct CaptureWriter {
    table: PathBuf,
    tx: SyncSender<Msg>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    replayed: Compacted,
    /// Held for the writer's life: the OS releases the lock when the process dies.
    _lock: File,
}

impl CaptureWriter {
    /// Opens the table at `table` (created if absent), replays any WAL a crash left,
    /// and starts the writer and compactor threads.
    pub fn open(table: &Path, opts: CaptureOptions) -> io::Result<CaptureWriter> {
        let wal = wal_dir(table);
        fs::create_dir_all(&wal)?;
        let lock = File::options().create(true).truncate(false).write(true).open(wal.join(".lock"))?;
        if let Err(e) = lock.try_lock() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("inference table {} is in use by another process ({e})", table.display()),
            ));
        }
        remove_stale_temps(table)?;
        let replayed = compact_all(table, true)?;
        if replayed.records > 0 {
            tracing::info!(
                "inference table {}: replayed {} WAL records ({} new rows in {} parts)",
                table.display(),
                replayed.records,
                replayed.written,
                replayed.parts
            );
        }
        let (tx, rx) = mpsc::sync_channel(opts.channel_capacity.max(1));
        let (wake_tx, wake_rx) = mpsc::sync_channel(1);
        let compactor = {
            let table = table.to_path_buf();
            std::thread::Builder::new().name("capture-compact".into()).spawn(move || compactor(&table, wake_rx))?
        };
        let state = WriterLoop {
            table: table.to_path_buf(),
            sync_interval: opts.sync_interval,
            compact_records: opts.compact_records.max(1),
            compact_bytes: opts.compact_bytes.max(1),
            compact_interval: opts.compact_interval,
            segment: None,
            dirty: false,
            last_sync: Instant::now(),
            wake: wake_tx,
        };
        let writer = std::thread::Builder::new().name("capture-wal".into()).spawn(move || state.run(rx))?;
        Ok(CaptureWriter {
            table: table.to_path_buf(),
            tx,
            threads: Mutex::new(vec![writer, compactor]),
            replayed,
            _lock: lock,
        })
    }

    pub fn table_dir(&self) -> &Path {
        &self.table
    }

    /// What start-up replayed from a previous run's WAL.
    pub fn replayed(&self) -> Compacted {
        self.replayed
    }

    /// Queues `record` without waiting; the [`Ack`] tells when it is in the WAL.
    pub fn submit(&self, record: InferenceRecord) -> Result<Ack, Dropped> {
        let (ack_tx, ack_rx) = oneshot::channel();
        self.send(Msg::Record(Box::new(record), Some(ack_tx)))?;
        Ok(Ack(ack_rx))
    }

    /// Queues `record` with no acknowledgement (for records logged from `Drop`).
    pub fn submit_detached(&self, record: InferenceRecord) -> Result<(), Dropped> {
        self.send(Msg::Record(Box::new(record), None))
    }

    fn send(&self, m: Msg) -> Result<(), Dropped> {
        self.tx.try_send(m).map_err(|e| match e {
            TrySendError::Full(_) => Dropped::Full,
            TrySendError::Disconnected(_) => Dropped::Closed,
        })
    }

    /// Writes what is queued, compacts everything into Parquet and stops the threads.
    /// Blocks (call it off the async workers); later calls do nothing.
    pub fn close(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        if threads.is_empty() {
            return;
        }
        // Blocking send: shutdown may wait for room; the writer is draining the channel.
        let _ = self.tx.send(Msg::Shutdown);
        for t in threads {
            if t.join().is_err() {
                tracing::error!("inference table {}: a writer thread panicked", self.table.display());
            }
        }
    }
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// The segment being appended to.
struct Segment {
    id: String,
    file: File,
    records: usize,
    bytes: u64,
    opened: Instant,
}

struct WriterLoop {
    table: PathBuf,
    sync_interval: Duration,
    compact_records: usize,
    compact_bytes: u64,
    compact_interval: Duration,
    segment: Option<Segment>,
    /// The segment has bytes not yet fdatasync'ed.
    dirty: bool,
    last_sync: Instant,
    wake: SyncSender<Compact>,
}

impl WriterLoop {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
        let mut buf = Vec::new();
        let mut acks = Vec::with_capacity(MAX_BATCH);
        let mut stop = false;
        while !stop {
            match rx.recv_timeout(self.next_timeout()) {
                Ok(m) => batch.push(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            }
            buf.clear();
            let mut n = 0;
            for m in batch.drain(..) {
                match m {
                    Msg::Record(r, ack) => match encode_frame(&r, &mut buf) {
                        Ok(()) => {
                            n += 1;
                            acks.extend(ack);
                        }
                        Err(e) => tracing::error!("inference table: cannot encode a record: {e}"),
                    },
                    Msg::Shutdown => stop = true,
                }
            }
            if n > 0 {
                match self.append(&buf, n) {
                    Ok(()) => acks.drain(..).for_each(|a| {
                        let _ = a.send(());
                    }),
                    Err(e) => {
                        tracing::error!(
                            "inference table {}: WAL append failed, {n} records lost: {e}",
                            self.table.display()
                        );
                        acks.clear();
                        self.rotate();
                    }
                }
            }
            if stop {
                // What is still queued behind the shutdown (streams cut at the drain deadline).
                while let Ok(Msg::Record(r, ack)) = rx.try_recv() {
                    buf.clear();
                    if encode_frame(&r, &mut buf).is_ok() && self.append(&buf, 1).is_ok() {
                        if let Some(a) = ack {
                            let _ = a.send(());
                        }
                    }
                }
            }
            if self.dirty && (stop || self.last_sync.elapsed() >= self.sync_interval) {
                self.sync();
            }
            let due = self.segment.as_ref().is_some_and(|s| {
                s.records >= self.compact_records
                    || s.bytes >= self.compact_bytes
                    || s.opened.elapsed() >= self.compact_interval
            });
            if stop || due {
                self.rotate();
            }
        }
        let _ = self.wake.send(Compact::Stop);
    }

    /// How long to wait for records before a sync or a compaction falls due.
    fn next_timeout(&self) -> Duration {
        let mut t = Duration::from_secs(1);
        if self.dirty {
            t = t.min(self.sync_interval.saturating_sub(self.last_sync.elapsed()));
        }
        if let Some(s) = &self.segment {
            t = t.min(self.compact_interval.saturating_sub(s.opened.elapsed()));
        }
        t.max(Duration::from_millis(1))
    }

    fn append(&mut self, bytes: &[u8], records: usize) -> io::Result<()> {
        if self.segment.is_none() {
            let id = new_segment_id();
            let file =
                File::options().create_new(true).append(true).open(segment_path(&self.table, &id, OPEN_SUFFIX))?;
            self.segment = Some(Segment { id, file, records: 0, bytes: 0, opened: Instant::now() });
        }
        let Some(s) = self.segment.as_mut() else { return Err(io::Error::other("no open segment")) };
        s.file.write_all(bytes)?;
        s.records += records;
        s.bytes += bytes.len() as u64;
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) {
        if let Some(s) = &self.segment {
            if let Err(e) = s.file.sync_data() {
                tracing::error!("inference table {}: WAL fdatasync failed: {e}", self.table.display());
            }
        }
        self.dirty = false;
        self.last_sync = Instant::now();
    }

    /// Closes the open segment (synced, renamed to `.wal`) and wakes the compactor.
    fn rotate(&mut self) {
        if self.dirty {
            self.sync();
        }
        let Some(s) = self.segment.take() else { return };
        drop(s.file);
        let from = segment_path(&self.table, &s.id, OPEN_SUFFIX);
        if let Err(e) = fs::rename(&from, segment_path(&self.table, &s.id, CLOSED_SUFFIX)) {
            // Left `.open`: replayed at the next start.
            tracing::error!("inference table: cannot close WAL segment {}: {e}", from.display());
            return;
        }
        let _ = self.wake.try_send(Compact::Wake);
    }
}

fn compactor(table: &Path, rx: Receiver<Compact>) {
    loop {
        let stop = !matches!(rx.recv(), Ok(Compact::Wake));
        match compact_all(table, false) {
            Ok(c) if c.records > 0 => {
                tracing::debug!(
                    "inference table {}: {} records compacted into {} parts",
                    table.display(),
                    c.written,
                    c.parts
                )
            }
            Ok(_) => {}
            // The segments stay in `_wal/`: retried at the next wake, or replayed at start.
            Err(e) => tracing::error!("inference table {}: compaction failed: {e}", table.display()),
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference_table::wal::tests::record;
    use crate::inference_table::wal::{encode_frame, list_segments};
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn table() -> PathBuf {
        std::env::temp_dir().join(format!("keel-writer-{}/t_payload", uuid::Uuid::new_v4().simple()))
    }

    fn ids(table: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for d in fs::read_dir(table).unwrap() {
            let d = d.unwrap().path();
            if !d.file_name().unwrap().to_str().unwrap().starts_with("date=") {
                continue;
            }
            for f in fs::read_dir(&d).unwrap() {
                let r = ParquetRecordBatchReaderBuilder::try_new(File::open(f.unwrap().path()).unwrap()).unwrap();
                for b in r.build().unwrap() {
                    out.extend(b.unwrap().column(0).as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn acknowledged_records_reach_parquet_at_close() {
        let t = table();
        let opts = CaptureOptions { compact_records: 7, ..Default::default() };
        let w = CaptureWriter::open(&t, opts).unwrap();
        let now = 1_700_000_000_000;
        let acks: Vec<Ack> = (0..30).map(|i| w.submit(record(i, now)).unwrap()).collect();
        assert!(acks.into_iter().all(Ack::wait_blocking));
        w.close();
        assert_eq!(w.submit(record(99, now)).err(), Some(Dropped::Closed));
        let mut want: Vec<String> = (0..30).map(|i| format!("req-{i}")).collect();
        want.sort();
        assert_eq!(ids(&t), want);
        // A segment closes after the group commit that reaches seven records: at most
        // five segments (one part each); the WAL is empty.
        assert!(list_segments(&t, true).unwrap().is_empty());
        let parts = fs::read_dir(t.join("date=2023-11-14")).unwrap().count();
        assert!((1..=5).contains(&parts), "{parts} parts");
        let _ = fs::remove_dir_all(t.parent().unwrap());
    }

    #[test]
    fn start_up_replays_a_crashed_wal_and_locks_the_table() {
        let t = table();
        fs::create_dir_all(wal_dir(&t)).unwrap();
        let mut buf = Vec::new();
        for i in 0..3 {
            encode_frame(&record(i, 1_700_000_000_000), &mut buf).unwrap();
        }
        buf.extend_from_slice(&[1, 2, 3]);
        fs::write(segment_path(&t, "0000000000001-dead", OPEN_SUFFIX), &buf).unwrap();
        let w = CaptureWriter::open(&t, CaptureOptions::default()).unwrap();
        assert_eq!((w.replayed().records, w.replayed().written), (3, 3));
        assert_eq!(ids(&t), ["req-0", "req-1", "req-2"]);
        let e = CaptureWriter::open(&t, CaptureOptions::default()).err().expect("locked");
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(w);
        // Released: a new writer opens, with nothing to replay.
        let w = CaptureWriter::open(&t, CaptureOptions::default()).unwrap();
        assert_eq!(w.replayed().records, 0);
        drop(w);
        let _ = fs::remove_dir_all(t.parent().unwrap());
    }
}
