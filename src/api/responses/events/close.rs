//! Finishing items: the open message or reasoning item, and the tool calls being written,
//! each told by its `.done` events and `response.output_item.done`, and kept for the response
//! object.

use super::super::items::{call_item, custom_input, item_at};
use super::super::json::{key, string, uint};
use super::{Builder, Open};

impl Builder {
    /// Finishes the reasoning item or message being written.
    pub(super) fn close_open(&mut self) {
        let (id, at, text, message) = match std::mem::replace(&mut self.open, Open::None) {
            Open::None => return,
            Open::Reasoning { id, at, text } => (id, at, text, false),
            Open::Message { id, at, text } => (id, at, text, true),
        };
        // The part, written once: the text's escaped bytes are a slice of it.
        let mut part = Vec::with_capacity(text.len() + 64);
        part.extend_from_slice(match message {
            true => b"{\"type\":\"output_text\",\"text\":",
            false => b"{\"type\":\"summary_text\",\"text\":",
        });
        let start = part.len();
        string(&mut part, &text);
        let quoted = start..part.len();
        part.extend_from_slice(match message {
            true => b",\"annotations\":[]}",
            false => b"}",
        });
        let (index, kinds) = match message {
            true => (
                &b",\"content_index\":0"[..],
                ["response.output_text.done", "response.content_part.done"],
            ),
            false => (
                &b",\"summary_index\":0"[..],
                [
                    "response.reasoning_summary_text.done",
                    "response.reasoning_summary_part.done",
                ],
            ),
        };
        self.events.emit(kinds[0], |out| {
            item_at(out, &id, at);
            out.extend_from_slice(index);
            out.extend_from_slice(b",\"text\":");
            out.extend_from_slice(&part[quoted]);
            if message {
                out.extend_from_slice(b",\"logprobs\":[]");
            }
        });
        self.events.emit(kinds[1], |out| {
            item_at(out, &id, at);
            out.extend_from_slice(index);
            out.extend_from_slice(b",\"part\":");
            out.extend_from_slice(&part);
        });
        let mut item = Vec::with_capacity(part.len() + 128);
        match message {
            true => {
                item.extend_from_slice(b"{\"type\":\"message\",\"id\":");
                string(&mut item, &id);
                item.extend_from_slice(
                    b",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[",
                );
            }
            false => {
                item.extend_from_slice(b"{\"type\":\"reasoning\",\"id\":");
                string(&mut item, &id);
                item.extend_from_slice(b",\"summary\":[");
            }
        }
        item.extend_from_slice(&part);
        item.extend_from_slice(b"]}");
        self.item_done(at, item);
    }

    /// Finishes every tool call being written, in the order they began.
    pub(super) fn close_calls(&mut self) {
        for call in std::mem::take(&mut self.calls) {
            let tools = &self.cx.tools;
            if call.custom {
                let input = custom_input(&call.arguments);
                let input = input.get().unwrap_or_default();
                for (kind, name) in [
                    ("response.custom_tool_call_input.delta", "delta"),
                    ("response.custom_tool_call_input.done", "input"),
                ] {
                    self.events.emit(kind, |out| {
                        item_at(out, &call.id, call.at);
                        key(out, name);
                        string(out, input);
                    });
                }
            } else {
                let name = tools.by_chat(&call.chat).map_or(&call.chat, |t| &t.name);
                self.events
                    .emit("response.function_call_arguments.done", |out| {
                        item_at(out, &call.id, call.at);
                        key(out, "name");
                        string(out, name);
                        key(out, "arguments");
                        string(out, &call.arguments);
                    });
            }
            let mut item = Vec::with_capacity(call.arguments.len() + 192);
            call_item(&mut item, tools, &call, "completed");
            self.item_done(call.at, item);
        }
    }

    fn item_done(&mut self, at: usize, item: Vec<u8>) {
        self.events.emit("response.output_item.done", |out| {
            key(out, "output_index");
            uint(out, at as u64);
            key(out, "item");
            out.extend_from_slice(&item);
        });
        self.output.add(at, item);
    }
}
