//! The loop of a batch job: rows in, through the continuous-batching engine, results
//! out as checkpoint parts in input order.
//!
//! Invariants: at most `window` (2 × `max_num_seqs`) requests are in flight and, while
//! rows remain, never fewer than `max_num_seqs`, so the engine's running batch stays full
//! and its waiting queue is never empty. Rows finish in any order; results wait in a map
//! until every row before them has finished, then join the part being filled, so parts
//! are contiguous and in order. A part is written when it has `part_rows` rows or
//! [`PART_EVERY`] has passed, which bounds the work a kill can lose. Input record
//! batches are kept only from the first row not yet in a part on, and rows are read at
//! most a fixed lookahead past it, so memory stays bounded whatever the input. A bad row
//! becomes its own error result and the job goes on; only input, disk and engine failures
//! end it.

use super::input::{Shard, ShardReader, BATCH_ROWS};
use super::output::{build_batch, to_i32, ModelIdentity, RowResult};
use super::parts::Parts;
use super::progress::Progress;
use super::prompt::{normalize_text, value_at, PromptBuilder};
use anyhow::{Context, Result};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use keel_runtime::engine::{
    check_request, EngineHandle, FinishReason, GenerationRequest, RequestStream, SubmitError, TokenEvent,
};
use keel_runtime::sampling::SamplingParams;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A part is written at least this often while finished rows wait.
pub const PART_EVERY: Duration = Duration::from_secs(30);

/// Longest wait for an event before the loop checks the engine, the part timer and the
/// progress line again.
const WAIT_AT_MOST: Duration = Duration::from_millis(50);

/// Failed rows reported one by one on stderr; later ones only in the `error` column.
const ERRORS_SHOWN: u64 = 10;

/// What stays fixed over a job.
pub struct Job<'a> {
    pub engine: &'a EngineHandle,
    pub prompts: &'a PromptBuilder,
    pub params: SamplingParams,
    pub shard: Shard,
    pub input_schema: SchemaRef,
    pub output_schema: SchemaRef,
    pub model: ModelIdentity,
    /// Column whose value names a row in messages.
    pub id_index: Option<usize>,
    pub window: usize,
    pub part_rows: usize,
}

/// A shard-filtered input batch, its first shard index and its text column normalized.
struct InputBatch {
    first: u64,
    batch: RecordBatch,
    text: ArrayRef,
}

impl InputBatch {
    fn end(&self) -> u64 {
        self.first + self.batch.num_rows() as u64
    }
}

struct InFlight {
    index: u64,
    stream: RequestStream,
    text: String,
    /// An event taken while waiting (`State::wait`), handled before the stream's next.
    held: Option<TokenEvent>,
    /// The engine closed the stream: no event follows the held ones.
    closed: bool,
}

/// SplitMix64: a row's sampling seed from the job seed and its global index, so sampled
/// runs are reproducible across shards and resumes.
fn row_seed(seed: u64, global: u64) -> u64 {
    let mut z = seed ^ global.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct State<'a> {
    job: &'a Job<'a>,
    /// Input from `next_write` on.
    pending: VecDeque<InputBatch>,
    /// Finished rows not yet in `ready`.
    results: BTreeMap<u64, RowResult>,
    /// Finished rows `next_write..next_write + ready.len()`, the part being filled.
    ready: Vec<RowResult>,
    next_write: u64,
    next_submit: u64,
    in_flight: Vec<InFlight>,
    last_part: Instant,
}

