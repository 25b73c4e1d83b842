//! `instructions` and the `input` items, written as chat messages in order: consecutive
//! calls (and calls after the assistant's text) are one assistant message, each output a
//! `tool` message, and the images a tool returned go in one user message after the tool
//! messages of their turn (a `tool` message carries text only).

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::input::{Content, Item, Part, content, image, output_text, raw_or_null};
use super::json::{Text, escaped, key, string};
use super::refuse::{bad, stateless};
use super::tools::Tools;
use crate::error::ProxyError;

/// What of a tool output waits for the end of the tool messages of its turn: its images, and
/// the whole of an output that answers no call.
struct Images<'a> {
    call_id: Option<&'a RawValue>,
    /// An output without a `call_id`: `{namespace}.{name}` and its text, escaped.
    orphan: Option<(String, Vec<u8>)>,
    parts: Vec<Part<'a>>,
}

/// The messages array, being written.
struct Messages<'o, 'a> {
    out: &'o mut Vec<u8>,
    written: usize,
    /// The last message is the assistant's, left open for calls: `Some(has tool_calls)`.
    open: Option<bool>,
    images: Vec<Images<'a>>,
}

/// `[…]`: `instructions`, then every input item, as chat messages.
pub(crate) fn write(
    out: &mut Vec<u8>,
    instructions: Option<&str>,
    input: Option<&RawValue>,
    tools: &Tools,
) -> Result<(), ProxyError> {
    out.push(b'[');
    let mut messages = Messages {
        out,
        written: 0,
        open: None,
        images: Vec::new(),
    };
    if let Some(instructions) = instructions {
        messages.text("system", instructions);
    }
    // A raw value is valid JSON, so never empty: its first byte says what it is.
    match input.map(|i| (i.get(), i.get().as_bytes().first())) {
        None => {}
        Some((input, Some(b'"'))) => {
            let text: Text = serde_json::from_str(input)
                .map_err(|e| bad(format!("`input` is not a readable string: {e}")))?;
            messages.text("user", text.get().unwrap_or_default());
        }
        Some((input, Some(b'['))) => {
            let items: Vec<Item> = serde_json::from_str(input)
                .map_err(|e| bad(format!("`input` must be an array of items: {e}")))?;
            for item in &items {
                messages.item(item, tools)?;
            }
        }
        Some(_) => return Err(bad("`input` must be a string or an array of items")),
    }
    messages.close();
    messages.flush_images();
    messages.out.push(b']');
    Ok(())
}

