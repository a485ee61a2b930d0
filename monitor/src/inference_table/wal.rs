//! The write-ahead log of an inference table: segments under `<table>/_wal/`, each a
//! sequence of framed records `[len: u32 LE][crc32(payload): u32 LE][payload]`, the
//! payload being one [`InferenceRecord`] as JSON.
//!
//! A segment is named after its id, `<unix_ms:013>-<uuid>` (unique forever, so the
//! Parquet parts named after it are too), and is `<id>.open` while it is appended to,
//! `<id>.wal` once closed (fsynced, complete). Both are replayed after a crash.
//!
//! Invariants: frames are only appended; a frame is valid when its header and payload
//! are complete and the CRC matches. Decoding stops at the first invalid frame — a torn
//! tail (the process died in the middle of a write, or power was lost before fsync) is
//! ignored, never misread as records. Cost: one `write` per batch of records (group
//! commit); decoding reads the whole segment, whose size the writer bounds.

use super::record::InferenceRecord;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of a frame header: length and CRC.
pub const FRAME_HEADER: usize = 8;
/// Suffix of the segment being appended to.
pub const OPEN_SUFFIX: &str = "open";
/// Suffix of a closed (complete, fsynced) segment.
pub const CLOSED_SUFFIX: &str = "wal";

/// A fresh segment id: creation time (so ids sort in creation order) and a UUID (so
/// ids never repeat, across restarts and clock steps alike).
pub fn new_segment_id() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{ms:013}-{}", uuid::Uuid::new_v4().simple())
}

/// Appends the frame of `record` to `buf`.
pub fn encode_frame(record: &InferenceRecord, buf: &mut Vec<u8>) -> io::Result<()> {
    let payload = serde_json::to_vec(record).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a record over 4 GiB cannot be logged"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(())
}

/// What a segment holds: its valid records, and how many bytes at the end were not a
/// valid frame (a torn tail; 0 for a cleanly closed segment).
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<InferenceRecord>,
    pub torn_bytes: usize,
    /// Frames whose CRC matched but whose JSON did not parse (a bug, never a crash
    /// artefact); they are skipped.
    pub undecodable: usize,
}

/// Decodes the frames of a segment's bytes, stopping at the first invalid one.
pub fn decode_frames(bytes: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + FRAME_HEADER) else { break };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = at + FRAME_HEADER;
        let Some(payload) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice(payload) {
            Ok(r) => out.records.push(r),
            Err(_) => out.undecodable += 1,
        }
        at = start + len;
    }
    out.torn_bytes = bytes.len() - at;
    out
}

/// The `_wal/` directory of a table.
pub fn wal_dir(table: &Path) -> PathBuf {
    table.join("_wal")
}

/// A segment's path with the given suffix.
pub fn segment_path(table: &Path, id: &str, suffix: &str) -> PathBuf {
    wal_dir(table).join(format!("{id}.{suffix}"))
}

/// Segments in `_wal/` (both open and closed when `include_open`), oldest first, as
/// `(id, path)`.
pub fn list_segments(table: &Path, include_open: bool) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let dir = wal_dir(table);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let (Some(stem), Some(ext)) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
        else {
            continue;
        };
        if stem.starts_with('.') {
            continue;
        }
        if ext == CLOSED_SUFFIX || (include_open && ext == OPEN_SUFFIX) {
            out.push((stem.to_string(), path.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// fsyncs a directory, so that a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::inference_table::record::RequestMetadata;

    pub(crate) fn record(i: usize, ts: i64) -> InferenceRecord {
        InferenceRecord {
            databricks_request_id: format!("req-{i}"),
            client_request_id: (i % 2 == 0).then(|| format!("client-{i}")),
            timestamp_ms: ts,
            status_code: if i % 5 == 4 { 400 } else { 200 },
            execution_time_ms: 10 + i as i64,
            sampling_fraction: 1.0,
            request: format!("{{\"prompt\": \"p{i}\"}}"),
            response: format!("{{\"choices\": [{{\"text\": \"r{i} \\u00e9\"}}]}}"),
            request_metadata: RequestMetadata {
                endpoint_name: "default".into(),
                model_name: Some("tiny".into()),
                model_version: (i % 3 == 0).then(|| "3".into()),
                served_entity_name: Some("tiny-3".into()),
                response_mean_logprob: (i % 5 != 4).then_some(-0.25 * i as f64),
            },
            prompt_tokens: (i % 5 != 4).then_some(i as i32),
            completion_tokens: (i % 5 != 4).then_some(2 * i as i32),
            ttft_ms: (i % 5 != 4).then_some(i as i64),
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let recs: Vec<_> = (0..7).map(|i| record(i, 1_700_000_000_000 + i as i64)).collect();
        for r in &recs {
            encode_frame(r, &mut buf).unwrap();
        }
        let d = decode_frames(&buf);
        assert_eq!(d.records, recs);
        assert_eq!((d.torn_bytes, d.undecodable), (0, 0));
    }

    #[test]
    fn a_torn_tail_is_ignored_at_every_cut() {
        let mut buf = Vec::new();
        let recs: Vec<_> = (0..3).map(|i| record(i, 1_700_000_000_000)).collect();
        let mut ends = Vec::new();
        for r in &recs {
            encode_frame(r, &mut buf).unwrap();
            ends.push(buf.len());
        }
        // Cut anywhere: exactly the frames wholly before the cut survive.
        for cut in 0..=buf.len() {
            let d = decode_frames(&buf[..cut]);
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(d.records, recs[..whole], "cut at {cut}");
            assert_eq!(d.torn_bytes, cut - if whole == 0 { 0 } else { ends[whole - 1] });
        }
        // A flipped byte in the second payload: the first record survives, nothing after.
        let mut bad = buf.clone();
        bad[ends[0] + FRAME_HEADER + 3] ^= 0x40;
        let d = decode_frames(&bad);
        assert_eq!(d.records, recs[..1]);
        assert_eq!(d.torn_bytes, buf.len() - ends[0]);
        // Garbage with a huge length field is not a frame either.
        let d = decode_frames(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3]);
        assert!(d.records.is_empty());
        assert_eq!(d.torn_bytes, 11);
    }

    #[test]
    fn segment_ids_sort_by_creation_and_are_unique() {
        let a = new_segment_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_segment_id();
        assert!(a < b, "{a} {b}");
        assert_ne!(new_segment_id(), new_segment_id());
    }
}