impl State<'_> {
    fn pending_end(&self) -> u64 {
        self.pending.back().map_or(self.next_write, InputBatch::end)
    }

    fn locate(&self, index: u64) -> Option<(&InputBatch, usize)> {
        let b = self.pending.iter().rev().find(|b| b.first <= index && index < b.end())?;
        Some((b, (index - b.first) as usize))
    }

    fn row_name(&self, index: u64) -> String {
        let global = self.job.shard.global_of(index);
        match (self.job.id_index, self.locate(index)) {
            (Some(i), Some((b, row))) => {
                format!("row {global} ({} = {})", b.batch.schema().field(i).name(), value_at(b.batch.column(i), row))
            }
            _ => format!("row {global}"),
        }
    }

    fn finish_row(&mut self, index: u64, r: RowResult, progress: &mut Progress) {
        if let Some(e) = &r.error {
            if progress.totals.errors < ERRORS_SHOWN {
                eprintln!("batch: {}: {e}", self.row_name(index));
            } else if progress.totals.errors == ERRORS_SHOWN {
                eprintln!("batch: more rows failed; see the error column");
            }
        }
        let tokens = |v: Option<i32>| v.map_or(0, |n| n.max(0) as u64);
        let (p, c) = if r.error.is_none() { (tokens(r.prompt_tokens), tokens(r.completion_tokens)) } else { (0, 0) };
        progress.row_done(p, c, r.error.is_some());
        self.results.insert(index, r);
    }

    /// Builds and submits the prompt of row `next_submit`. False when the engine queue is
    /// full (try again later).
    fn submit_next(&mut self, progress: &mut Progress) -> Result<bool> {
        let index = self.next_submit;
        let job = self.job;
        let tok = job.engine.tokenizer();
        let ctx = job.engine.model_config().max_position_embeddings;
        let Some((b, row)) = self.locate(index) else { anyhow::bail!("internal: row {index} is not buffered") };
        let ids = match job.prompts.build(tok, &b.batch, &b.text, row) {
            Ok(ids) => ids,
            Err(e) => {
                self.next_submit += 1;
                self.finish_row(index, RowResult::failed(e, None), progress);
                return Ok(true);
            }
        };
        // A prompt that fits gets at most the rest of the context, not an error.
        let mut params = job.params.clone();
        params.max_tokens = params.max_tokens.min(ctx.saturating_sub(ids.len())).max(1);
        if params.temperature > 0.0 {
            params.seed = Some(row_seed(params.seed.unwrap_or(0), job.shard.global_of(index)));
        }
        let n = ids.len();
        if let Err(e) = check_request(job.engine.model_config(), &ids, &params) {
            self.next_submit += 1;
            self.finish_row(index, RowResult::failed(e.to_string(), Some(n)), progress);
            return Ok(true);
        }
        match job.engine.submit(GenerationRequest { prompt_ids: ids, params, priority: 0 }) {
            Ok(stream) => {
                self.next_submit += 1;
                self.in_flight.push(InFlight { index, stream, text: String::new(), held: None, closed: false });
                Ok(true)
            }
            Err(SubmitError::QueueFull(_)) => Ok(false),
            Err(SubmitError::Invalid(e)) => {
                self.next_submit += 1;
                self.finish_row(index, RowResult::failed(e.to_string(), Some(n)), progress);
                Ok(true)
            }
            Err(SubmitError::Stopped) => anyhow::bail!("the engine stopped"),
        }
    }

    /// Collects the events of every request in flight; true if any arrived.
    fn poll(&mut self, progress: &mut Progress) -> bool {
        let mut progressed = false;
        let mut i = 0;
        while i < self.in_flight.len() {
            let mut done = None;
            let f = &mut self.in_flight[i];
            while let Some(ev) = f.held.take().or_else(|| f.stream.try_next()) {
                progressed = true;
                match ev {
                    TokenEvent::Token { text, .. } => f.text.push_str(&text),
                    TokenEvent::Finished { text, reason, usage, .. } => {
                        f.text.push_str(&text);
                        let p = Some(to_i32(usage.prompt_tokens));
                        done = Some(match reason {
                            FinishReason::Stop | FinishReason::Length => RowResult {
                                generated_text: Some(std::mem::take(&mut f.text)),
                                prompt_tokens: p,
                                completion_tokens: Some(to_i32(usage.completion_tokens)),
                                finish_reason: Some(reason.as_str()),
                                error: None,
                            },
                            FinishReason::Aborted | FinishReason::Error => RowResult {
                                error: Some(format!("generation ended with {}", reason.as_str())),
                                prompt_tokens: p,
                                ..RowResult::default()
                            },
                        });
                        break;
                    }
                    TokenEvent::Error { message } => {
                        done = Some(RowResult::failed(message, None));
                        break;
                    }
                }
            }
            if done.is_none() && f.closed {
                done = Some(RowResult::failed("the engine closed the request before it finished", None));
            }
            match done {
                Some(r) => {
                    let f = self.in_flight.swap_remove(i);
                    self.finish_row(f.index, r, progress);
                }
                None => i += 1,
            }
        }
        while let Some(r) = self.results.remove(&(self.next_write + self.ready.len() as u64)) {
            self.ready.push(r);
        }
        progressed
    }

    /// Blocks until a request in flight has an event (held for `poll`) or `at_most` has
    /// passed; false at once when none is in flight. The streams are awaited, not polled:
    /// a 1 ms poll loop took a core from the engine's threads ~1000 times a second.
    fn wait(&mut self, waiter: &tokio::runtime::Runtime, at_most: Duration) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let nexts =
            self.in_flight.iter_mut().enumerate().map(|(i, f)| Box::pin(async move { (i, f.stream.next().await) }));
        // A `recv` dropped unfinished loses nothing (tokio's mpsc is cancel-safe).
        let got = waiter.block_on(async { tokio::time::timeout(at_most, futures::future::select_all(nexts)).await });
        // (The other `recv`s, still borrowing the streams, go with the rest of `got`.)
        if let Some((i, ev)) = got.ok().map(|(first, _, _)| first) {
            let f = &mut self.in_flight[i];
            match ev {
                Some(ev) => f.held = Some(ev),
                None => f.closed = true,
            }
        }
        true
    }

    /// Writes the finished rows `next_write..` as one part and drops their input.
    fn write_part(&mut self, parts: &mut Parts) -> Result<()> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let (start, end) = (self.next_write, self.next_write + self.ready.len() as u64);
        let mut slices = Vec::new();
        for b in &self.pending {
            if b.end() <= start || b.first >= end {
                continue;
            }
            let from = start.max(b.first) - b.first;
            let to = end.min(b.end()) - b.first;
            slices.push(b.batch.slice(from as usize, (to - from) as usize));
        }
        let input = arrow::compute::concat_batches(&self.job.input_schema, &slices)?;
        let out = build_batch(&self.job.output_schema, &input, &self.ready, &self.job.model)?;
        parts.write(&self.job.output_schema, &out).context("writing a checkpoint part")?;
        self.next_write = end;
        self.ready.clear();
        while self.pending.front().is_some_and(|b| b.end() <= end) {
            self.pending.pop_front();
        }
        self.last_part = Instant::now();
        Ok(())
    }
}

