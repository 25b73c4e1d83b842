//! JSON written by hand, straight into a buffer: what the log line and the Responses bridge
//! write with keys of their own, where building a tree to serialise cost more than the work.

/// `,"key":` for a key of our own, which needs no escaping.
pub fn key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `text` as a JSON string.
pub fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escaped(out, text);
    out.push(b'"');
}

/// `text` as the inside of a JSON string: quotes, backslashes and control characters
/// escaped, everything else (non-ASCII included) as its UTF-8 bytes, as serde_json writes
/// it; runs of plain bytes are copied whole.
pub fn escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Almost every value needs no escaping. A check without early exit is vectorised: a
    // few instructions per 32 bytes instead of a branch per byte.
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    if !bytes.iter().fold(false, |found, &b| found | special(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut plain = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..0x20 => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..at]);
        plain = at + 1;
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]);
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[plain..]);
}

pub fn uint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}
