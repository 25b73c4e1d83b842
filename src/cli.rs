//! The command line: which subcommand to run, and the key tools that need no server.

use std::io::Read;

use base64::Engine;

use crate::config::Mode;
use crate::keys::{MIN_KEY_LEN, holds_control, sha256};

pub const USAGE: &str = "\
vertex-proxy: an OpenAI-compatible proxy in front of Vertex AI

Usage:
  vertex-proxy                  serve, configured from the environment (see README.md)
  vertex-proxy demo             serve in front of a built-in stand-in for Vertex; no Google account needed
  vertex-proxy check            validate the environment as startup would and print the resolved configuration
  vertex-proxy keygen [--id ID] print a new random key and its API_KEYS_JSON entries
  vertex-proxy hash-key         read a key on stdin and print its SHA-256 (for \"key_sha256\")
  vertex-proxy --help           show this help
  vertex-proxy --version        show the version
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve(Mode),
    Check,
    Keygen { id: Option<String> },
    HashKey,
    Help,
    Version,
}

/// Parses the arguments after the program name; the error is for the user, with exit status 2.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(match args.as_slice() {
        [] => Command::Serve(Mode::Vertex),
        ["demo"] => Command::Serve(Mode::Demo),
        ["check"] => Command::Check,
        ["keygen"] => Command::Keygen { id: None },
        ["keygen", "--id", id] => Command::Keygen {
            id: Some(key_id(id)?),
        },
        ["keygen", id] if id.starts_with("--id=") => Command::Keygen {
            id: Some(key_id(&id["--id=".len()..])?),
        },
        ["hash-key"] => Command::HashKey,
        ["-h" | "--help" | "help"] => Command::Help,
        ["-V" | "--version"] => Command::Version,
        _ => return Err(format!("unknown arguments: {}", args.join(" "))),
    })
}

fn key_id(id: &str) -> Result<String, String> {
    if id.trim().is_empty() {
        Err("--id needs a non-empty name".into())
    } else {
        Ok(id.to_owned())
    }
}

/// A new key: `sk_live_` and 32 bytes from the OS random source, URL-safe base64.
pub fn new_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "sk_live_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What `keygen` prints: the key, its plain entry and its hashed entry.
pub fn keygen_text(key: &str, id: Option<&str>) -> String {
    let hash = hex::encode(sha256(key.as_bytes()));
    let id = id.map_or_else(|| format!("key-{}", &hash[..8]), str::to_owned);
    let id = serde_json::to_string(&id).expect("a string serialises");
    format!(
        "{key}\n\n\
         Plain entry, for the keys file you keep private (api-keys.json):\n  \
         {{\"id\": {id}, \"key\": \"{key}\"}}\n\n\
         Hashed entry, safe in the service's environment (deploy.sh makes these for you):\n  \
         {{\"id\": {id}, \"key_sha256\": \"{hash}\"}}\n"
    )
}

/// `hash-key`: the SHA-256 hex of the key on stdin, surrounding white space removed (as the
/// proxy removes it from headers).
pub fn hash_key(input: &str) -> Result<String, String> {
    let key = input.trim();
    if key.is_empty() {
        return Err("no key on stdin; try: printf %s \"$KEY\" | vertex-proxy hash-key".into());
    }
    if key.chars().count() < MIN_KEY_LEN {
        return Err(format!(
            "the key is shorter than {MIN_KEY_LEN} characters; the proxy would refuse it"
        ));
    }
    if holds_control(key) {
        return Err(
            "the key holds a control character, so it could never be sent in a header".into(),
        );
    }
    Ok(hex::encode(sha256(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_every_subcommand() {
        assert_eq!(parse(&args("")), Ok(Command::Serve(Mode::Vertex)));
        assert_eq!(parse(&args("demo")), Ok(Command::Serve(Mode::Demo)));
        assert_eq!(parse(&args("check")), Ok(Command::Check));
        assert_eq!(parse(&args("keygen")), Ok(Command::Keygen { id: None }));
        assert_eq!(
            parse(&args("keygen --id raj")),
            Ok(Command::Keygen {
                id: Some("raj".into())
            })
        );
        assert_eq!(
            parse(&args("keygen --id=raj")),
            Ok(Command::Keygen {
                id: Some("raj".into())
            })
        );
        assert_eq!(parse(&args("hash-key")), Ok(Command::HashKey));
        assert_eq!(parse(&args("--version")), Ok(Command::Version));
        assert_eq!(parse(&args("-h")), Ok(Command::Help));
        for bad in [
            "serve",
            "demo extra",
            "keygen --id",
            "keygen --name x",
            "--port 80",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_keys_are_random_and_well_formed() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a, b);
        let body = a.strip_prefix("sk_live_").unwrap();
        assert_eq!(body.len(), 43, "32 bytes of URL-safe base64");
        assert!(
            body.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn keygen_entries_parse_and_match_the_key() {
        let key = "sk_live_0123456789abcdef0123";
        let text = keygen_text(key, Some("raj \"laptop\""));
        let entries: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(|l| serde_json::from_str(l.trim()).unwrap())
            .collect();
        assert_eq!(entries[0]["key"], key);
        assert_eq!(entries[0]["id"], "raj \"laptop\"");
        assert_eq!(entries[1]["key_sha256"], hash_key(key).unwrap());
        // Both entries are accepted by the proxy and let the key in.
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", key.parse().unwrap());
        for entry in &entries {
            let set = crate::keys::KeySet::parse(&format!("[{entry}]"), |_| true).unwrap();
            assert!(set.authenticate(&headers, None).is_ok(), "{entry}");
        }
    }

    #[test]
    fn hash_key_trims_and_refuses_short_keys() {
        assert_eq!(
            hash_key("sk_live_0123456789abcdef\n").unwrap(),
            hex::encode(sha256(b"sk_live_0123456789abcdef"))
        );
        assert!(hash_key("").is_err());
        assert!(hash_key("short\n").is_err());
        // Two lines are two keys, or one no header could carry: its hash could never match.
        let two = hash_key("sk_live_0123456789abcdef\nsk_live_0123456789abcdef\n");
        assert_eq!(
            two.unwrap_err(),
            "the key holds a control character, so it could never be sent in a header"
        );
        assert!(hash_key("sk_live_0123\t456789abcdef").is_ok());
    }
}
