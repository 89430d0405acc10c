//! A strict parser of `Content-Type` values (RFC 9110, section 8.3.1):
//! `type "/" subtype *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`.
//!
//! A leaf of `http`: it imports nothing. Every prediction request's `Content-Type` goes through
//! it, so the parts are views of the value, copied only to lower-case them or to unquote.

use std::borrow::Cow;

/// A parsed media type: the lower-case essence (`type/subtype`) and the parameters in order
/// (names lower-case, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType<'a> {
    pub essence: Cow<'a, str>,
    pub params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl MediaType<'_> {
    /// The value of parameter `name` (lower-case), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `s` in lower case, copied only when it has an upper-case letter.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A cursor over the value.
struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// A token, as it is written (tokens are ASCII).
    fn token(&mut self, what: &'static str) -> Result<&'a str, &'static str> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(what);
        }
        Ok(&self.s[start..self.i])
    }

    /// A quoted string's content (ASCII), unescaped: a view of the value when it has no escape.
    fn quoted(&mut self) -> Result<Cow<'a, str>, &'static str> {
        self.i += 1; // the opening quote
        let start = self.i;
        let mut unescaped: Option<String> = None;
        loop {
            match self.peek() {
                None => return Err("a quoted parameter value is not closed"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(match unescaped {
                        Some(out) => Cow::Owned(out),
                        None => Cow::Borrowed(&self.s[start..self.i - 1]),
                    });
                }
                Some(b'\\') => {
                    let escaped = self.s.as_bytes().get(self.i + 1).copied();
                    let out = unescaped.get_or_insert_with(|| self.s[start..self.i].to_string());
                    match escaped {
                        Some(c) if c == b'\t' || (0x20..0x7f).contains(&c) => {
                            out.push(char::from(c))
                        }
                        _ => return Err("a quoted parameter value has an invalid escape"),
                    }
                    self.i += 2;
                }
                Some(c) if c == b'\t' || (0x20..0x7f).contains(&c) => {
                    if let Some(out) = &mut unescaped {
                        out.push(char::from(c));
                    }
                    self.i += 1;
                }
                Some(_) => return Err("a quoted parameter value has a control character"),
            }
        }
    }

    fn parameter(&mut self) -> Result<(Cow<'a, str>, Cow<'a, str>), &'static str> {
        let name = lower(self.token("a parameter has no name")?);
        if self.peek() != Some(b'=') {
            return Err("a parameter has no `=value`");
        }
        self.i += 1;
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            // Values keep their case (a multipart boundary is case-sensitive).
            Cow::Borrowed(self.token("a parameter has no value")?)
        };
        Ok((name, value))
    }
}

/// Parse a `Content-Type` value; the error says what is wrong with it.
pub fn parse(value: &str) -> Result<MediaType<'_>, &'static str> {
    let mut c = Cursor { s: value, i: 0 };
    c.skip_ows();
    let start = c.i;
    c.token("it does not start with a type (as in `image/png`)")?;
    if c.peek() != Some(b'/') {
        return Err("the type has no `/subtype` (as in `image/png`)");
    }
    c.i += 1;
    c.token("the subtype is missing (as in `image/png`)")?;
    let essence = lower(&value[start..c.i]);
    let mut params = Vec::new();
    loop {
        c.skip_ows();
        match c.peek() {
            None => break,
            Some(b';') => c.i += 1,
            Some(_) => return Err("unexpected characters after the media type"),
        }
        c.skip_ows();
        match c.peek() {
            None | Some(b';') => continue,
            Some(_) => params.push(c.parameter()?),
        }
    }
    Ok(MediaType { essence, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_media_types_parse() {
        let m = parse("Multipart/Form-Data; Boundary=AbC").unwrap();
        assert_eq!(m.essence, "multipart/form-data");
        assert_eq!(m.param("boundary"), Some("AbC"));
        let m = parse("multipart/form-data; boundary=\"a b\\\"c\"").unwrap();
        assert_eq!(m.param("boundary"), Some("a b\"c"));
        assert_eq!(parse("image/png").unwrap().essence, "image/png");
        assert_eq!(parse(" image/png ;").unwrap().essence, "image/png");
        let m = parse("image/png;;charset=x ; q=1").unwrap();
        assert_eq!(
            m.params,
            [("charset".into(), "x".into()), ("q".into(), "1".into())]
        );
        // Views of the value, unless a case or an escape has to change.
        let m = parse("multipart/form-data; boundary=\"x y\"").unwrap();
        assert!(matches!(m.essence, Cow::Borrowed("multipart/form-data")));
        assert!(matches!(
            m.params[0],
            (Cow::Borrowed("boundary"), Cow::Borrowed("x y"))
        ));
    }

    #[test]
    fn malformed_media_types_are_refused() {
        for bad in [
            ";;;=;",
            ";",
            "=",
            "image",
            "/png",
            "image/",
            "image/png x",
            "image/png; =x",
            "image/png; a",
            "image/png; a=",
            "image/png; a=\"open",
            "image/png; a=b c",
            "image/png; a=\"\u{1}\"",
            "ima ge/png",
            "image/png/x",
            "image/p(ng",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
