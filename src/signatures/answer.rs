//! The way out: a tool call's signature is spliced into its id as the answer passes, JSON or
//! SSE. Nothing else of the answer changes, and only what must wait is held: the bytes of a
//! `"tool_calls"` array until it can be read whole, and in a stream, the first call's id
//! until its signature comes (a later event may carry it) or the call ends.

use std::ops::Range;
use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;

use super::carry;
use super::tool_calls::{Call, Read, read_array};
use crate::body::Edit;
use crate::rewrite;

const NEEDLE: &[u8] = b"\"tool_calls\"";

/// Built once: every piece of every Gemini 3 answer is searched for it.
static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(NEEDLE));

/// The most held at once. Past it the held bytes go on as they are: a first call's id goes
/// out without its signature, and the client's next request gets the sentinel for it.
pub const MAX_HOLD: usize = 256 * 1024;

/// Splices signatures into tool-call ids as an answer passes ([`Edit`]).
pub struct IdSplicer {
    /// The answer is an SSE stream: its first call's signature may come in a later event.
    stream: bool,
    /// Bytes not yet passed on: from a `"tool_calls"` not yet read whole, or from a first
    /// call's id that waits for its signature.
    held: Vec<u8>,
    /// In `held`: just after a `"tool_calls"` whose array has not been read.
    array_at: Option<usize>,
    /// In `held`: where the next look for `"tool_calls"` starts.
    scan: usize,
    /// In `held`: how far an incomplete array was read; it is read again only once a `]`
    /// has come after this.
    tried: usize,
    /// In `held`: how far a waiting first call's end has been looked for.
    looked: usize,
    /// The end of what was last passed on, for a `"tool_calls"` split between two pieces.
    tail: Vec<u8>,
    first: First,
    /// Past [`MAX_HOLD`]: everything passes as it is from then on.
    gave_up: bool,
}

/// The answer's first tool call, which is the one Gemini 3 signs.
enum First {
    Unseen,
    /// Its id (the span, quotes included, in `held`) waits for a later delta with its index
    /// to bring the signature.
    Waiting {
        index: u64,
        span: Range<usize>,
        id: String,
    },
    Settled,
}

impl IdSplicer {
    pub fn new(stream: bool) -> IdSplicer {
        IdSplicer {
            stream,
            held: Vec::new(),
            array_at: None,
            scan: 0,
            tried: 0,
            looked: 0,
            tail: Vec::new(),
            first: First::Unseen,
            gave_up: false,
        }
    }

    /// Reads every complete array in `held`, splices what it can, and settles a waiting
    /// first call whose end has come.
    fn advance(&mut self) {
        loop {
            if let Some(at) = self.array_at {
                if memchr::memchr(b']', &self.held[self.tried.max(at)..]).is_none() {
                    self.tried = self.held.len();
                    return;
                }
                match read_array(&self.held[at..]) {
                    Read::Incomplete => {
                        self.tried = self.held.len();
                        return;
                    }
                    Read::NotArray => {
                        self.array_at = None;
                        self.scan = at;
                    }
                    Read::Array(calls, end) => {
                        self.array_at = None;
                        self.scan = at + end;
                        let shift = self.splice(calls, at);
                        self.scan = self.scan.saturating_add_signed(shift);
                    }
                }
            }
            let next = FINDER.find(&self.held[self.scan..]).map(|f| self.scan + f);
            if next.is_none() {
                // A needle split at the end is found once the rest of it comes.
                self.scan = self
                    .scan
                    .max(self.held.len().saturating_sub(NEEDLE.len() - 1));
            }
            // Only what comes before the next array can end the first call: that array may
            // hold its signature.
            if self.first_has_ended(next.unwrap_or(self.held.len())) {
                self.first = First::Settled;
            }
            match next {
                Some(found) => self.array_at = Some(found + NEEDLE.len()),
                None => return,
            }
        }
    }

