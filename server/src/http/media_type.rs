//! A strict parser of `Content-Type` values (RFC 9110, section 8.3.1):
//! `type "/" subtype *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`.
//!
//! A leaf of `http`: it imports nothing.

/// A parsed media type: the lower-case essence (`type/subtype`) and the parameters in order
/// (names lower-case, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// The value of parameter `name` (lower-case), if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A cursor over the bytes of the value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self, what: &'static str) -> Result<String, &'static str> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        if self.i == start {
            return Err(what);
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).to_ascii_lowercase())
    }

    fn quoted(&mut self) -> Result<String, &'static str> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("a quoted parameter value is not closed"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    let escaped = self.s.get(self.i + 1).copied();
                    match escaped {
                        Some(c) if c == b'\t' || (0x20..0x7f).contains(&c) => out.push(c),
                        _ => return Err("a quoted parameter value has an invalid escape"),
                    }
                    self.i += 2;
                }
                Some(c) if c == b'\t' || (0x20..0x7f).contains(&c) => {
                    out.push(c);
                    self.i += 1;
                }
                Some(_) => return Err("a quoted parameter value has a control character"),
            }
        }
    }

    fn parameter(&mut self) -> Result<(String, String), &'static str> {
        let name = self.token("a parameter has no name")?;
        if self.peek() != Some(b'=') {
            return Err("a parameter has no `=value`");
        }
        self.i += 1;
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            // Values keep their case (a multipart boundary is case-sensitive).
            let start = self.i;
            self.token("a parameter has no value")?;
            String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
        };
        Ok((name, value))
    }
}

/// Parse a `Content-Type` value; the error says what is wrong with it.
pub fn parse(value: &str) -> Result<MediaType, &'static str> {
    let mut c = Cursor {
        s: value.as_bytes(),
        i: 0,
    };
    c.skip_ows();
    let ty = c.token("it does not start with a type (as in `image/png`)")?;
    if c.peek() != Some(b'/') {
        return Err("the type has no `/subtype` (as in `image/png`)");
    }
    c.i += 1;
    let subtype = c.token("the subtype is missing (as in `image/png`)")?;
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
    Ok(MediaType {
        essence: format!("{ty}/{subtype}"),
        params,
    })
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
