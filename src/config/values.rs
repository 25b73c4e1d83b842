//! The values configuration variables hold: numbers, flags, project ids, URLs, certificate files.
//! Each parser says what is wrong in words an operator can act on.

use http::Uri;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::models::is_loopback;

/// A whole number of at least 1.
pub(super) fn positive<T: std::str::FromStr + PartialEq + From<u8>>(
    value: Option<String>,
    default: T,
) -> Result<T, String> {
    number(value, default).and_then(|n| {
        if n == T::from(0) {
            Err("must be at least 1".into())
        } else {
            Ok(n)
        }
    })
}

pub(super) fn number<T: std::str::FromStr>(value: Option<String>, default: T) -> Result<T, String> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("must be a whole number, got {:?}", v.trim())),
    }
}

pub(super) fn flag(value: Option<String>, default: bool) -> Result<bool, String> {
    match value.as_deref().map(str::trim) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(_) => Err("must be true or false".into()),
    }
}

/// Project ids, optionally domain-scoped (`example.com:my-project`). The id becomes part of
/// the upstream path, so nothing that could change the path is accepted.
pub fn is_project_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
        })
}

/// `VERTEX_BASE_URL` must be an origin. Plain `http://` is allowed only to loopback, so a
/// typo cannot send the Google token across a network in clear text.
///
/// SECURITY: no message quotes the URL, which may hold a password (`user:pass@`, refused)
/// or a key in a query; the variable's name says which value is meant.
pub(super) fn parse_base_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .trim_end_matches('/')
        .parse()
        .map_err(|_| "is not a URL".to_owned())?;
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err(
            "may not hold credentials (user info before '@'); give the origin alone, scheme://host[:port]"
                .into(),
        );
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err("must be an origin only (scheme://host[:port]), with no path".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(authority.host()) => Ok(uri),
        Some("http") => Err(
            "http:// is accepted only for loopback hosts (127.0.0.1, ::1, localhost); use https://"
                .into(),
        ),
        _ => Err("must start with https://".into()),
    }
}

/// The certificates of a PEM file: at least one, and all of them valid.
pub(super) fn read_roots(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let roots = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{path} is not a valid PEM file: {e}"))?;
    if roots.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rules() {
        assert!(parse_base_url("https://europe-west4-aiplatform.googleapis.com").is_ok());
        assert!(parse_base_url("http://localhost:9000").is_ok());
        assert!(parse_base_url("http://[::1]:9000").is_ok());
        for bad in [
            "http://10.0.0.1",
            "ftp://x",
            "https://x/v1/projects",
            "not a url",
            "https://",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_base_url_holding_credentials_is_refused_and_never_quoted() {
        for bad in [
            "https://user:hunter2@vertex.example.com",
            "https://hunter2@vertex.example.com",
            "http://user:hunter2@127.0.0.1:9000",
            // Wrong in another way too: still not quoted.
            "https://user:hunter2@vertex.example.com/v1",
            "ftp://user:hunter2@vertex.example.com",
        ] {
            let error = parse_base_url(bad).unwrap_err();
            assert!(
                error.starts_with("may not hold credentials"),
                "{bad}: {error}"
            );
        }
        // No message quotes the URL, whatever is wrong with it.
        for bad in [
            "https://user:hunter 2@vertex.example.com",
            "http://hunter2.example.com",
            "https://hunter2.example.com/?key=hunter2",
            "ftp://hunter2.example.com",
        ] {
            let error = parse_base_url(bad).unwrap_err();
            assert!(!error.contains("hunter"), "{bad}: {error}");
        }
    }
}
