//! The edit of Claude's streams: Vertex's own `event: vertex_event` events go, every other
//! byte passes as it comes.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::body::Edit;

/// Drops Vertex's `event: vertex_event` events from an Anthropic SSE stream, chunk by chunk:
/// strict clients fail on an event type they do not know. Everything else passes as it
/// comes. Lines end at CRLF, LF or CR, as SSE says. Only the first line of an event is held,
/// and only while it may still be `event: vertex_event` (at most [`MAX_HEAD`] bytes); what
/// is held when the stream ends goes out then, unless it names a `vertex_event`.
#[derive(Default)]
pub(super) struct DropVertexEvents {
    phase: Phase,
    /// The first line of an event, from earlier chunks, while it may name a `vertex_event`.
    head: Vec<u8>,
    /// How much of `event: vertex_event` that line has matched.
    matched: Match,
    /// Inside an event, at the start of a line: a line end now ends the event.
    line_start: bool,
    /// The last byte was a CR that ended a line, and whether it went on: an LF now is the
    /// same line end, and goes the same way.
    after_cr: Option<bool>,
}

/// The most of a first line held while it may still name a `vertex_event`.
const MAX_HEAD: usize = 256;

#[derive(Default, PartialEq, Eq, Clone, Copy)]
enum Phase {
    /// Reading an event's first line.
    #[default]
    Start,
    Pass,
    Drop,
}

/// How far a line has matched `event:[ \t]*vertex_event[ \t]*`.
#[derive(Clone, Copy)]
enum Match {
    /// This many bytes of `event:`.
    Field(usize),
    /// Spaces after the colon.
    Gap,
    /// This many bytes of `vertex_event`.
    Name(usize),
    /// The whole name, and spaces after it.
    Done,
}

impl Default for Match {
    fn default() -> Match {
        Match::Field(0)
    }
}

impl Match {
    /// After one more byte of the line; `None` when it can no longer name a `vertex_event`.
    fn next(self, b: u8) -> Option<Match> {
        const FIELD: &[u8] = b"event:";
        const NAME: &[u8] = b"vertex_event";
        let blank = b == b' ' || b == b'\t';
        let name = |at: usize| match NAME[at] == b {
            true if at + 1 == NAME.len() => Some(Match::Done),
            true => Some(Match::Name(at + 1)),
            false => None,
        };
        match self {
            Match::Field(at) if FIELD[at] == b => match at + 1 == FIELD.len() {
                true => Some(Match::Gap),
                false => Some(Match::Field(at + 1)),
            },
            Match::Gap if blank => Some(Match::Gap),
            Match::Gap => name(0),
            Match::Name(at) => name(at),
            Match::Done if blank => Some(Match::Done),
            _ => None,
        }
    }
}

/// What goes on of one chunk: held bytes of earlier chunks first, then ranges of this one.
#[derive(Default)]
struct Kept {
    before: Vec<u8>,
    ranges: Vec<Range<usize>>,
    /// Where the run of kept bytes being read began.
    run: Option<usize>,
}

impl Kept {
    fn from(&mut self, at: usize) {
        if self.run.is_some() {
            return;
        }
        // A run that stopped just here goes on: one range, not two.
        self.run = match self.ranges.last() {
            Some(last) if last.end == at => self.ranges.pop().map(|last| last.start),
            _ => Some(at),
        };
    }

    fn stop(&mut self, at: usize) {
        if let Some(run) = self.run.take()
            && run < at
        {
            self.ranges.push(run..at);
        }
    }

    fn mark(&mut self, at: usize, goes_on: bool) {
        match goes_on {
            true => self.from(at),
            false => self.stop(at),
        }
    }

    /// The chunk's bytes that go on: `bytes` itself, or a slice of it, when it can be.
    fn take(self, bytes: Bytes) -> Bytes {
        match (self.before.is_empty(), self.ranges.as_slice()) {
            (true, []) => Bytes::new(),
            (true, [one]) => bytes.slice(one.clone()),
            _ => {
                let mut out = BytesMut::with_capacity(self.before.len() + bytes.len());
                out.extend_from_slice(&self.before);
                for range in self.ranges {
                    out.extend_from_slice(&bytes[range]);
                }
                out.freeze()
            }
        }
    }
}

impl DropVertexEvents {
    /// Byte `i` of an event's first line, `b`, which began at `start` in this chunk (after
    /// what `head` holds of it).
    fn first_line(&mut self, kept: &mut Kept, (i, b): (usize, u8), start: &mut usize) {
        let line_end = b == b'\n' || b == b'\r';
        let matched = match line_end {
            true => None,
            false => self.matched.next(b),
        };
        if let Some(matched) = matched
            && self.head.len() + (i + 1 - *start) <= MAX_HEAD
        {
            // It may still name a vertex_event: held.
            self.matched = matched;
            kept.stop(i);
            return;
        }
        let vertex = line_end && matches!(self.matched, Match::Done);
        let blank = line_end && self.head.is_empty() && *start == i;
        self.matched = Match::default();
        if vertex {
            self.head.clear();
            kept.stop(i);
            self.phase = Phase::Drop;
        } else {
            // The line names no vertex_event: it and its event go on, from now.
            kept.before.append(&mut self.head);
            kept.from(*start);
            if !blank {
                self.phase = Phase::Pass;
            }
        }
        self.line_start = line_end;
        if line_end {
            self.after_cr = (b == b'\r').then_some(!vertex);
            *start = i + 1;
        }
    }

