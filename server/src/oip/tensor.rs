//! Tensors as the protocol carries them: the element types this server takes and answers, the raw
//! form of a tensor's elements (flat, little-endian; a BYTES element as a 4-byte little-endian
//! length and its bytes), and shapes.

use bytes::Bytes;

/// The element types the server takes (BYTES pictures, FP32 tensors) and answers (BOOL too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Bool,
    Fp32,
    Bytes,
}

impl Datatype {
    /// The protocol's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Fp32 => "FP32",
            Datatype::Bytes => "BYTES",
        }
    }
}

/// An input tensor's elements, flattened in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    Bytes(Vec<Bytes>),
    Fp32(Vec<f32>),
}

impl Elements {
    /// How many elements there are.
    pub fn len(&self) -> usize {
        match self {
            Elements::Bytes(v) => v.len(),
            Elements::Fp32(v) => v.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The elements of a tensor of `datatype` (a protocol name) from their raw form; `Err` says why
/// they cannot be read (a type this server does not take, a length that does not fit the type).
pub fn decode_raw(datatype: &str, raw: &Bytes) -> Result<Elements, String> {
    match datatype {
        "BYTES" => {
            let mut out = Vec::new();
            let mut at = 0usize;
            while at < raw.len() {
                let Some(head) = raw.get(at..at + 4) else {
                    return Err(format!(
                        "its raw BYTES data ends inside the 4-byte length of element {}",
                        out.len()
                    ));
                };
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let start = at + 4;
                if raw.len() - start < len {
                    return Err(format!(
                        "element {} of its raw BYTES data says {len} bytes, {} are left",
                        out.len(),
                        raw.len() - start
                    ));
                }
                out.push(raw.slice(start..start + len));
                at = start + len;
            }
            Ok(Elements::Bytes(out))
        }
        "FP32" => {
            if !raw.len().is_multiple_of(4) {
                return Err(format!(
                    "its raw FP32 data has {} bytes, not a multiple of 4",
                    raw.len()
                ));
            }
            Ok(Elements::Fp32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ))
        }
        other => Err(format!("datatype {other} is not taken here")),
    }
}

/// An output tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    Bytes(Vec<String>),
    Fp32(Vec<f32>),
    Bool(Vec<bool>),
}

impl OutputData {
    /// The element type.
    pub fn datatype(&self) -> Datatype {
        match self {
            OutputData::Bytes(_) => Datatype::Bytes,
            OutputData::Fp32(_) => Datatype::Fp32,
            OutputData::Bool(_) => Datatype::Bool,
        }
    }

    /// The elements in their raw form.
    pub fn to_raw(&self) -> Vec<u8> {
        match self {
            OutputData::Bytes(v) => {
                let mut out = Vec::with_capacity(v.iter().map(|s| 4 + s.len()).sum());
                for s in v {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                out
            }
            OutputData::Fp32(v) => v.iter().flat_map(|f| f.to_le_bytes()).collect(),
            OutputData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
        }
    }
}

/// The number of elements of a tensor of `shape`; `Err` for a negative dimension or a product
/// too large to be a real tensor.
pub fn element_count(shape: &[i64]) -> Result<usize, String> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d =
            usize::try_from(d).map_err(|_| format!("dimension {d} of its shape is negative"))?;
        n.checked_mul(d)
            .ok_or_else(|| "its shape has too many elements".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_round_trip_and_bad_lengths_are_named() {
        let out = OutputData::Bytes(vec!["Mars".into(), String::new(), "Moon".into()]);
        let raw = Bytes::from(out.to_raw());
        assert_eq!(&raw[..8], &[4, 0, 0, 0, b'M', b'a', b'r', b's']);
        let Elements::Bytes(back) = decode_raw("BYTES", &raw).unwrap() else {
            panic!("bytes")
        };
        assert_eq!(back, [&b"Mars"[..], b"", b"Moon"]);
        let cut = raw.slice(..raw.len() - 1);
        assert!(decode_raw("BYTES", &cut).unwrap_err().contains("element 2"));
        let short = raw.slice(..2);
        assert!(
            decode_raw("BYTES", &short)
                .unwrap_err()
                .contains("element 0")
        );
        assert_eq!(decode_raw("BYTES", &Bytes::new()).unwrap().len(), 0);
    }

    #[test]
    fn raw_fp32_and_bool_are_little_endian() {
        let raw = Bytes::from(OutputData::Fp32(vec![1.0, -2.5]).to_raw());
        assert_eq!(&raw[..4], &1.0f32.to_le_bytes());
        assert_eq!(
            decode_raw("FP32", &raw).unwrap(),
            Elements::Fp32(vec![1.0, -2.5])
        );
        assert!(
            decode_raw("FP32", &raw.slice(..5))
                .unwrap_err()
                .contains("multiple of 4")
        );
        assert!(decode_raw("INT64", &raw).unwrap_err().contains("INT64"));
        assert_eq!(OutputData::Bool(vec![true, false]).to_raw(), [1, 0]);
    }

    #[test]
    fn element_counts_refuse_negative_and_huge_shapes() {
        assert_eq!(element_count(&[2, 3, 4]), Ok(24));
        assert_eq!(element_count(&[]), Ok(1));
        assert_eq!(element_count(&[0, 5]), Ok(0));
        assert!(element_count(&[-1, 3]).unwrap_err().contains("negative"));
        assert!(
            element_count(&[i64::MAX, i64::MAX])
                .unwrap_err()
                .contains("too many")
        );
    }
}