    /// Splices the signatures of an array's calls (spans relative to `at`) into their ids,
    /// and the first call's, if it was waiting for one. Returns how far the bytes after the
    /// array moved.
    fn splice(&mut self, calls: Vec<Call>, at: usize) -> isize {
        let mut edits: Vec<(Range<usize>, Bytes)> = Vec::new();
        for call in calls {
            let signature = call.signature();
            if let First::Waiting { index, span, id } = &self.first {
                match (call.index == Some(*index), call.id.is_some(), signature) {
                    // Its signature, in a later delta.
                    (true, false, Some(signature)) => {
                        if let Some(carried) = carry(id, signature) {
                            edits.push((span.clone(), rewrite::json_string(&carried)));
                        }
                        self.first = First::Settled;
                        continue;
                    }
                    // Another call has begun: the first one ended unsigned.
                    (false, true, _) => self.first = First::Settled,
                    _ => {}
                }
            }
            let (Some(span), Some(id)) = (call.span(at), call.id.as_deref()) else {
                continue;
            };
            let id = id.to_owned();
            match (signature, &self.first) {
                (Some(signature), _) => {
                    if let Some(carried) = carry(&id, signature) {
                        edits.push((span, rewrite::json_string(&carried)));
                    }
                    self.first = First::Settled;
                }
                (None, First::Unseen) if self.stream => {
                    let index = call.index.unwrap_or(0);
                    self.first = First::Waiting { index, span, id };
                    self.looked = 0;
                }
                (None, First::Unseen) => self.first = First::Settled,
                (None, _) => {}
            }
        }
        // From the last edit back, so that each range still means what it meant.
        edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
        let mut shift = 0isize;
        for (range, text) in edits {
            shift += text.len() as isize - range.len() as isize;
            if let First::Waiting { span, .. } = &mut self.first
                && span.start >= range.end
            {
                let moved = text.len() as isize - range.len() as isize;
                *span =
                    span.start.saturating_add_signed(moved)..span.end.saturating_add_signed(moved);
            }
            self.held.splice(range, text);
        }
        shift
    }

    /// Whether a waiting first call's stream has said, before `limit`, that it is over:
    /// `[DONE]`, or a finish reason in an event that has fully come.
    fn first_has_ended(&mut self, limit: usize) -> bool {
        let First::Waiting { span, .. } = &self.first else {
            return false;
        };
        let start = self.looked.max(span.end);
        let Some(after) = self.held.get(start..limit) else {
            return false;
        };
        // `data: [DONE]`, or `data:[DONE]` (a space after the colon is optional in SSE), at
        // the start of a line: the same words in the model's text are inside a JSON string.
        let done = memmem::find_iter(after, b"[DONE]").any(|at| {
            let before = &self.held[..start + at];
            let field = before
                .strip_suffix(b"data: ")
                .or(before.strip_suffix(b"data:"));
            field.is_some_and(|line| matches!(line.last(), None | Some(b'\n' | b'\r')))
        });
        if done {
            return true;
        }
        // Looked at for good, but for a marker split at the end, or an event not yet whole.
        let mut looked = limit.saturating_sub(16);
        let mut from = 0;
        while let Some(found) = memmem::find(&after[from..], b"\"finish_reason\"") {
            let at = from + found + b"\"finish_reason\"".len();
            let value = after[at..].trim_ascii_start();
            let value = value.strip_prefix(b":").map(<[u8]>::trim_ascii_start);
            if value.is_some_and(|v| v.starts_with(b"\"")) {
                // The event's end: a blank line, whichever line ending the stream uses.
                let rest = &after[at..];
                let ends = [&b"\n\n"[..], b"\n\r\n", b"\r\r"];
                if ends.iter().any(|end| memmem::find(rest, end).is_some()) {
                    return true;
                }
                looked = looked.min(start + from + found);
            }
            from = at;
        }
        self.looked = looked.max(start);
        false
    }

    /// Where the bytes that may go on now end.
    fn hold_from(&self) -> usize {
        match (&self.first, self.array_at) {
            (First::Waiting { span, .. }, _) => span.start,
            (_, Some(at)) => at.saturating_sub(NEEDLE.len()),
            _ => self.held.len(),
        }
    }

    /// Gives up holding: past the bound, everything passes as it is.
    fn give_up(&mut self) -> Bytes {
        self.gave_up = true;
        self.first = First::Settled;
        self.array_at = None;
        std::mem::take(&mut self.held).into()
    }
}