    /// Byte `i` of an event being passed on or dropped, `b`.
    fn inside(&mut self, kept: &mut Kept, (i, b): (usize, u8), start: &mut usize) {
        let goes_on = self.phase == Phase::Pass;
        kept.mark(i, goes_on);
        if b != b'\n' && b != b'\r' {
            self.line_start = false;
            return;
        }
        // An empty line ends the event.
        if self.line_start {
            self.phase = Phase::Start;
            *start = i + 1;
        }
        self.line_start = true;
        self.after_cr = (b == b'\r').then_some(goes_on);
    }
}

impl Edit for DropVertexEvents {
    /// The part of `bytes` that goes on; `bytes` itself when nothing is dropped or held.
    fn edit(&mut self, bytes: Bytes) -> Bytes {
        let mut kept = Kept::default();
        // Where this chunk's part of the first line being read begins.
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if let Some(went_on) = self.after_cr.take()
                && b == b'\n'
            {
                kept.mark(i, went_on);
                start = i + 1;
                continue;
            }
            match self.phase {
                Phase::Start => self.first_line(&mut kept, (i, b), &mut start),
                Phase::Pass | Phase::Drop => self.inside(&mut kept, (i, b), &mut start),
            }
        }
        kept.stop(bytes.len());
        if self.phase == Phase::Start {
            self.head
                .extend_from_slice(&bytes[start.min(bytes.len())..]);
        }
        kept.take(bytes)
    }

    /// A last line without its line end goes out, unless it names a `vertex_event`.
    fn finish(&mut self) -> Bytes {
        let head = std::mem::take(&mut self.head);
        let vertex = matches!(self.matched, Match::Done);
        match self.phase == Phase::Start && !vertex {
            true => Bytes::from(head),
            false => Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: vertex_event\ndata: {\"type\":\"vertex_event\",\"usage\":{}}\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n: comment\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn filtered(chunks: &[&[u8]]) -> (String, Vec<Bytes>) {
        let mut filter = DropVertexEvents::default();
        let mut out: Vec<Bytes> = chunks
            .iter()
            .map(|c| filter.edit(Bytes::copy_from_slice(c)))
            .collect();
        out.push(filter.finish());
        (String::from_utf8(out.concat()).unwrap(), out)
    }

    #[test]
    fn vertex_events_go_wherever_the_chunks_break_whatever_the_line_endings() {
        let expected = STREAM.replace(
            "event: vertex_event\ndata: {\"type\":\"vertex_event\",\"usage\":{}}\n\n",
            "",
        );
        for ending in ["\n", "\r", "\r\n"] {
            let stream = STREAM.replace('\n', ending);
            let expected = expected.replace('\n', ending);
            for size in 1..stream.len() {
                let chunks: Vec<&[u8]> = stream.as_bytes().chunks(size).collect();
                assert_eq!(
                    filtered(&chunks).0,
                    expected,
                    "{ending:?}, chunks of {size}"
                );
            }
        }
        // Mixed in one stream, as SSE allows.
        let mixed =
            "event: a\rdata: 1\r\n\nevent: vertex_event\r\ndata: {}\r\revent: b\ndata: 2\n\n";
        let (out, _) = filtered(&[mixed.as_bytes()]);
        assert_eq!(out, "event: a\rdata: 1\r\n\nevent: b\ndata: 2\n\n");
    }

    #[test]
    fn a_stream_without_vertex_events_is_passed_as_it_comes() {
        let plain =
            "event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {\"delta\":1}\n\n";
        let mut filter = DropVertexEvents::default();
        let bytes = Bytes::from(plain);
        let out = filter.edit(bytes.clone());
        assert_eq!(out.as_ptr(), bytes.as_ptr(), "no copy");
        assert_eq!(out, plain);
        // Mid-event, the rest of an event's data goes on at once.
        let (_, out) = filtered(&[b"event: content_block_delta\nda", b"ta: {}\n\n"]);
        assert_eq!(out[0], "event: content_block_delta\nda");
        // A first line goes on as soon as it cannot name a vertex_event.
        let (_, out) = filtered(&[b"event: ping", b"\ndata: {}\n\n"]);
        assert_eq!(out[0], "event: ping");
        let (_, out) = filtered(&[b"event: vert", b"ex_ev", b"ent_2\n"]);
        assert_eq!((&out[0][..], &out[1][..]), (&b""[..], &b""[..]));
        assert_eq!(out[2], "event: vertex_event_2\n");
        let (_, out) = filtered(&[b"data: {\"type\":\"message_start\"", b"}\n\n"]);
        assert_eq!(out[0], "data: {\"type\":\"message_start\"");
    }

    #[test]
    fn what_is_held_is_bounded_and_goes_out_at_the_end() {
        // A line that could still name a vertex_event is held only so long.
        let mut filter = DropVertexEvents::default();
        let spaces = format!("event:{}", " ".repeat(4 * MAX_HEAD));
        let out = filter.edit(Bytes::from(spaces.clone()));
        assert_eq!(out, spaces, "all of it goes on once past the bound");
        assert!(filter.head.is_empty());
        // A last line without its line end is not lost...
        let (out, _) = filtered(&[b"event: ping\ndata: {}\n\nevent: message_stop"]);
        assert_eq!(out, "event: ping\ndata: {}\n\nevent: message_stop");
        let (out, _) = filtered(&[b"event: ping\ndata: {}\n\nevent: vert"]);
        assert_eq!(out, "event: ping\ndata: {}\n\nevent: vert");
        // ...unless it is a vertex_event's, or within one.
        let (out, _) = filtered(&[b"event: ping\n\nevent: vertex_event "]);
        assert_eq!(out, "event: ping\n\n");
        let (out, _) = filtered(&[b"event: ping\n\nevent: vertex_event\ndata: {"]);
        assert_eq!(out, "event: ping\n\n");
    }
}
