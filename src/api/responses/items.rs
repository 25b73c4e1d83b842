//! What a response holds (its finished items, already encoded, its usage, how it ended) and
//! how the response object and a tool call's item are written.

use serde::Deserialize;

use super::ending::{Failure, Usage};
use super::json::{Text, key, string, uint};
use super::tools::Tools;

/// What a response is, besides its output, from the request it answers.
pub(crate) struct Context {
    pub id: String,
    pub created_at: u64,
    /// The model as the client named it.
    pub model: String,
    pub tools: Tools,
    /// The response object's last members, written once: `store`, `tools`, and what it
    /// repeats of the request (`tool_choice`, `temperature`, …).
    pub echo: Vec<u8>,
}

/// A tool call being written: its arguments come in pieces.
pub(crate) struct Call {
    /// The chat delta's `index`.
    pub index: u64,
    pub id: String,
    pub at: usize,
    pub call_id: String,
    /// Its name in Chat Completions.
    pub chat: String,
    pub arguments: String,
    /// A freeform tool's call, whose input is the string inside its arguments.
    pub custom: bool,
}

/// The events not yet sent, and the next one's number.
pub(crate) struct Events {
    pub out: Vec<u8>,
    sequence: u64,
    /// Only the whole response is wanted (a JSON answer): events are counted, not written.
    pub quiet: bool,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            out: Vec::with_capacity(1024),
            sequence: 0,
            quiet: false,
        }
    }
}

impl Events {
    /// `event: {kind}` and its data, `{"type", "sequence_number"` and what `write` adds.
    pub fn emit(&mut self, kind: &str, write: impl FnOnce(&mut Vec<u8>)) {
        let sequence = self.sequence;
        self.sequence += 1;
        if self.quiet {
            return;
        }
        let out = &mut self.out;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: {\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"sequence_number\":");
        uint(out, sequence);
        write(out);
        out.extend_from_slice(b"}\n\n");
    }
}

/// How the upstream said the answer ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Finish {
    Stop,
    /// `length` or `content_filter`: the response is incomplete, for this reason.
    Incomplete(&'static str),
}

impl Finish {
    pub fn of(reason: &str) -> Finish {
        match reason {
            "length" => Finish::Incomplete("max_output_tokens"),
            "content_filter" => Finish::Incomplete("content_filter"),
            _ => Finish::Stop,
        }
    }
}

/// A response's output so far.
#[derive(Default)]
pub(crate) struct Output {
    /// Finished items, encoded, in output order.
    items: Vec<(usize, Vec<u8>)>,
    pub usage: Option<Usage>,
    pub finish: Option<Finish>,
    pub error: Option<Failure>,
}

impl Output {
    /// A finished item, at its output index (a tool call begun before a reasoning item may
    /// finish after it).
    pub fn add(&mut self, at: usize, item: Vec<u8>) {
        let n = self.items.partition_point(|(other, _)| *other < at);
        self.items.insert(n, (at, item));
    }
}

/// `,"item_id":…,"output_index":…`
pub(crate) fn item_at(out: &mut Vec<u8>, id: &str, at: usize) {
    key(out, "item_id");
    string(out, id);
    key(out, "output_index");
    uint(out, at as u64);
}

/// The response object in `status`, with the items finished so far.
pub(crate) fn write_response(out: &mut Vec<u8>, cx: &Context, output: &Output, status: &str) {
    out.extend_from_slice(b"{\"id\":");
    string(out, &cx.id);
    out.extend_from_slice(b",\"object\":\"response\",\"created_at\":");
    uint(out, cx.created_at);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\",\"model\":");
    string(out, &cx.model);
    out.extend_from_slice(b",\"output\":[");
    for (n, (_, item)) in output.items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"],\"error\":");
    match &output.error {
        Some(error) => error.write(out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"incomplete_details\":");
    match (status, output.finish) {
        ("incomplete", Some(Finish::Incomplete(reason))) => {
            out.extend_from_slice(b"{\"reason\":\"");
            out.extend_from_slice(reason.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        _ => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(&cx.echo);
    // Usage last: the log reads the last `"usage"` of an answer's final bytes, so nothing
    // the client wrote (its `metadata` above) may follow it, nor push it out of those bytes.
    out.extend_from_slice(b",\"usage\":");
    match &output.usage {
        Some(usage) => usage.write(out),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

/// A call as an output item: `function_call`, or `custom_tool_call` for a freeform tool,
/// named as the request named it.
pub(crate) fn call_item(out: &mut Vec<u8>, tools: &Tools, call: &Call, status: &str) {
    let tool = tools.by_chat(&call.chat);
    out.extend_from_slice(match call.custom {
        true => b"{\"type\":\"custom_tool_call\",\"id\":",
        false => b"{\"type\":\"function_call\",\"id\":",
    });
    string(out, &call.id);
    key(out, "call_id");
    string(out, &call.call_id);
    key(out, "name");
    string(out, tool.map_or(&call.chat, |t| &t.name));
    if call.custom {
        key(out, "input");
        string(out, custom_input(&call.arguments).get().unwrap_or_default());
    } else {
        key(out, "arguments");
        string(out, &call.arguments);
    }
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(status.as_bytes());
    out.push(b'"');
    if let Some(namespace) = tool.and_then(|t| t.namespace.as_deref()) {
        key(out, "namespace");
        string(out, namespace);
    }
    out.push(b'}');
}

/// A custom tool's input: the string `input` of its call's arguments.
pub(crate) fn custom_input(arguments: &str) -> Text<'_> {
    #[derive(Deserialize)]
    struct Arguments<'a> {
        #[serde(borrow, default)]
        input: Text<'a>,
    }
    serde_json::from_str::<Arguments>(arguments).map_or(Text(None), |a| a.input)
}