impl Edit for IdSplicer {
    fn edit(&mut self, bytes: Bytes) -> Bytes {
        if self.gave_up {
            return bytes;
        }
        let mut out = Bytes::new();
        if self.held.is_empty() {
            // Most pieces hold no tool call: a look, and they go on untouched.
            let mut window = std::mem::take(&mut self.tail);
            let before = window.len();
            window.extend_from_slice(&bytes[..bytes.len().min(NEEDLE.len() - 1)]);
            // A needle that began in the last piece is held from this piece's start.
            let found = (FINDER.find(&window))
                .map(|f| (f.saturating_sub(before), f + NEEDLE.len() - before))
                .or_else(|| FINDER.find(&bytes).map(|f| (f, f + NEEDLE.len())));
            let Some((from, after)) = found else {
                window.truncate(before);
                self.keep_tail(window, &bytes);
                return bytes;
            };
            out = bytes.slice(..from);
            self.held.extend_from_slice(&bytes[from..]);
            self.array_at = Some(after - from);
            self.scan = 0;
        } else {
            self.held.extend_from_slice(&bytes);
        }
        self.advance();
        if self.held.len() > MAX_HOLD {
            let held = self.give_up();
            return [out, held].concat().into();
        }
        let from = self.hold_from();
        // All of it, usually: then the buffer itself goes on, uncopied.
        let released: Vec<u8> = match from == self.held.len() {
            true => std::mem::take(&mut self.held),
            false => self.held.drain(..from).collect(),
        };
        self.scan = self.scan.saturating_sub(from);
        self.tried = self.tried.saturating_sub(from);
        self.looked = self.looked.saturating_sub(from);
        self.array_at = self.array_at.map(|a| a - from);
        if let First::Waiting { span, .. } = &mut self.first {
            *span = span.start - from..span.end - from;
        }
        if self.held.is_empty() {
            let before = std::mem::take(&mut self.tail);
            self.keep_tail(before, &released);
        }
        match out.is_empty() {
            true => released.into(),
            false => [&out[..], &released].concat().into(),
        }
    }

    /// The stream ended: a waiting id goes as it is.
    fn finish(&mut self) -> Bytes {
        self.first = First::Settled;
        self.array_at = None;
        std::mem::take(&mut self.held).into()
    }
}

