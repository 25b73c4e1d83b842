//! The way out: chat completion chunks (or one whole completion) become the Responses API's
//! output items and its stream of events, each with `type` and an increasing
//! `sequence_number`, ending in `response.completed`, `response.incomplete` or
//! `response.failed`. Events are written straight into the output buffer; a finished item is
//! encoded once and its bytes reused by `response.output_item.done` and every response
//! object after it.

use super::chunk::{self, CallDelta, Chunk, ChunkError};
use super::ending::{Failure, Usage, failure};
use super::items::{Call, Context, Events, Finish, Output, call_item, item_at, write_response};
use super::json::{key, string, uint};
use crate::error::hidden;

mod close;

/// The item being written, other than tool calls.
enum Open {
    None,
    Reasoning { id: String, at: usize, text: String },
    Message { id: String, at: usize, text: String },
}

/// The output of one response, built as chunks come, and the events that tell it.
pub(crate) struct Builder {
    cx: Context,
    events: Events,
    output: Output,
    next_at: usize,
    open: Open,
    calls: Vec<Call>,
    /// The bytes of text and arguments held for the items and the last response object,
    /// and how many may be: past it the answer fails ([`Builder::over`]).
    kept: usize,
    limit: usize,
    /// The Vertex project's id and a private service's host, hidden from an upstream error
    /// event's message as from any error a client reads.
    hide: Option<(String, Option<String>)>,
}

impl Builder {
    pub fn new(cx: Context) -> Builder {
        Builder {
            cx,
            events: Events::default(),
            output: Output::default(),
            next_at: 0,
            open: Open::None,
            calls: Vec::new(),
            kept: 0,
            limit: super::MAX_ANSWER,
            hide: None,
        }
    }

    /// Hides `project` and `service` from the upstream's error messages.
    pub fn hiding(&mut self, project: &str, service: Option<&str>) {
        self.hide = Some((project.to_owned(), service.map(str::to_owned)));
    }

    #[cfg(test)]
    pub fn limited(mut self, limit: usize) -> Builder {
        self.limit = limit;
        self
    }

    /// The answer grew past what is held to write its response: it has failed, and the
    /// stream is to be cut.
    pub fn over(&self) -> bool {
        self.kept > self.limit
    }

    /// Counts `n` more bytes held; false (and the answer failed) past the limit.
    fn keep(&mut self, n: usize) -> bool {
        self.kept = self.kept.saturating_add(n);
        if self.over() {
            let limit = self.limit;
            self.fail(Failure::server_error(format!(
                "the answer exceeded {limit} bytes, more than the proxy holds to translate it"
            )));
        }
        !self.over()
    }

    /// Only the whole response is wanted: [`Builder::finish`] writes the response object
    /// alone, and no event.
    pub fn quiet(&mut self) {
        self.events.quiet = true;
    }