impl<'a> Messages<'_, 'a> {
    fn item(&mut self, item: &Item<'a>, tools: &Tools) -> Result<(), ProxyError> {
        let kind = item.kind.get().unwrap_or("message");
        if item.call_id.is_some_and(|id| !id.get().starts_with('"')) {
            return Err(bad(format!("a {kind} item's `call_id` must be a string")));
        }
        match kind {
            "message" => self.message(item)?,
            "function_call" | "custom_tool_call" => {
                let name = item.name.get().unwrap_or_default();
                let chat = tools.chat_name(name, item.namespace.get());
                let arguments = match kind {
                    "function_call" => arguments(item.arguments)?,
                    _ => {
                        let mut arguments = b"{\"input\":".to_vec();
                        string(&mut arguments, item.input.get().unwrap_or_default());
                        arguments.push(b'}');
                        Cow::Owned(String::from_utf8(arguments).expect("JSON is UTF-8"))
                    }
                };
                self.call(item.call_id, &chat, &arguments);
            }
            "function_call_output" | "custom_tool_call_output" => self.output(item)?,
            "item_reference" => {
                return Err(stateless(
                    "this proxy is stateless: an `item_reference` cannot be resolved; send every item whole (with the Vercel AI SDK, set providerOptions.openai.store to false)",
                ));
            }
            // Reasoning is the model's own (Gemini's comes back in the signatures its calls'
            // ids carry); other items (hosted tools' calls) have nothing Chat Completions
            // can take.
            _ => {}
        }
        Ok(())
    }

    /// Before the next message: the open assistant message closed, a comma.
    fn next(&mut self) {
        self.close();
        if self.written > 0 {
            self.out.push(b',');
        }
        self.written += 1;
    }

    fn close(&mut self) {
        if let Some(calls) = self.open.take() {
            self.out
                .extend_from_slice(if calls { &b"]}"[..] } else { &b"}"[..] });
        }
    }

    /// A message of text; the assistant's is left open for the calls that may follow.
    fn text(&mut self, role: &str, text: &str) {
        self.joined(role, &[text], "");
    }

    /// A message of `texts`, `between` (escaped) between them.
    fn joined(&mut self, role: &str, texts: &[&str], between: &str) {
        self.flush_images();
        self.next();
        self.out.extend_from_slice(b"{\"role\":\"");
        self.out.extend_from_slice(role.as_bytes());
        self.out.extend_from_slice(b"\",\"content\":\"");
        for (n, text) in texts.iter().enumerate() {
            if n > 0 {
                self.out.extend_from_slice(between.as_bytes());
            }
            escaped(self.out, text);
        }
        self.out.push(b'"');
        self.end(role);
    }

    fn end(&mut self, role: &str) {
        match role {
            "assistant" => self.open = Some(false),
            _ => self.out.push(b'}'),
        }
    }

    /// A message item: developer and system become system messages (text), user and
    /// assistant keep their parts.
    fn message(&mut self, item: &Item<'a>) -> Result<(), ProxyError> {
        let role = match item.role.get() {
            Some("developer" | "system") => "system",
            Some(role @ ("user" | "assistant")) => role,
            _ => {
                return Err(bad(
                    "a message's `role` must be user, assistant, system or developer",
                ));
            }
        };
        let parts = match content(item.content)? {
            Content::Text(text) => {
                self.text(role, text.get().unwrap_or_default());
                return Ok(());
            }
            Content::Parts(parts) => parts,
        };
        let text_only = parts.iter().all(|p| p.text.get().is_some());
        if role != "user" || text_only {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p.text.get()).collect();
            // The parts of a user or system message are blocks a client put together (Codex
            // sends its instructions so): a blank line apart. The assistant's are pieces of
            // what it said.
            let between = if role == "assistant" { "" } else { "\\n\\n" };
            self.joined(role, &texts, between);
            return Ok(());
        }
        self.flush_images();
        self.next();
        self.out
            .extend_from_slice(b"{\"role\":\"user\",\"content\":[");
        let mut first = true;
        for part in &parts {
            match part.kind.get() {
                // A text part without text is left out.
                Some("input_text" | "output_text") => {
                    let Some(text) = part.text.get() else {
                        continue;
                    };
                    if !first {
                        self.out.push(b',');
                    }
                    self.out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                    string(self.out, text);
                    self.out.push(b'}');
                }
                Some("input_image") => {
                    if !first {
                        self.out.push(b',');
                    }
                    image(self.out, part);
                }
                _ => continue,
            }
            first = false;
        }
        self.out.extend_from_slice(b"]}");
        Ok(())
    }

    /// A call, added to the assistant message before it if there is one.
    fn call(&mut self, call_id: Option<&RawValue>, chat: &str, arguments: &str) {
        self.flush_images();
        match self.open {
            Some(true) => self.out.push(b','),
            Some(false) => self.out.extend_from_slice(b",\"tool_calls\":["),
            None => {
                self.next();
                self.out.extend_from_slice(
                    b"{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[",
                );
            }
        }
        self.open = Some(true);
        self.out.extend_from_slice(b"{\"id\":");
        raw_or_null(self.out, call_id);
        self.out
            .extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        string(self.out, chat);
        key(self.out, "arguments");
        string(self.out, arguments);
        self.out.extend_from_slice(b"}}");
    }

    /// A call's output as a `tool` message: a string, or the text of its parts; its images
    /// wait for the user message after the tool messages.
    fn output(&mut self, item: &Item<'a>) -> Result<(), ProxyError> {
        let Some(call_id) = item.call_id else {
            return self.orphan(item);
        };
        self.next();
        self.out
            .extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
        self.out.extend_from_slice(call_id.get().as_bytes());
        self.out.extend_from_slice(b",\"content\":");
        match item.output.map(RawValue::get) {
            // A string as the client wrote it.
            Some(text) if text.starts_with('"') => self.out.extend_from_slice(text.as_bytes()),
            output => {
                self.out.push(b'"');
                let images = output_text(self.out, output)?;
                self.out.push(b'"');
                if !images.is_empty() {
                    let orphan = None;
                    (self.images).push(Images {
                        call_id: Some(call_id),
                        orphan,
                        parts: images,
                    });
                }
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// An output that answers no call (Codex adds one, named, when the model sets a goal):
    /// not a `tool` message, which must answer a call, but text in the user message after
    /// the tool messages.
    fn orphan(&mut self, item: &Item<'a>) -> Result<(), ProxyError> {
        let name = item.name.get().unwrap_or("a tool");
        let name = match item.namespace.get() {
            Some(namespace) => format!("{namespace}.{name}"),
            None => name.to_owned(),
        };
        let mut text = Vec::new();
        let output = item.output.map(RawValue::get);
        let parts = match output {
            Some(string) if string.starts_with('"') => {
                let string: Text = serde_json::from_str(string)
                    .map_err(|e| bad(format!("an output is not a readable string: {e}")))?;
                escaped(&mut text, string.get().unwrap_or_default());
                Vec::new()
            }
            output => output_text(&mut text, output)?,
        };
        let orphan = Some((name, text));
        self.images.push(Images {
            call_id: None,
            orphan,
            parts,
        });
        Ok(())
    }

    /// The images of the tool outputs just written, as one user message, each call's
    /// introduced by its id (without the signature it may carry).
    fn flush_images(&mut self) {
        if self.images.is_empty() {
            return;
        }
        self.next();
        self.out
            .extend_from_slice(b"{\"role\":\"user\",\"content\":[");
        for (n, images) in std::mem::take(&mut self.images).iter().enumerate() {
            if n > 0 {
                self.out.push(b',');
            }
            self.out
                .extend_from_slice(b"{\"type\":\"text\",\"text\":\"");
            match &images.orphan {
                Some((name, text)) => {
                    self.out.extend_from_slice(b"The output of ");
                    escaped(self.out, name);
                    self.out.extend_from_slice(b", which answers no call:\\n");
                    self.out.extend_from_slice(text);
                }
                None => {
                    let id: Text = (images.call_id)
                        .and_then(|id| serde_json::from_str(id.get()).ok())
                        .unwrap_or_default();
                    let id = id.get().unwrap_or("?");
                    let id = id.split("__thought__").next().unwrap_or(id);
                    self.out
                        .extend_from_slice(b"The image returned by tool call ");
                    escaped(self.out, id);
                    self.out.push(b':');
                }
            }
            self.out.extend_from_slice(b"\"}");
            for part in &images.parts {
                self.out.push(b',');
                image(self.out, part);
            }
        }
        self.out.extend_from_slice(b"]}");
    }
}

/// A `function_call`'s arguments: a string of JSON, or an object as its JSON (some clients
/// send it parsed); absent, `{}`.
fn arguments<'a>(arguments: Option<&'a RawValue>) -> Result<Cow<'a, str>, ProxyError> {
    let Some(arguments) = arguments else {
        return Ok(Cow::Borrowed("{}"));
    };
    match arguments.get().as_bytes()[0] {
        b'"' => serde_json::from_str::<Text>(arguments.get())
            .ok()
            .and_then(|t| t.0)
            .ok_or_else(|| bad("a function_call's `arguments` is not a readable string")),
        b'{' => Ok(Cow::Borrowed(arguments.get())),
        _ => Err(bad(
            "a function_call's `arguments` must be a string of JSON, or an object",
        )),
    }
}
