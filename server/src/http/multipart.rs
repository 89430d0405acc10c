//! `multipart/form-data` bodies (RFC 7578 over RFC 2046's multipart syntax), parsed in place: a
//! prediction body is whole in memory before it is parsed, so each part's content is a view of
//! the body (no copy), and the part headers are read with `httparse`.
//!
//! Syntax accepted: an optional preamble, then `--boundary`, each part's headers and an empty line,
//! its content up to `CRLF --boundary`, and after the last part `--boundary--` (then an epilogue,
//! ignored). Spaces or tabs may follow a boundary before its line ends. A part's name is the `name`
//! parameter of its `Content-Disposition` header (quoted or not); a part without one has no name.
//!
//! A leaf of `http`: it imports nothing of the crate.

use std::borrow::Cow;

use axum::body::Bytes;
use memchr::memmem::Finder;

/// Part headers a part may have (a form part has one to three).
const MAX_PART_HEADERS: usize = 16;

/// One part of the body.
#[derive(Debug)]
pub struct Part<'a> {
    /// The `name` of its `Content-Disposition`, if it has one (unquoted).
    pub name: Option<Cow<'a, [u8]>>,
    /// Its content: a view of the body.
    pub content: Bytes,
}

/// The parts of a body, in order; after an error, nothing more.
pub struct Parts<'a> {
    body: &'a Bytes,
    /// Finds `CRLF --boundary` (its needle): the delimiter before every boundary but a first one at
    /// the very start.
    finder: Finder<'static>,
    /// Where the boundary after the last part read ends: `None` before the first boundary.
    at: Option<usize>,
    done: bool,
}

/// Whether `rest` (what follows a boundary) closes the body (`--`), or opens a part: optional
/// spaces or tabs, then CRLF; the offset of the part's headers.
fn after_boundary(rest: &[u8]) -> Result<Option<usize>, &'static str> {
    if rest.starts_with(b"--") {
        return Ok(None);
    }
    let pad = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    if rest[pad..].starts_with(b"\r\n") {
        Ok(Some(pad + 2))
    } else if rest.len() == pad {
        Err("the body ends after a boundary")
    } else {
        Err("a boundary is not followed by a line break")
    }
}

/// The `name` parameter of a `Content-Disposition` value (`form-data; name="image"; ...`).
fn disposition_name(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut i = value.iter().position(|b| *b == b';')?;
    while i < value.len() {
        i += 1; // the `;`
        while value.get(i).is_some_and(|b| matches!(b, b' ' | b'\t')) {
            i += 1;
        }
        let eq = i + value[i..].iter().position(|b| matches!(b, b'=' | b';'))?;
        let key = &value[i..eq];
        if value[eq] == b';' {
            i = eq; // a parameter without a value
            continue;
        }
        let (raw, escaped, end) = param_value(value, eq + 1);
        if key.trim_ascii().eq_ignore_ascii_case(b"name") {
            return Some(if escaped {
                Cow::Owned(unescape(raw))
            } else {
                Cow::Borrowed(raw)
            });
        }
        i = end;
    }
    None
}

/// A parameter value starting at `start`: its bytes (inside the quotes, for a quoted one), whether
/// they hold backslash escapes, and where the value ends (at the next `;` or the end).
fn param_value(value: &[u8], start: usize) -> (&[u8], bool, usize) {
    if value.get(start) != Some(&b'"') {
        let end = start
            + value[start..]
                .iter()
                .position(|b| *b == b';')
                .unwrap_or(value.len() - start);
        return (value[start..end].trim_ascii(), false, end);
    }
    let (mut i, mut escaped) = (start + 1, false);
    while i < value.len() && value[i] != b'"' {
        if value[i] == b'\\' {
            escaped = true;
            i += 1;
        }
        i += 1;
    }
    let inner = &value[start + 1..i.min(value.len())];
    let end = i + value
        .get(i..)
        .map_or(0, |r| r.iter().position(|b| *b == b';').unwrap_or(r.len()));
    (inner, escaped, end)
}

/// A quoted string's content without its backslash escapes.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        out.push(if b == b'\\' {
            bytes.next().copied().unwrap_or(b)
        } else {
            b
        });
    }
    out
}

impl<'a> Parts<'a> {
    /// The parts of `body`, delimited by `boundary` (the `Content-Type`'s parameter).
    pub fn new(body: &'a Bytes, boundary: &str) -> Parts<'a> {
        let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
        Parts {
            body,
            finder: Finder::new(&delimiter).into_owned(),
            at: None,
            done: false,
        }
    }

    /// Where the first boundary ends: at the start of the body, or after a preamble.
    fn first_boundary(&self) -> Result<usize, &'static str> {
        let dash_boundary = &self.finder.needle()[2..];
        if self.body.starts_with(dash_boundary) {
            return Ok(dash_boundary.len());
        }
        self.finder
            .find(self.body)
            .map(|at| at + self.finder.needle().len())
            .ok_or("the body has no boundary")
    }

