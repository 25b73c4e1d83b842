//! Lone UTF-16 surrogates in the client's JSON (`"\ud83d"` alone: a JavaScript string cut
//! between the halves of an emoji) made U+FFFD, as a `TextDecoder` would, before anything
//! reads the request: serde_json refuses them in a string, and Vertex refuses them raw.

use std::borrow::Cow;

/// `body`, with every escape of a lone surrogate written `\ufffd`: the same length, so a
/// copy is made only when there is one.
pub(crate) fn replaced(body: &[u8]) -> Cow<'_, [u8]> {
    let mut copy: Option<Vec<u8>> = None;
    let mut paired = false;
    for at in memchr::memmem::find_iter(body, b"\\u") {
        if paired {
            // The low half of a pair just read.
            paired = false;
            continue;
        }
        let Some(unit) = unit(body, at) else { continue };
        if !(0xd800..0xe000).contains(&unit) {
            continue;
        }
        let low = |n| (0xdc00..0xe000).contains(&n);
        if unit < 0xdc00 && unit_at(body, at + 6).is_some_and(low) {
            paired = true;
            continue;
        }
        let copy = copy.get_or_insert_with(|| body.to_vec());
        copy[at + 2..at + 6].copy_from_slice(b"fffd");
    }
    match copy {
        Some(copy) => Cow::Owned(copy),
        None => Cow::Borrowed(body),
    }
}

/// The code unit of the `\uXXXX` escape at `at`, if the backslash there starts an escape
/// (an odd run of backslashes ends at it).
fn unit(body: &[u8], at: usize) -> Option<u16> {
    let run = body[..=at]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    if run % 2 == 0 {
        return None;
    }
    hex(body.get(at + 2..at + 6)?)
}

/// The code unit of a `\uXXXX` that starts exactly at `at`.
fn unit_at(body: &[u8], at: usize) -> Option<u16> {
    if body.get(at..at + 2)? != b"\\u" {
        return None;
    }
    hex(body.get(at + 2..at + 6)?)
}

fn hex(digits: &[u8]) -> Option<u16> {
    u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}
