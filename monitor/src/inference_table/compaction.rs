//! Compaction: a closed WAL segment becomes Parquet parts, then the segment is deleted.
//! The same function replays the segments a crash left behind, so the path taken after
//! `kill -9` is the path taken every minute in normal operation.
//!
//! Exactly once: segment `S` contributes to day `D` exactly one file name,
//! `date=D/part-S.parquet`, which appears only whole (atomic rename) and holds exactly
//! the records of `S` dated `D` (the segment is immutable once closed, and fsynced
//! before it is compacted, so every compaction of `S` reads the same records). A part
//! that already exists is therefore skipped, and `S` is deleted only after all its parts
//! are durable. Whatever the crash point — before a rename, between renames, between
//! the last rename and the delete — a later compaction writes exactly the missing parts:
//! no record is lost and none appears twice. One process compacts a table at a time
//! (the writer holds a lock on `_wal/.lock`).

use super::parquet_part::{part_path, write_part};
use super::record::InferenceRecord;
use super::wal::{decode_frames, list_segments, sync_dir, wal_dir};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// What compacting one segment did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Records found in the segment.
    pub records: usize,
    /// Records written to new parts (the rest were already in parts from an earlier,
    /// interrupted compaction).
    pub written: usize,
    /// Parts written.
    pub parts: usize,
    /// Bytes of torn tail ignored.
    pub torn_bytes: usize,
}

/// Compacts segment `id` at `path` into parts of `table` and deletes it.
pub fn compact_segment(table: &Path, id: &str, path: &Path) -> io::Result<Compacted> {
    let bytes = fs::read(path)?;
    let decoded = decode_frames(&bytes);
    drop(bytes);
    if decoded.undecodable > 0 {
        tracing::error!("{}: {} WAL records did not decode and are skipped", path.display(), decoded.undecodable);
    }
    let mut by_day: BTreeMap<i32, Vec<&InferenceRecord>> = BTreeMap::new();
    for r in &decoded.records {
        by_day.entry(r.date_days()).or_default().push(r);
    }
    let mut out = Compacted { records: decoded.records.len(), torn_bytes: decoded.torn_bytes, ..Default::default() };
    for (day, records) in &by_day {
        let part = part_path(table, *day, id);
        if part.exists() {
            continue;
        }
        write_part(&part, records)?;
        out.written += records.len();
        out.parts += 1;
    }
    fs::remove_file(path)?;
    sync_dir(&wal_dir(table))?;
    Ok(out)
}

