//! The request's tools as chat functions: `function` tools as they are (their `parameters`
//! copied as the client's bytes), `custom` (freeform) tools as a function of one string,
//! namespaces' members under names that cannot collide, hosted tools dropped; and the names
//! kept, to map the model's calls back.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::json::{Text, key, string};
use super::refuse::bad;
use crate::error::ProxyError;

type Raw<'a> = Option<&'a RawValue>;

/// A tool of the request: a function, a freeform (`custom`) tool, a namespace of them, or a
/// hosted tool.
#[derive(Deserialize)]
struct ToolIn<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Text<'a>,
    #[serde(borrow, default)]
    name: Text<'a>,
    #[serde(borrow, default)]
    description: Raw<'a>,
    #[serde(borrow, default)]
    parameters: Raw<'a>,
    #[serde(borrow, default)]
    strict: Raw<'a>,
    #[serde(borrow, default)]
    format: Raw<'a>,
    #[serde(borrow, default)]
    tools: Raw<'a>,
}
/// The most functions a request may offer (a namespace's members counted). OpenAI allows
/// 128; the cap is generous, and bounds the work a request's tools can make.
const MAX_TOOLS: usize = 512;

/// Up to this many tools, a lookup is a scan (cheaper than hashing for Codex's few dozen at
/// most); past it, the names are indexed.
const SCANNED: usize = 16;

/// How each tool the model sees is named, and what it was in the request.
#[derive(Debug, Default)]
pub(crate) struct Tools {
    list: Vec<Tool>,
    /// Past [`SCANNED`] tools: chat name → tool, and [`name_key`] → the first tool with it.
    by_chat: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    /// The last suffix given to a chat name that was taken, so that duplicates do not probe
    /// `_2`, `_3`, … from the start each time.
    suffixes: HashMap<String, u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tool {
    /// The function's name in Chat Completions.
    pub chat: String,
    /// Its name in the Responses API, and its namespace's.
    pub name: String,
    pub namespace: Option<String>,
    /// A `custom` (freeform) tool: one string argument, `input`.
    pub custom: bool,
}

/// The longest function name Gemini takes.
const MAX_NAME: usize = 64;

/// A namespace member's chat name within [`MAX_NAME`]: a longer one (MCP servers' namespaces
/// run long) cut, and told apart from others cut alike by a hash of the whole.
fn fitted(chat: String) -> String {
    if chat.len() <= MAX_NAME {
        return chat;
    }
    let hash = hex::encode(&crate::keys::sha256(chat.as_bytes())[..4]);
    let mut cut = MAX_NAME - 1 - hash.len();
    while !chat.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &chat[..cut])
}

/// A Responses name and namespace as one key that no other pair has.
fn name_key(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("{}:{namespace}{name}", namespace.len()),
        None => format!(":{name}"),
    }
}

impl Tools {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn indexed(&self) -> bool {
        self.list.len() > SCANNED
    }

    /// The tool a chat function name stands for.
    pub fn by_chat(&self, chat: &str) -> Option<&Tool> {
        match self.indexed() {
            false => self.list.iter().find(|t| t.chat == chat),
            true => self.by_chat.get(chat).map(|&n| &self.list[n]),
        }
    }

    /// The chat name for a Responses name (and namespace); unknown ones stay as they are.
    pub fn chat_name(&self, name: &str, namespace: Option<&str>) -> String {
        let found = match self.indexed() {
            false => {
                (self.list.iter()).find(|t| t.name == name && t.namespace.as_deref() == namespace)
            }
            true => (self.by_name.get(&name_key(name, namespace))).map(|&n| &self.list[n]),
        };
        match (found, namespace) {
            (Some(tool), _) => tool.chat.clone(),
            (None, Some(namespace)) => format!("{namespace}__{name}"),
            (None, None) => name.to_owned(),
        }
    }

    /// Adds a tool under a chat name no other has: a namespace's member is `{ns}__{name}`
    /// (fitted to [`MAX_NAME`]), with `_2`, `_3`, … if that is taken.
    fn add(
        &mut self,
        name: &str,
        namespace: Option<&str>,
        custom: bool,
    ) -> Result<&str, ProxyError> {
        if self.list.len() == MAX_TOOLS {
            return Err(bad(format!(
                "`tools` offers more than {MAX_TOOLS} functions (a namespace's members counted), more than the proxy takes"
            )));
        }
        let base = match namespace {
            Some(namespace) => format!("{namespace}__{name}"),
            None => name.to_owned(),
        };
        let fit = |chat: String| match namespace {
            Some(_) => fitted(chat),
            None => chat,
        };
        let mut chat = fit(base.clone());
        if self.by_chat(&chat).is_some() {
            let mut n = self.suffixes.get(&base).copied().unwrap_or(1);
            while self.by_chat(&chat).is_some() {
                n += 1;
                chat = fit(format!("{base}_{n}"));
            }
            self.suffixes.insert(base, n);
        }
        self.list.push(Tool {
            chat,
            name: name.to_owned(),
            namespace: namespace.map(str::to_owned),
            custom,
        });
        match self.list.len() - 1 {
            n if n == SCANNED => (0..=n).for_each(|n| self.index(n)),
            n if n > SCANNED => self.index(n),
            _ => {}
        }
        Ok(&self.list.last().expect("just pushed").chat)
    }

