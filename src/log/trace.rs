//! The trace a request belongs to, from the headers Cloud Run and W3C clients send, in the
//! form Cloud Logging groups lines by.

use http::{HeaderMap, HeaderName};

/// `projects/P/traces/ID` and the span id in hex, from `X-Cloud-Trace-Context`
/// (`TRACE/SPAN;o=1`, span in decimal) or W3C `traceparent` (`00-TRACE-SPAN-01`, span in hex).
pub fn parse(headers: &HeaderMap, project: &str) -> Option<(String, Option<String>)> {
    // Looked up by name rather than by text: a text is parsed into a name at each lookup.
    static CLOUD: HeaderName = HeaderName::from_static("x-cloud-trace-context");
    static W3C: HeaderName = HeaderName::from_static("traceparent");
    let cloud = headers.get(&CLOUD).and_then(|v| v.to_str().ok()).map(|v| {
        let (trace, rest) = v.split_once('/').unwrap_or((v, ""));
        let span = rest.split(';').next().and_then(|s| s.parse::<u64>().ok());
        (trace, span.map(|s| format!("{s:016x}")))
    });
    let w3c = || {
        let value = headers.get(&W3C)?.to_str().ok()?;
        let mut parts = value.split('-');
        let (_, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
        Some((trace, Some(span.to_owned())))
    };
    let (trace, span) = cloud.filter(|(t, _)| is_hex(t, 32)).or_else(w3c)?;
    is_hex(trace, 32).then(|| {
        (
            format!("projects/{project}/traces/{trace}"),
            span.filter(|s| is_hex(s, 16)),
        )
    })
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn cloud_trace_context_then_traceparent() {
        let trace = "0123456789abcdef0123456789abcdef";
        let cloud = format!("{trace}/255;o=1");
        let parsed = parse(&headers(&[("x-cloud-trace-context", cloud.leak())]), "p");
        assert_eq!(
            parsed,
            Some((
                format!("projects/p/traces/{trace}"),
                Some("00000000000000ff".into())
            ))
        );
        let w3c = format!("00-{trace}-00000000000000aa-01");
        let parsed = parse(&headers(&[("traceparent", w3c.leak())]), "p");
        assert_eq!(parsed.unwrap().1.as_deref(), Some("00000000000000aa"));
        for bad in ["short/1", "zz23456789abcdef0123456789abcdef/1"] {
            assert_eq!(
                parse(&headers(&[("x-cloud-trace-context", bad)]), "p"),
                None
            );
        }
    }
}