/// Compacts every segment in `_wal/` — closed ones, and open ones too when
/// `include_open` (at start-up, when no writer is appending: a crash left them).
/// Returns the total; stops at the first error (the segments left are retried later).
pub fn compact_all(table: &Path, include_open: bool) -> io::Result<Compacted> {
    let mut total = Compacted::default();
    for (id, path) in list_segments(table, include_open)? {
        let c = compact_segment(table, &id, &path)?;
        if c.torn_bytes > 0 {
            tracing::warn!("{}: ignored a torn tail of {} bytes (an interrupted write)", path.display(), c.torn_bytes);
        }
        total.records += c.records;
        total.written += c.written;
        total.parts += c.parts;
        total.torn_bytes += c.torn_bytes;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference_table::parquet_part::schema;
    use crate::inference_table::wal::tests::record;
    use crate::inference_table::wal::{encode_frame, segment_path, CLOSED_SUFFIX, OPEN_SUFFIX};
    use arrow::array::AsArray;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::path::PathBuf;

    const DAY_MS: i64 = 86_400_000;

    fn table() -> PathBuf {
        let t = std::env::temp_dir().join(format!("keel-compact-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(wal_dir(&t)).unwrap();
        t
    }

    fn write_segment(table: &Path, id: &str, suffix: &str, recs: &[InferenceRecord]) -> PathBuf {
        let mut buf = Vec::new();
        for r in recs {
            encode_frame(r, &mut buf).unwrap();
        }
        let p = segment_path(table, id, suffix);
        fs::write(&p, buf).unwrap();
        p
    }

    /// Every request id in the table's visible parts (as readers list them).
    fn ids_in_table(table: &Path) -> Vec<String> {
        let mut ids = Vec::new();
        for d in fs::read_dir(table).unwrap() {
            let d = d.unwrap().path();
            let name = d.file_name().unwrap().to_str().unwrap().to_string();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            for f in fs::read_dir(&d).unwrap() {
                let f = f.unwrap().path();
                if f.file_name().unwrap().to_str().unwrap().starts_with('.') {
                    continue;
                }
                let reader = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(&f).unwrap()).unwrap();
                assert_eq!(reader.schema().fields(), schema().fields());
                for b in reader.build().unwrap() {
                    let b = b.unwrap();
                    ids.extend(b.column(0).as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
                }
            }
        }
        ids.sort();
        ids
    }

    fn sorted_ids(recs: &[InferenceRecord]) -> Vec<String> {
        let mut v: Vec<String> = recs.iter().map(|r| r.databricks_request_id.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn replay_writes_open_and_closed_segments_with_torn_tails() {
        let t = table();
        let base = 1_700_000_000_000;
        let a: Vec<_> = (0..4).map(|i| record(i, base + i as i64)).collect();
        // A segment spanning midnight: two parts.
        let b: Vec<_> = (4..9).map(|i| record(i, base + DAY_MS * (i as i64 % 2))).collect();
        write_segment(&t, "0001-a", CLOSED_SUFFIX, &a);
        let open = write_segment(&t, "0002-b", OPEN_SUFFIX, &b);
        // The open one was being appended to when the process died: half a frame at the end.
        let mut tail = Vec::new();
        encode_frame(&record(99, base), &mut tail).unwrap();
        let mut bytes = fs::read(&open).unwrap();
        bytes.extend_from_slice(&tail[..tail.len() / 2]);
        fs::write(&open, bytes).unwrap();

        // Without open segments (a running writer owns them) only the closed one goes.
        let c = compact_all(&t, false).unwrap();
        assert_eq!((c.records, c.written, c.parts), (4, 4, 1));
        let c = compact_all(&t, true).unwrap();
        assert_eq!((c.records, c.written, c.parts), (5, 5, 2));
        assert_eq!(c.torn_bytes, tail.len() / 2);
        assert!(list_segments(&t, true).unwrap().is_empty());
        let mut all = a.clone();
        all.extend(b);
        assert_eq!(ids_in_table(&t), sorted_ids(&all));
        let _ = fs::remove_dir_all(&t);
    }

    #[test]
    fn exactly_once_when_a_crash_falls_between_rename_and_delete() {
        let t = table();
        let base = 1_700_000_000_000;
        let recs: Vec<_> = (0..6).map(|i| record(i, base + DAY_MS * (i as i64 % 2))).collect();
        let seg = write_segment(&t, "0001-x", CLOSED_SUFFIX, &recs);
        let saved = fs::read(&seg).unwrap();
        compact_segment(&t, "0001-x", &seg).unwrap();
        assert_eq!(ids_in_table(&t), sorted_ids(&recs));

        // Crash after both parts were renamed, before the segment was deleted.
        fs::write(&seg, &saved).unwrap();
        let c = compact_all(&t, true).unwrap();
        assert_eq!((c.records, c.written, c.parts), (6, 0, 0));
        assert_eq!(ids_in_table(&t), sorted_ids(&recs), "no duplicates");

        // Crash after the first day's part was renamed, before the second day's: only the
        // missing part is written.
        fs::write(&seg, &saved).unwrap();
        let second = part_path(&t, recs[1].date_days(), "0001-x");
        fs::remove_file(&second).unwrap();
        let c = compact_all(&t, true).unwrap();
        assert_eq!((c.written, c.parts), (3, 1));
        assert_eq!(ids_in_table(&t), sorted_ids(&recs));
        assert!(list_segments(&t, true).unwrap().is_empty());
        let _ = fs::remove_dir_all(&t);
    }
}
