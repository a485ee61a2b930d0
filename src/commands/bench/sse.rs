//! A push parser for server-sent events (`text/event-stream`), fed raw byte chunks as
//! they arrive: lines may be split anywhere across reads, even inside a UTF-8 character.
//! Only the `data` field matters here; an event is the `data` lines joined with `\n`,
//! dispatched at the blank line that ends it (or at the end of the stream).

#[derive(Default)]
pub(crate) struct SseParser {
    /// Bytes of the line not yet ended by `\n`.
    line: Vec<u8>,
    /// `data` lines of the event being read, joined with `\n`.
    data: Option<String>,
}

impl SseParser {
    /// Feeds one chunk; returns the data of every event it completed, in order.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut events);
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// The end of the stream: an unterminated last line and event still count.
    pub(crate) fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut events);
        }
        events.extend(self.data.take());
        events
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<String>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment (keep-alive)
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        if field != b"data" {
            return; // `event`, `id`, `retry`: unused
        }
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let value = String::from_utf8_lossy(value);
        match &mut self.data {
            Some(d) => {
                d.push('\n');
                d.push_str(&value);
            }
            None => self.data = Some(value.into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    fn feed_all(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn whole_events() {
        let s = b"data: {\"a\":1}\n\ndata: [DONE]\n\n";
        assert_eq!(feed_all(&[s]), vec!["{\"a\":1}", "[DONE]"]);
    }

    #[test]
    fn split_at_every_byte_gives_the_same_events() {
        let s = "data: {\"text\":\"héllo 世界\"}\r\n\r\n: keep-alive\n\nevent: x\ndata: a\ndata: b\n\ndata: [DONE]\n\n";
        let whole = feed_all(&[s.as_bytes()]);
        assert_eq!(whole, vec!["{\"text\":\"héllo 世界\"}", "a\nb", "[DONE]"]);
        let bytes = s.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(feed_all(&[&bytes[..cut], &bytes[cut..]]), whole, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed_all(&singles), whole);
    }

    #[test]
    fn split_inside_a_utf8_character() {
        let s = "data: 世\n\n".as_bytes();
        // "世" is three bytes at 6..9; cut after its first byte.
        let mut p = SseParser::default();
        assert!(p.feed(&s[..7]).is_empty());
        assert_eq!(p.feed(&s[7..]), vec!["世"]);
    }

    #[test]
    fn unterminated_last_event_counts_at_finish() {
        assert_eq!(feed_all(&[b"data: x\n\ndata: [DONE]"]), vec!["x", "[DONE]"]);
        assert!(feed_all(&[b""]).is_empty());
    }
}
