//! Stop strings: matching a request's `stop` list on decoded text while it streams.
//!
//! The caller feeds [`StopMatcher::push`] the text deltas it detokenizes, in order. Each
//! call returns the text that is now safe to emit: everything except the longest
//! suffix that could still grow into a stop string, which is held back. When a stop
//! string completes, the outcome carries the text up to where that stop string begins
//! and `stopped == true`; the stop string itself and anything after it are never
//! emitted. When generation ends for another reason, [`StopMatcher::finish`] returns
//! the held-back text.
//!
//! Invariants:
//! - Concatenating every emitted `text` (plus `finish()` when no stop matched) gives the
//!   full text truncated right before the *first* stop occurrence, whatever the delta
//!   boundaries. "First" is the occurrence that completes first — the moment the text
//!   first contains a stop string, which is when generation would halt — and among
//!   occurrences completing at the same byte the one starting earliest (the longest).
//!   With stops `["abcd", "bc"]` the text `"xabcd"` yields `"xa"`.
//! - Held-back text is a proper prefix of some stop string, so it is shorter than the
//!   longest stop string; with no stop strings nothing is held.
//! - Emitted text always ends on a `char` boundary: stop strings are whole UTF-8
//!   strings, so a byte-level match or partial match starts on a character boundary.
//! - No input panics. Empty stop strings are ignored (validation rejects them earlier);
//!   pushes after a stop or after `finish` emit nothing.
//!
//! Cost: one KMP automaton per stop string, so each pushed byte costs amortised O(1)
//! per stop string, independent of how long the text or the stop strings are.

/// What a [`StopMatcher::push`] lets through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text safe to emit now (possibly empty).
    pub text: String,
    /// True once a stop string matched: `text` ends right before it, and the request
    /// should finish with `finish_reason: "stop"`.
    pub stopped: bool,
}

/// One stop string's KMP matcher over bytes.
#[derive(Clone, Debug)]
struct Pattern {
    bytes: Vec<u8>,
    /// `fail[i]`: length of the longest proper border of `bytes[..=i]`.
    fail: Vec<usize>,
    /// Length of the longest prefix of `bytes` that is a suffix of the text so far.
    matched: usize,
}

impl Pattern {
    fn new(s: &str) -> Pattern {
        let bytes = s.as_bytes().to_vec();
        let mut fail = vec![0usize; bytes.len()];
        let mut k = 0;
        for i in 1..bytes.len() {
            while k > 0 && bytes[i] != bytes[k] {
                k = fail[k - 1];
            }
            if bytes[i] == bytes[k] {
                k += 1;
            }
            fail[i] = k;
        }
        Pattern { bytes, fail, matched: 0 }
    }