    fn index(&mut self, n: usize) {
        let tool = &self.list[n];
        self.by_chat.insert(tool.chat.clone(), n);
        let key = name_key(&tool.name, tool.namespace.as_deref());
        self.by_name.entry(key).or_insert(n);
    }
}
/// `,"tools":[…]` (if any function is offered): the function tools the model is offered;
/// their names, and the hosted tools dropped.
pub(crate) fn write_tools(
    out: &mut Vec<u8>,
    tools: Raw,
) -> Result<(Tools, Vec<String>), ProxyError> {
    let (mut names, mut dropped) = (Tools::default(), Vec::new());
    let Some(tools) = tools else {
        return Ok((names, dropped));
    };
    let tools: Vec<ToolIn> = serde_json::from_str(tools.get())
        .map_err(|e| bad(format!("`tools` must be an array of tools: {e}")))?;
    let mut first = true;
    for tool in &tools {
        match tool.kind.get().unwrap_or_default() {
            "function" => function(separated(out, &mut first), &mut names, tool, None)?,
            "custom" => custom(separated(out, &mut first), &mut names, tool, None)?,
            "namespace" => {
                let namespace =
                    (tool.name.get()).ok_or_else(|| bad("a namespace tool needs a `name`"))?;
                let members: Vec<ToolIn> = (tool.tools)
                    .and_then(|t| serde_json::from_str(t.get()).ok())
                    .unwrap_or_default();
                for member in &members {
                    let out = separated(out, &mut first);
                    match member.kind.get() {
                        Some("custom") => custom(out, &mut names, member, Some(namespace))?,
                        _ => function(out, &mut names, member, Some(namespace))?,
                    }
                }
            }
            other => dropped.push(other.to_owned()),
        }
    }
    if !first {
        out.push(b']');
    }
    Ok((names, dropped))
}

/// `out`, after what comes before the next tool: `,"tools":[` before the first.
fn separated<'o>(out: &'o mut Vec<u8>, first: &mut bool) -> &'o mut Vec<u8> {
    out.extend_from_slice(if *first { &b",\"tools\":["[..] } else { b"," });
    *first = false;
    out
}

fn tool_name<'t>(tool: &'t ToolIn) -> Result<&'t str, ProxyError> {
    (tool.name.get()).ok_or_else(|| bad("every function and custom tool needs a `name`"))
}

fn function(
    out: &mut Vec<u8>,
    names: &mut Tools,
    tool: &ToolIn,
    namespace: Option<&str>,
) -> Result<(), ProxyError> {
    let chat = names.add(tool_name(tool)?, namespace, false)?;
    out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
    string(out, chat);
    let passed = [
        ("description", tool.description),
        ("parameters", tool.parameters),
        ("strict", tool.strict),
    ];
    for (name, value) in passed {
        if let Some(value) = value {
            key(out, name);
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

/// A freeform tool as a function of one string, `input`; its grammar, if any, is described.
fn custom(
    out: &mut Vec<u8>,
    names: &mut Tools,
    tool: &ToolIn,
    namespace: Option<&str>,
) -> Result<(), ProxyError> {
    #[derive(Deserialize)]
    struct Format<'a> {
        #[serde(borrow, default)]
        syntax: Text<'a>,
        #[serde(borrow, default)]
        definition: Text<'a>,
    }
    let chat = names.add(tool_name(tool)?, namespace, true)?;
    out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
    string(out, chat);
    let mut description = (tool.description)
        .and_then(|r| serde_json::from_str::<Text>(r.get()).ok())
        .and_then(|t| t.0)
        .unwrap_or_default()
        .into_owned();
    let format = (tool.format).and_then(|f| serde_json::from_str::<Format>(f.get()).ok());
    if let Some(format) = format
        && let Some(definition) = format.definition.get()
    {
        let syntax = format.syntax.get().unwrap_or("grammar");
        description.push_str(&format!(
            "\n\nThe input must follow this {syntax} grammar:\n{definition}"
        ));
    }
    key(out, "description");
    string(out, &description);
    out.extend_from_slice(b",\"parameters\":{\"type\":\"object\",\"properties\":{\"input\":{\"type\":\"string\",\"description\":\"The tool's raw input text.\"}},\"required\":[\"input\"]}}}");
    Ok(())
}

pub(crate) fn tool_choice(out: &mut Vec<u8>, choice: &RawValue, tools: &Tools) {
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Text<'a>,
        #[serde(borrow, default)]
        name: Text<'a>,
        #[serde(borrow, default)]
        namespace: Text<'a>,
        #[serde(borrow, default)]
        mode: Text<'a>,
    }
    if choice.get().starts_with('"') {
        out.extend_from_slice(choice.get().as_bytes());
        return;
    }
    let Ok(choice) = serde_json::from_str::<Choice>(choice.get()) else {
        out.extend_from_slice(b"\"auto\"");
        return;
    };
    match choice.kind.get() {
        Some("function" | "custom") => {
            let name = choice.name.get().unwrap_or_default();
            let chat = tools.chat_name(name, choice.namespace.get());
            out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
            string(out, &chat);
            out.extend_from_slice(b"}}");
        }
        Some("allowed_tools") => string(out, choice.mode.get().unwrap_or("auto")),
        _ => out.extend_from_slice(b"\"auto\""),
    }
}
