//! Character classes and small lexers from the RFC 3261 §25 ABNF.
//!
//! Everything here works on bytes: header values can carry any octet a
//! quoted-pair allows (RFC 4475 §3.1.1.2 puts NUL, BEL and DEL in a To
//! display name), so nothing may assume valid UTF-8 before the typed parsers
//! decide what they accept.

/// `token` characters (RFC 3261 §25.1): alphanumerics and `-.!%*_+`'~`.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// `word` characters, used by Call-ID: token characters plus `()<>:\"/[]?{}`.
pub fn is_word_char(b: u8) -> bool {
    is_token_char(b) || b"()<>:\\\"/[]?{}".contains(&b)
}

/// `unreserved` (alphanum / mark).
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

/// Linear white space inside one (already unfolded) header value.
pub fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// True when every byte is a token character and there is at least one.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// Strips leading and trailing spaces and tabs.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_wsp(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_wsp(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Checks that `%` is always followed by two hex digits and every other byte
/// satisfies `allowed` (RFC 3261 `escaped`).
pub fn is_escaped_with(s: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if i + 2 >= s.len() || !(s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if allowed(s[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decodes `%HH` escapes once (never recursively, RFC 3261 §19.1.2).
/// Malformed escapes are kept as they are.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Length of the quoted-string starting at `s[0] == b'"'`, including both
/// quotes, or `None` when it is not terminated.
pub fn quoted_len(s: &[u8]) -> Option<usize> {
    debug_assert_eq!(s.first(), Some(&b'"'));
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

/// Splits a header value at top-level commas: commas inside quoted strings
/// and inside `<...>` do not separate values. Each piece is trimmed.
/// Fails on an unterminated quoted string or angle bracket.
pub fn split_commas(s: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut in_angle = false;
    while i < s.len() {
        match s[i] {
            b'"' if !in_angle => i += quoted_len(&s[i..])?,
            b'<' if !in_angle => {
                in_angle = true;
                i += 1;
            }
            b'>' if in_angle => {
                in_angle = false;
                i += 1;
            }
            b',' if !in_angle => {
                out.push(trim(&s[start..i]));
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    if in_angle {
        return None;
    }
    out.push(trim(&s[start..]));
    Some(out)
}

/// One `;name[=value]` parameter as written on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name (a token), case preserved.
    pub name: String,
    /// Value as written (quoted strings keep their quotes); `None` when the
    /// parameter has no `=`.
    pub value: Option<String>,
}

impl Param {
    /// A parameter with a value.
    pub fn new(name: &str, value: Option<&str>) -> Self {
        Param {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }
    }
}

/// Finds a parameter by case-insensitive name.
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Why a parameter list did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamError {
    /// `;;` or a trailing `;`: a parameter with no name.
    Empty,
    /// The name is not a token.
    BadName,
    /// `name=` with nothing after it, or a value with illegal characters.
    BadValue,
}

/// Parses `*( SEMI generic-param )` where LWS may surround `;` and `=`
/// (RFC 3261 §25.1 `SEMI` and `EQUAL`). `s` must start at the first `;` (or
/// be empty). Values are tokens, hosts (incl. `[v6]`) or quoted strings.
pub fn parse_params(s: &[u8]) -> Result<Vec<Param>, ParamError> {
    let mut out = Vec::new();
    let mut i = skip_wsp(s, 0);
    while i < s.len() {
        if s[i] != b';' {
            return Err(ParamError::BadName);
        }
        i = skip_wsp(s, i + 1);
        let name_start = i;
        while i < s.len() && is_token_char(s[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(ParamError::Empty);
        }
        let name = ascii(&s[name_start..i]);
        i = skip_wsp(s, i);
        let mut value = None;
        if i < s.len() && s[i] == b'=' {
            i = skip_wsp(s, i + 1);
            let v_start = i;
            if i < s.len() && s[i] == b'"' {
                i += quoted_len(&s[i..]).ok_or(ParamError::BadValue)?;
            } else {
                while i < s.len() && (is_token_char(s[i]) || b"[]:".contains(&s[i])) {
                    i += 1;
                }
            }
            if i == v_start {
                return Err(ParamError::BadValue);
            }
            value = Some(String::from_utf8_lossy(&s[v_start..i]).into_owned());
            i = skip_wsp(s, i);
        }
        out.push(Param { name, value });
    }
    Ok(out)
}

/// Writes `;name[=value]` for each parameter.
pub fn write_params(out: &mut String, params: &[Param]) {
    for p in params {
        out.push(';');
        out.push_str(&p.name);
        if let Some(v) = &p.value {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Index of the first byte at or after `i` that is not a space or tab.
pub fn skip_wsp(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_wsp(s[i]) {
        i += 1;
    }
    i
}

/// Bytes known to be ASCII token characters, as a `String`.
pub fn ascii(s: &[u8]) -> String {
    s.iter().map(|&b| b as char).collect()
}

/// Parses an unsigned decimal with no sign, rejecting overflow of `u32` and
/// any non-digit (RFC 4475 §3.1.2.4: overlarge scalars must fail cleanly).
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_commas_respects_quotes_and_angles() {
        let v = split_commas(br#""a, b" <sip:x@y;p=1,2>, <sip:z@w> "#).unwrap();
        assert_eq!(v, vec![&br#""a, b" <sip:x@y;p=1,2>"#[..], b"<sip:z@w>"]);
        assert!(split_commas(br#""open <sip:x@y>"#).is_none());
        assert!(split_commas(b"<sip:x@y").is_none());
    }

    #[test]
    fn params_with_lws_around_separators() {
        let p = parse_params(b" ;   tag    = 1918181833n").unwrap();
        assert_eq!(p, vec![Param::new("tag", Some("1918181833n"))]);
        let p = parse_params(b";lr;q=0.5;x=\"a;b\"").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].value.as_deref(), Some("\"a;b\""));
    }

    #[test]
    fn empty_params_rejected() {
        assert_eq!(parse_params(b";;"), Err(ParamError::Empty));
        assert_eq!(parse_params(b";a;"), Err(ParamError::Empty));
        assert_eq!(parse_params(b";a="), Err(ParamError::BadValue));
    }

    #[test]
    fn overlarge_numbers_fail_cleanly() {
        assert_eq!(parse_u32(b"0009"), Some(9));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"36893488147419103232"), None);
        assert_eq!(parse_u32(b"-1"), None);
        assert_eq!(parse_u32(b""), None);
    }

    #[test]
    fn unescape_once_only() {
        assert_eq!(unescape(b"value%2541"), b"value%41");
        assert_eq!(unescape(b"%Z%45"), b"%ZE");
        assert_eq!(unescape(b"a%4"), b"a%4");
        assert!(is_escaped_with(b"a%41b", is_unreserved));
        assert!(!is_escaped_with(b"a%4", is_unreserved));
        assert!(!is_escaped_with(b"a%zz", is_unreserved));
    }
}