    /// Feeds one byte; true when the whole pattern now ends at this byte.
    fn advance(&mut self, b: u8) -> bool {
        let mut k = self.matched;
        if k == self.bytes.len() {
            k = self.fail[k - 1];
        }
        while k > 0 && self.bytes[k] != b {
            k = self.fail[k - 1];
        }
        if self.bytes[k] == b {
            k += 1;
        }
        self.matched = k;
        k == self.bytes.len()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Streaming,
    Stopped,
    Finished,
}

/// Streaming matcher for one request's stop strings. See the module docs.
#[derive(Clone, Debug)]
pub struct StopMatcher {
    patterns: Vec<Pattern>,
    /// Text received but not yet emitted (the held-back suffix between pushes).
    pending: String,
    state: State,
    /// Index into `patterns` of the stop string that matched.
    matched: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            patterns: stops.iter().filter(|s| !s.is_empty()).map(|s| Pattern::new(s)).collect(),
            pending: String::new(),
            state: State::Streaming,
            matched: None,
        }
    }

    /// Feeds the next decoded text delta; returns what may be emitted now and whether a
    /// stop string matched. After a match (or [`finish`](Self::finish)) further pushes
    /// return empty text and the same `stopped` flag.
    pub fn push(&mut self, delta: &str) -> StopOutcome {
        if self.state != State::Streaming {
            return StopOutcome { text: String::new(), stopped: self.state == State::Stopped };
        }
        let base = self.pending.len();
        self.pending.push_str(delta);
        for (offset, b) in delta.bytes().enumerate() {
            // Every automaton sees every byte, so their states stay exact.
            let mut completed = false;
            for p in self.patterns.iter_mut() {
                completed |= p.advance(b);
            }
            if completed {
                // Of the stops ending at this byte, the longest starts earliest.
                let i = self.longest_completed();
                let end = base + offset + 1;
                let start = floor_char_boundary(&self.pending, end.saturating_sub(self.patterns[i].bytes.len()));
                self.pending.truncate(start);
                self.state = State::Stopped;
                self.matched = Some(i);
                return StopOutcome { text: std::mem::take(&mut self.pending), stopped: true };
            }
        }
        let held = self.patterns.iter().map(|p| p.matched).max().unwrap_or(0);
        // The held suffix starts with a stop string's first byte, hence on a char
        // boundary; flooring only guards that reasoning (holding more is always safe).
        let cut = floor_char_boundary(&self.pending, self.pending.len().saturating_sub(held));
        let rest = self.pending.split_off(cut);
        StopOutcome { text: std::mem::replace(&mut self.pending, rest), stopped: false }
    }

    /// Ends the stream without a stop match: returns the held-back text. Returns an
    /// empty string after a stop matched (its remainder is never emitted) or when
    /// called twice.
    pub fn finish(&mut self) -> String {
        if self.state != State::Streaming {
            return String::new();
        }
        self.state = State::Finished;
        std::mem::take(&mut self.pending)
    }

    /// True once a stop string has matched.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The stop string that matched, if any (vLLM's `stop_reason`).
    pub fn matched(&self) -> Option<&str> {
        let p = &self.patterns[self.matched?];
        std::str::from_utf8(&p.bytes).ok()
    }

    /// Number of bytes currently held back.
    pub fn held_len(&self) -> usize {
        self.pending.len()
    }

    /// Index of the longest pattern whose match ends at the current byte (at least one
    /// does when this is called; a pattern completing earlier would have stopped us).
    fn longest_completed(&self) -> usize {
        let mut best = 0;
        let mut best_len = 0;
        for (i, p) in self.patterns.iter().enumerate() {
            if p.matched == p.bytes.len() && p.bytes.len() > best_len {
                best = i;
                best_len = p.bytes.len();
            }
        }
        best
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Feeds `deltas` and returns everything emitted plus whether a stop matched.
    fn run(stop_list: &[String], deltas: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stop_list);
        let mut out = String::new();
        for d in deltas {
            let o = m.push(d);
            out.push_str(&o.text);
            if o.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    /// The specification, on the whole text: cut before the stop occurrence that
    /// completes first (ties: the one that starts first).
    fn reference(stop_list: &[String], text: &str) -> (String, bool) {
        let first = stop_list
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|start| (start + s.len(), start)))
            .min();
        match first {
            Some((_, start)) => (text[..start].to_string(), true),
            None => (text.to_string(), false),
        }
    }

    #[test]
    fn holds_back_a_possible_prefix_and_cuts_before_the_stop() {
        let mut m = StopMatcher::new(&stops(&["</s>"]));
        assert_eq!(m.push("Hello <"), StopOutcome { text: "Hello ".into(), stopped: false });
        assert_eq!(m.held_len(), 1);
        assert_eq!(m.push("/"), StopOutcome { text: "".into(), stopped: false });
        assert_eq!(m.push("s> tail"), StopOutcome { text: "".into(), stopped: true });
        assert!(m.is_stopped());
        assert_eq!(m.matched(), Some("</s>"));
        assert_eq!(m.push("more"), StopOutcome { text: "".into(), stopped: true });
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn a_false_start_is_released() {
        let mut m = StopMatcher::new(&stops(&["STOP"]));
        assert_eq!(m.push("ST").text, "");
        assert_eq!(m.push("ART").text, "START");
        assert_eq!(m.push("S").text, "");
        assert_eq!(m.finish(), "S");
        assert_eq!(m.matched(), None);
        assert_eq!(m.push("x"), StopOutcome::default());
    }

    #[test]
    fn the_stop_that_completes_first_wins() {
        let s = stops(&["abcd", "bc"]);
        assert_eq!(run(&s, &["xabcd"]), ("xa".into(), true));
        assert_eq!(run(&s, &["x", "a", "b", "c", "d"]), ("xa".into(), true));
        // Same end: the longer (earlier) one wins.
        let s = stops(&["c", "abc"]);
        assert_eq!(run(&s, &["xab", "c"]), ("x".into(), true));
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let s = stops(&["é!", "😀😀"]);
        let mut m = StopMatcher::new(&s);
        assert_eq!(m.push("café").text, "caf");
        assert_eq!(m.push("s 😀").text, "és ");
        let o = m.push("😀 bye");
        assert_eq!(o, StopOutcome { text: "".into(), stopped: true });
        assert_eq!(m.matched(), Some("😀😀"));
    }

    #[test]
    fn no_stops_pass_everything_through() {
        let mut m = StopMatcher::new(&stops(&["", ""]));
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.held_len(), 0);
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn overlapping_self_similar_stop() {
        // KMP fallback: "aab" inside "aaab".
        assert_eq!(run(&stops(&["aab"]), &["a", "a", "a", "b", "z"]), ("a".into(), true));
        // "xabab" completes at byte 5, before the overlapping "abab" ending at byte 7.
        assert_eq!(run(&stops(&["abab"]), &["xaba", "bab"]), ("x".into(), true));
        assert_eq!(run(&stops(&["abab"]), &["xaba", "a", "bab"]), ("xaba".into(), true));
    }

    /// Texts over a small alphabet of 1- to 4-byte characters, so stops occur often.
    fn alphabet_string(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!['a', 'b', 'é', '€', '😀']), 0..max)
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn emitted_text_is_independent_of_the_split(
            text in alphabet_string(40),
            stop_list in prop::collection::vec(alphabet_string(4), 0..4),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            // Split at random char boundaries (duplicates give empty deltas).
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            let mut points: Vec<usize> = cuts.iter().map(|c| boundaries[c.index(boundaries.len())]).collect();
            points.push(0);
            points.push(text.len());
            points.sort_unstable();
            let deltas: Vec<&str> = points.windows(2).map(|w| &text[w[0]..w[1]]).collect();

            let expected = reference(&stop_list, &text);
            prop_assert_eq!(run(&stop_list, &deltas), expected.clone());
            // And char by char, which must agree too.
            let chars: Vec<String> = text.chars().map(String::from).collect();
            let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
            prop_assert_eq!(run(&stop_list, &chars), expected);
        }

        #[test]
        fn held_text_is_a_proper_stop_prefix(
            text in alphabet_string(30),
            stop_list in prop::collection::vec(alphabet_string(4), 1..4),
        ) {
            let mut m = StopMatcher::new(&stop_list);
            let mut buf = [0u8; 4];
            for c in text.chars() {
                if m.push(c.encode_utf8(&mut buf)).stopped {
                    break;
                }
                let longest = stop_list.iter().map(String::len).max().unwrap_or(0);
                prop_assert!(m.held_len() < longest.max(1));
                let held = &m.pending;
                prop_assert!(held.is_empty() || stop_list.iter().any(|s| s.starts_with(held.as_str()) && s.len() > held.len()));
            }
        }
    }
}