    /// The part whose headers start at `start`, and where the boundary after it ends.
    fn part(&self, start: usize) -> Result<(Part<'a>, usize), &'static str> {
        let body: &'a [u8] = self.body;
        let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
        let (len, headers) = match httparse::parse_headers(&body[start..], &mut headers) {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) => return Err("the body ends in a part's headers"),
            Err(httparse::Error::TooManyHeaders) => return Err("a part has too many headers"),
            Err(_) => return Err("a part's headers are malformed"),
        };
        let name = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-disposition"))
            .and_then(|h| disposition_name(h.value));
        let content_start = start + len;
        let Some(end) = self.finder.find(&body[content_start..]) else {
            return Err("the body ends in a part's content, without a closing boundary");
        };
        let content = self.body.slice(content_start..content_start + end);
        Ok((
            Part { name, content },
            content_start + end + self.finder.needle().len(),
        ))
    }

    fn advance(&mut self) -> Result<Option<Part<'a>>, &'static str> {
        let boundary_end = match self.at {
            Some(at) => at,
            None => self.first_boundary()?,
        };
        let Some(offset) = after_boundary(&self.body[boundary_end..])? else {
            return Ok(None);
        };
        let (part, next) = self.part(boundary_end + offset)?;
        self.at = Some(next);
        Ok(Some(part))
    }
}

impl<'a> Iterator for Parts<'a> {
    /// A part, or what is wrong with the body.
    type Item = Result<Part<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.advance().transpose();
        self.done = !matches!(next, Some(Ok(_)));
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part as the tests compare it: its name and content, or the error.
    type Read = Result<(Option<String>, Vec<u8>), &'static str>;

    fn parts(body: &[u8], boundary: &str) -> Vec<Read> {
        let body = Bytes::copy_from_slice(body);
        Parts::new(&body, boundary)
            .map(|p| {
                p.map(|p| {
                    let name = p.name.map(|n| String::from_utf8_lossy(&n).into_owned());
                    (name, p.content.to_vec())
                })
            })
            .collect()
    }

    fn named(name: &str, content: &[u8]) -> Read {
        Ok((Some(name.to_string()), content.to_vec()))
    }

    #[test]
    fn parts_are_read_with_their_names() {
        let body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\
            Content-Type: image/jpeg\r\n\r\n\xff\xd8\r\n--Xy\r\n--XyZ\r\n\
            content-disposition: form-data; name=note\r\n\r\nhi\r\n--XyZ--\r\nepilogue";
        assert_eq!(
            parts(body, "XyZ"),
            vec![named("image", b"\xff\xd8\r\n--Xy"), named("note", b"hi")]
        );
    }

    #[test]
    fn a_part_is_a_view_of_the_body() {
        let body = Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc\r\n--b--",
        );
        let part = Parts::new(&body, "b").next().unwrap().unwrap();
        assert_eq!(&part.content[..], b"abc");
        assert_eq!(part.content.as_ptr(), body[body.len() - 10..].as_ptr());
    }

    #[test]
    fn preambles_padding_escapes_and_unnamed_parts() {
        let body = b"preamble\r\n--b \t\r\nContent-Disposition: form-data; filename=\"x\"; name=\"i\\\"m\"\r\n\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--";
        assert_eq!(
            parts(body, "b"),
            vec![named("i\"m", b""), Ok((None, b"x".to_vec()))]
        );
        assert_eq!(parts(b"--b--", "b"), vec![]);
        let utf8 = "--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"Jüpiter.jpg\"\r\n\r\nj\r\n--b--";
        assert_eq!(parts(utf8.as_bytes(), "b"), vec![named("image", b"j")]);
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"no boundary here", "the body has no boundary"),
            (b"--b", "the body ends after a boundary"),
            (
                b"--bx\r\n\r\n",
                "a boundary is not followed by a line break",
            ),
            (
                b"--b\r\nContent-Disposition: form-data",
                "the body ends in a part's headers",
            ),
            (
                b"--b\r\nBad Header\r\n\r\nx\r\n--b--",
                "a part's headers are malformed",
            ),
            (
                b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc",
                "the body ends in a part's content, without a closing boundary",
            ),
        ];
        for (body, reason) in cases {
            assert_eq!(
                parts(body, "b").pop(),
                Some(Err(reason)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let many = format!(
            "--b\r\n{}\r\nx\r\n--b--",
            "X: y\r\n".repeat(MAX_PART_HEADERS + 1)
        );
        assert_eq!(
            parts(many.as_bytes(), "b"),
            vec![Err("a part has too many headers")]
        );
    }

    #[test]
    fn disposition_names() {
        let name = |v: &str| {
            disposition_name(v.as_bytes()).map(|n| String::from_utf8_lossy(&n).into_owned())
        };
        assert_eq!(name("form-data; name=\"image\"").as_deref(), Some("image"));
        assert_eq!(
            name("form-data;name=image;filename=x").as_deref(),
            Some("image")
        );
        assert_eq!(
            name("form-data; filename=\"a;b\"; NAME=\"i\"").as_deref(),
            Some("i")
        );
        assert_eq!(name("form-data; flag; name=\"x\"").as_deref(), Some("x"));
        assert_eq!(name("form-data; filename=\"image\"").as_deref(), None);
        assert_eq!(name("form-data").as_deref(), None);
        assert_eq!(
            name("form-data; name=\"unclosed").as_deref(),
            Some("unclosed")
        );
    }
}
