//! A page as blocks, rendered as HTML for browsers or plain text for everything else, with
//! the headers that keep it inert.

use std::sync::LazyLock;

use base64::Engine;
use http::{HeaderMap, HeaderValue, Response, header};

use crate::body::{self, ProxyBody};
use crate::keys::sha256;

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b;background:#fff}\
h1{font-size:1.8rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}\
pre{background:#f4f4f4;padding:.8rem;overflow-x:auto;border-radius:4px}code{font-size:.9rem}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}\
@media (prefers-color-scheme:dark){body{color:#e8e8e8;background:#161616}pre{background:#262626}td,th,h2{border-color:#444}a{color:#8ab4f8}}";

/// The CSP names the stylesheet by hash, so not even an injected `<style>` would apply.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(sha256(STYLE.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ))
    .expect("base64 is a valid header value")
});

/// A page, as blocks that render to HTML or to plain text.
pub(super) enum Block {
    Heading(String),
    Para(String),
    /// A paragraph with links: (text, href) pairs, href `None` for plain text.
    Links(Vec<(String, Option<String>)>),
    Code(String),
    Table(Vec<Vec<String>>),
}

pub(super) struct Page {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// Browsers get HTML; curl and other clients that do not ask for HTML get plain text.
pub(super) fn render(page: &Page, headers: &HeaderMap) -> Response<ProxyBody> {
    let wants_html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"));
    let (text, content_type) = if wants_html {
        (html(page), "text/html; charset=utf-8")
    } else {
        (plain(page), "text/plain; charset=utf-8")
    };
    let mut response = Response::new(body::full(text));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    // The page depends on Host and X-Forwarded-Proto as well as Accept: no cache may keep it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(page: &Page) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"color-scheme\" content=\"light dark\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&page.title),
        escape(&page.title)
    );
    for block in &page.blocks {
        match block {
            Block::Heading(text) => out.push_str(&format!("<h2>{}</h2>\n", escape(text))),
            Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", escape(text))),
            Block::Links(parts) => {
                out.push_str("<p>");
                for (text, href) in parts {
                    match href {
                        Some(href) => out.push_str(&format!(
                            "<a href=\"{}\">{}</a>",
                            escape(href),
                            escape(text)
                        )),
                        None => out.push_str(&escape(text)),
                    }
                }
                out.push_str("</p>\n");
            }
            Block::Code(text) => {
                out.push_str(&format!("<pre><code>{}</code></pre>\n", escape(text)))
            }
            Block::Table(rows) => {
                out.push_str("<table>\n");
                for (i, row) in rows.iter().enumerate() {
                    let cell = if i == 0 { "th" } else { "td" };
                    out.push_str("<tr>");
                    for value in row {
                        out.push_str(&format!("<{cell}>{}</{cell}>", escape(value)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn plain(page: &Page) -> String {
    let mut out = format!(
        "{}\n{}\n\n",
        page.title,
        "=".repeat(page.title.chars().count())
    );
    for block in &page.blocks {
        match block {
            Block::Heading(text) => {
                out.push_str(&format!("{text}\n{}\n\n", "-".repeat(text.chars().count())));
            }
            Block::Para(text) => out.push_str(&format!("{text}\n\n")),
            Block::Links(parts) => {
                // In a terminal the link text, a path, is the link.
                for (text, _) in parts {
                    out.push_str(text);
                }
                out.push_str("\n\n");
            }
            Block::Code(text) => {
                for line in text.lines() {
                    if line.is_empty() {
                        out.push('\n');
                    } else {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
                out.push('\n');
            }
            Block::Table(rows) => {
                let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
                    .map(|c| {
                        rows.iter()
                            .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
                            .max()
                            .unwrap_or(0)
                    })
                    .collect();
                for row in rows {
                    let cells: Vec<String> = row
                        .iter()
                        .zip(&widths)
                        .map(|(v, w)| format!("{v:<w$}"))
                        .collect();
                    out.push_str(&format!("    {}\n", cells.join("  ").trim_end()));
                }
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_the_style_matches_the_csp() {
        let page = Page {
            title: "<t>".into(),
            blocks: vec![Block::Code("a < b && \"c\"".into())],
        };
        let text = html(&page);
        assert!(text.contains("&lt;t&gt;") && text.contains("a &lt; b &amp;&amp; &quot;c&quot;"));
        assert!(!text.contains("<script"));
        let hash = base64::engine::general_purpose::STANDARD.encode(sha256(STYLE.as_bytes()));
        assert!(CSP.to_str().unwrap().contains(&hash));
        assert!(text.contains(&format!("<style>{STYLE}</style>")));
    }
}
