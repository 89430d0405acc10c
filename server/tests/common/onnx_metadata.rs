//! An ONNX model's `metadata_props`, read and rewritten on the bytes (protocol buffers' wire format,
//! top level only): the model variants the tests need (a key changed or removed) without the
//! Python tools. `ModelProto.metadata_props` is field 14, each a `StringStringEntryProto` (`key` 1,
//! `value` 2); every other field is copied byte for byte.

const METADATA_PROPS: u64 = 14;

fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One field: its number, the payload of a length-delimited field, the whole field's bytes.
type Field<'a> = (u64, Option<&'a [u8]>, &'a [u8]);

/// The top-level fields of `b`.
fn fields(b: &[u8]) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let start = pos;
        let tag = varint(b, &mut pos);
        let payload = match tag & 7 {
            0 => {
                varint(b, &mut pos);
                None
            }
            1 => {
                pos += 8;
                None
            }
            2 => {
                let len = varint(b, &mut pos) as usize;
                pos += len;
                Some(&b[pos - len..pos])
            }
            5 => {
                pos += 4;
                None
            }
            other => panic!("wire type {other} is not in an ONNX model"),
        };
        out.push((tag >> 3, payload, &b[start..pos]));
    }
    out
}

/// A `StringStringEntryProto`'s key and value.
fn entry(b: &[u8]) -> (String, String) {
    let (mut key, mut value) = (String::new(), String::new());
    for (field, payload, _) in fields(b) {
        let text = String::from_utf8_lossy(payload.unwrap_or_default()).into_owned();
        match field {
            1 => key = text,
            2 => value = text,
            _ => {}
        }
    }
    (key, value)
}

/// The model's metadata, in its order.
pub fn metadata(model: &[u8]) -> Vec<(String, String)> {
    fields(model)
        .into_iter()
        .filter(|(field, payload, _)| *field == METADATA_PROPS && payload.is_some())
        .map(|(_, payload, _)| entry(payload.unwrap()))
        .collect()
}

/// The value of `key` in the model's metadata.
pub fn get(model: &[u8], key: &str) -> Option<String> {
    metadata(model)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// `model` with `key` removed from its metadata and, with `value`, set to it (last).
pub fn with(model: &[u8], key: &str, value: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(model.len() + value.map_or(0, str::len) + 64);
    for (field, payload, whole) in fields(model) {
        let drop = field == METADATA_PROPS && payload.is_some_and(|p| entry(p).0 == key);
        if !drop {
            out.extend_from_slice(whole);
        }
    }
    if let Some(value) = value {
        let mut e = Vec::new();
        for (field, text) in [(1u64, key), (2, value)] {
            put_varint(&mut e, field << 3 | 2);
            put_varint(&mut e, text.len() as u64);
            e.extend_from_slice(text.as_bytes());
        }
        put_varint(&mut out, METADATA_PROPS << 3 | 2);
        put_varint(&mut out, e.len() as u64);
        out.extend_from_slice(&e);
    }
    out
}