/// Runs every remaining row of the shard through the engine into `parts`.
pub fn run(job: &Job<'_>, mut reader: ShardReader<'_>, parts: &mut Parts, progress: &mut Progress) -> Result<()> {
    let start = parts.done();
    let mut s = State {
        job,
        pending: VecDeque::new(),
        results: BTreeMap::new(),
        ready: Vec::new(),
        next_write: start,
        next_submit: start,
        in_flight: Vec::new(),
        last_part: Instant::now(),
    };
    let mut reader_done = false;
    let text_index = job.prompts.text_index();
    // Rows past the oldest unwritten one that may be read ahead (failed rows never enter
    // the engine, so the window alone would not bound memory).
    let lookahead = (4 * job.part_rows.max(BATCH_ROWS) + job.window) as u64;
    let waiter = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    loop {
        let mut progressed = false;
        while s.in_flight.len() < job.window && s.next_submit - s.next_write < lookahead {
            if s.next_submit >= s.pending_end() {
                if reader_done {
                    break;
                }
                match reader.next_batch()? {
                    Some((first, batch)) => {
                        anyhow::ensure!(
                            first == s.pending_end(),
                            "internal: input batch at {first}, expected {}",
                            s.pending_end()
                        );
                        let text = normalize_text(batch.column(text_index))?;
                        s.pending.push_back(InputBatch { first, batch, text });
                    }
                    None => reader_done = true,
                }
                continue;
            }
            if !s.submit_next(progress)? {
                break;
            }
            progressed = true;
        }
        progressed |= s.poll(progress);
        let all_done =
            reader_done && s.next_submit >= s.pending_end() && s.in_flight.is_empty() && s.results.is_empty();
        if all_done || s.ready.len() >= job.part_rows || (!s.ready.is_empty() && s.last_part.elapsed() >= PART_EVERY) {
            s.write_part(parts)?;
        }
        if all_done {
            return Ok(());
        }
        progress.tick();
        if !progressed {
            if !job.engine.is_alive() {
                anyhow::bail!("the engine stopped before every row finished");
            }
            if !s.wait(&waiter, WAIT_AT_MOST) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::row_seed;

    #[test]
    fn row_seeds_differ_by_row_and_job_seed() {
        assert_ne!(row_seed(0, 1), row_seed(0, 2));
        assert_ne!(row_seed(1, 1), row_seed(2, 1));
        assert_eq!(row_seed(7, 9), row_seed(7, 9));
    }
}