    /// What was written since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        // Room for the next events, so that writing them seldom grows the buffer.
        std::mem::replace(&mut self.events.out, Vec::with_capacity(1024))
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) {
        for kind in ["response.created", "response.in_progress"] {
            let (cx, output) = (&self.cx, &self.output);
            self.events.emit(kind, |out| {
                key(out, "response");
                write_response(out, cx, output, "in_progress");
            });
        }
    }

    /// The chunks in an SSE event's data or a whole answer; false if it is no chat
    /// completion.
    pub fn data(&mut self, data: &[u8]) -> bool {
        chunk::each(data, |chunk| self.chunk(chunk))
    }

    /// One chat completion chunk, or a whole completion (its `message` read as one delta).
    fn chunk(&mut self, chunk: &Chunk) {
        if self.over() {
            return;
        }
        if let Some(error) = chunk.error.filter(|e| e.get().starts_with('{')) {
            let error: ChunkError = serde_json::from_str(error.get()).unwrap_or_default();
            let status = (error.code.0)
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| (100..600).contains(code))
                .unwrap_or(500);
            let message = error.message.get().unwrap_or("the upstream failed");
            let message = match &self.hide {
                Some((project, service)) => hidden(message, project, service.as_deref()),
                None => message.to_owned(),
            };
            self.fail(failure(status, error.status.get(), &message, None));
            return;
        }
        if let Some(usage) = &chunk.usage {
            self.output.usage = Some(Usage::of(usage));
        }
        let Some(choice) = chunk.choices.as_ref().and_then(|c| c.first()) else {
            return;
        };
        if let Some(delta) = choice.delta.as_ref().or(choice.message.as_ref()) {
            // vLLM may send the same text under both names: the first is read.
            let mut reasoning = [&delta.reasoning_content, &delta.reasoning].into_iter();
            if let Some(text) = reasoning.find_map(|t| t.get().filter(|t| !t.is_empty())) {
                self.reasoning(text);
            }
            if let Some(text) = delta.content.get().filter(|t| !t.is_empty()) {
                self.text(text);
            }
            for call in delta.tool_calls.iter().flatten() {
                self.tool_call(call);
            }
        }
        if let Some(reason) = choice.finish_reason.get() {
            self.output.finish = Some(Finish::of(reason));
        }
    }

    /// The next item's id (`{prefix}_{response id}_{index}`) and output index.
    fn next_item(&mut self, prefix: &str) -> (String, usize) {
        let at = self.next_at;
        self.next_at += 1;
        (format!("{prefix}_{}_{at}", self.cx.id), at)
    }

    fn reasoning(&mut self, text: &str) {
        if !matches!(self.open, Open::Reasoning { .. }) {
            self.close_open();
            let (id, at) = self.next_item("rs");
            self.events.emit("response.output_item.added", |out| {
                key(out, "output_index");
                uint(out, at as u64);
                out.extend_from_slice(b",\"item\":{\"type\":\"reasoning\",\"id\":");
                string(out, &id);
                out.extend_from_slice(b",\"summary\":[]}");
            });
            self.events
                .emit("response.reasoning_summary_part.added", |out| {
                    item_at(out, &id, at);
                    out.extend_from_slice(
                        b",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}",
                    );
                });
            let text = String::new();
            self.open = Open::Reasoning { id, at, text };
        }
        if !self.keep(text.len()) {
            return;
        }
        let Open::Reasoning { id, at, text: all } = &mut self.open else {
            unreachable!("a reasoning item was just opened")
        };
        all.push_str(text);
        self.events
            .emit("response.reasoning_summary_text.delta", |out| {
                item_at(out, id, *at);
                out.extend_from_slice(b",\"summary_index\":0,\"delta\":");
                string(out, text);
            });
    }

    fn text(&mut self, text: &str) {
        if !matches!(self.open, Open::Message { .. }) {
            self.close_open();
            self.close_calls();
            let (id, at) = self.next_item("msg");
            self.events.emit("response.output_item.added", |out| {
                key(out, "output_index");
                uint(out, at as u64);
                out.extend_from_slice(b",\"item\":{\"type\":\"message\",\"id\":");
                string(out, &id);
                out.extend_from_slice(
                    b",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}",
                );
            });
            self.events.emit("response.content_part.added", |out| {
                item_at(out, &id, at);
                out.extend_from_slice(b",\"content_index\":0,\"part\":{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}");
            });
            let text = String::new();
            self.open = Open::Message { id, at, text };
        }
        if !self.keep(text.len()) {
            return;
        }
        let Open::Message { id, at, text: all } = &mut self.open else {
            unreachable!("a message was just opened")
        };
        all.push_str(text);
        self.events.emit("response.output_text.delta", |out| {
            item_at(out, id, *at);
            out.extend_from_slice(b",\"content_index\":0,\"delta\":");
            string(out, text);
            out.extend_from_slice(b",\"logprobs\":[]");
        });
    }

    fn tool_call(&mut self, delta: &CallDelta) {
        let function = delta.function.as_ref();
        // A piece with no index, id or name continues the last call; one with no index but
        // an id or a name begins the next.
        let continued = delta.index.0.is_none()
            && delta.id.get().is_none()
            && function.and_then(|f| f.name.get()).is_none();
        let index = match (continued, self.calls.last()) {
            (true, Some(last)) => last.index,
            _ => delta.index.or(self.calls.len() as u64),
        };
        let arguments = function.and_then(|f| f.arguments.get()).unwrap_or_default();
        let n = match self.calls.iter().position(|c| c.index == index) {
            Some(n) => n,
            None => {
                self.close_open();
                let (id, at) = self.next_item("fc");
                let chat = function.and_then(|f| f.name.get()).unwrap_or_default();
                let call = Call {
                    index,
                    id,
                    at,
                    call_id: delta.id.get().unwrap_or_default().to_owned(),
                    chat: chat.to_owned(),
                    arguments: String::new(),
                    custom: self.cx.tools.by_chat(chat).is_some_and(|t| t.custom),
                };
                let tools = &self.cx.tools;
                self.events.emit("response.output_item.added", |out| {
                    key(out, "output_index");
                    uint(out, at as u64);
                    key(out, "item");
                    call_item(out, tools, &call, "in_progress");
                });
                self.calls.push(call);
                self.calls.len() - 1
            }
        };
        if !self.keep(arguments.len()) {
            return;
        }
        let call = &mut self.calls[n];
        if let Some(id) = delta.id.get().filter(|_| call.call_id.is_empty()) {
            call.call_id = id.to_owned();
        }
        call.arguments.push_str(arguments);
        // A custom tool's input is the string inside its arguments: it goes out whole.
        if !call.custom && !arguments.is_empty() {
            self.events
                .emit("response.function_call_arguments.delta", |out| {
                    item_at(out, &call.id, call.at);
                    key(out, "delta");
                    string(out, arguments);
                });
        }
    }

    /// The answer failed. Only the first failure counts.
    pub fn fail(&mut self, error: Failure) {
        if self.output.error.is_none() {
            self.output.error = Some(error);
        }
    }

    /// The upstream's answer has ended: every item is finished, and the last event says how
    /// the response ended (quiet: the response object is written instead). `ended` says the
    /// answer came to its end (a finish reason or `[DONE]`), not merely that the bytes
    /// stopped.
    pub fn finish(&mut self, ended: bool) {
        self.close_open();
        self.close_calls();
        if self.output.error.is_none() && !ended && self.output.finish.is_none() {
            let message = "the upstream's stream ended before its answer did";
            self.fail(Failure::server_error(message));
        }
        let (kind, status) = match (&self.output.error, self.output.finish) {
            (Some(_), _) => ("response.failed", "failed"),
            (None, Some(Finish::Incomplete(_))) => ("response.incomplete", "incomplete"),
            (None, _) => ("response.completed", "completed"),
        };
        let (cx, output) = (&self.cx, &self.output);
        if self.events.quiet {
            write_response(&mut self.events.out, cx, output, status);
            self.events.out.push(b'\n');
            return;
        }
        self.events.emit(kind, |out| {
            key(out, "response");
            write_response(out, cx, output, status);
        });
    }
}