impl IdSplicer {
    /// Keeps the last bytes passed on, after `before` (what was kept last time).
    fn keep_tail(&mut self, mut before: Vec<u8>, passed: &[u8]) {
        let keep = NEEDLE.len() - 1;
        if passed.len() >= keep {
            before.clear();
        }
        before.extend_from_slice(&passed[passed.len().saturating_sub(keep)..]);
        let excess = before.len().saturating_sub(keep);
        before.drain(..excess);
        self.tail = before;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "c2lnLUE=";

    fn carried(id: &str) -> String {
        carry(id, SIG).unwrap()
    }

    /// The output of `pieces` through a splicer, piece by piece.
    fn spliced(stream: bool, pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splicer = IdSplicer::new(stream);
        let mut out: Vec<Vec<u8>> = pieces
            .iter()
            .map(|p| splicer.edit(Bytes::copy_from_slice(p)).to_vec())
            .collect();
        out.push(splicer.finish().to_vec());
        out
    }

    fn whole(stream: bool, body: &[u8], split: usize) -> String {
        let pieces: Vec<&[u8]> = body.chunks(split.max(1)).collect();
        String::from_utf8(spliced(stream, &pieces).concat()).unwrap()
    }

    #[test]
    fn a_json_answer_gets_the_signature_in_the_id_and_nothing_else_changes() {
        let body = format!(
            r#"{{"choices":[{{"message":{{"content":"say \"tool_calls\": [","role":"assistant","tool_calls":[{{"extra_content":{{"google":{{"thought_signature":"{SIG}"}}}},"function":{{"arguments":"{{}}","name":"f"}},"id":"call_A","type":"function"}},{{"function":{{"arguments":"{{}}","name":"g"}},"id":"call_B","type":"function"}}]}}}}],"usage":{{}}}}"#
        );
        let expected = body.replacen("\"call_A\"", &format!("\"{}\"", carried("call_A")), 1);
        for split in [1, 3, 7, 12, 13, 64, body.len()] {
            assert_eq!(
                whole(false, body.as_bytes(), split),
                expected,
                "split {split}"
            );
        }
    }

    fn event(delta: &str, finish: &str) -> String {
        format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    }

    #[test]
    fn a_stream_gets_the_signature_from_the_ids_event_or_a_later_one() {
        let together = [
            event(r#"{"role":"assistant","content":""}"#, "null"),
            event(&format!(r#"{{"tool_calls":[{{"index":0,"id":"call_S","type":"function","function":{{"name":"f","arguments":"{{}}"}},"extra_content":{{"google":{{"thought_signature":"{SIG}"}}}}}},{{"index":1,"id":"call_T","function":{{"name":"g","arguments":"{{}}"}}}}]}}"#), "null"),
            event("{}", r#""tool_calls""#),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        let later = [
            event(r#"{"role":"assistant","content":""}"#, "null"),
            event(r#"{"tool_calls":[{"index":0,"id":"call_S","type":"function","function":{"name":"f","arguments":""}}]}"#, "null"),
            event(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}"#, "null"),
            event(&format!(r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":"\"Paris\"}}"}},"extra_content":{{"google":{{"thought_signature":"{SIG}"}}}}}}]}}"#), "null"),
            event("{}", r#""tool_calls""#),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        for body in [&together, &later] {
            let expected = body.replacen("\"call_S\"", &format!("\"{}\"", carried("call_S")), 1);
            for split in [1, 5, 12, 40, body.len()] {
                assert_eq!(
                    whole(true, body.as_bytes(), split),
                    expected,
                    "split {split}"
                );
            }
        }
        // Event by event: what comes before the waiting id goes on at once; the id and what
        // follows wait for the signature, and then go together.
        let events: Vec<String> = later.split_inclusive("\n\n").map(str::to_owned).collect();
        let pieces: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
        let out = spliced(true, &pieces);
        assert_eq!(out[0], events[0].as_bytes());
        let id_at = events[1].find("\"call_S\"").unwrap();
        assert_eq!(out[1], &events[1].as_bytes()[..id_at]);
        assert!(out[2].is_empty());
        assert!(
            String::from_utf8_lossy(&out[3]).starts_with(&format!("\"{}\"", carried("call_S")))
        );
        assert_eq!(out[4], events[4].as_bytes());
    }

    #[test]
    fn an_unsigned_first_call_goes_as_it_is_when_it_ends_or_past_the_bound() {
        let body = [
            event(r#"{"tool_calls":[{"index":0,"id":"call_U","function":{"name":"f","arguments":"{}"}}]}"#, "null"),
            event("{}", r#""tool_calls""#),
        ]
        .concat();
        let events: Vec<&str> = body.split_inclusive("\n\n").collect();
        let out = spliced(true, &[events[0].as_bytes(), events[1].as_bytes()]);
        // Held until the finish reason's event has come, then all of it.
        assert_eq!(out[1], body.as_bytes()[body.find("\"call_U\"").unwrap()..]);
        assert_eq!(out.concat(), body.as_bytes());
        // The same with CRLF or CR line endings, and `[DONE]` without the space.
        for eol in ["\r\n", "\r"] {
            let body = body.replace("\n", eol);
            let events: Vec<&str> = body.split_inclusive(&eol.repeat(2)).collect();
            let out = spliced(true, &[events[0].as_bytes(), events[1].as_bytes()]);
            assert_eq!(
                out[1],
                body.as_bytes()[body.find("\"call_U\"").unwrap()..],
                "{eol:?}"
            );
            let done = format!("data:[DONE]{eol}{eol}");
            let out = spliced(true, &[events[0].as_bytes(), done.as_bytes()]);
            assert!(out[1].starts_with(b"\"call_U\""), "{eol:?}");
            // The same words in the model's text do not end it.
            let said = event(r#"{"content":"data: [DONE]"}"#, "null").replace("\n", eol);
            let out = spliced(true, &[events[0].as_bytes(), said.as_bytes()]);
            assert!(
                out[1].is_empty(),
                "{eol:?}: {:?}",
                String::from_utf8_lossy(&out[1])
            );
        }
        // The stream's end releases what waits.
        let out = spliced(true, &[events[0].as_bytes()]);
        assert_eq!(out.concat(), events[0].as_bytes());
        // An argument stream past the bound passes as it came.
        let mut long = vec![events[0].as_bytes().to_vec()];
        let chunk = event(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}]}"#,
            "null",
        );
        long.extend(std::iter::repeat_n(chunk.into_bytes(), MAX_HOLD / 100));
        let pieces: Vec<&[u8]> = long.iter().map(Vec::as_slice).collect();
        let out = spliced(true, &pieces);
        assert_eq!(out.concat(), long.concat());
        assert!(out.last().unwrap().is_empty() && !out[out.len() - 2].is_empty());
    }

    #[test]
    fn answers_without_tool_calls_pass_piece_by_piece_untouched() {
        let body = event(r#"{"content":"the word tool_calls and \"tool_ca"}"#, "null").repeat(50);
        for split in [1, 11, 12, 100] {
            let pieces: Vec<&[u8]> = body.as_bytes().chunks(split).collect();
            let out = spliced(true, &pieces);
            for (piece, went) in pieces.iter().zip(&out) {
                assert_eq!(*piece, went.as_slice(), "split {split}");
            }
        }
    }
}
