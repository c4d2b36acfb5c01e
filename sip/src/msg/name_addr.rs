//! `name-addr` / `addr-spec` values of From, To, Contact, Route and
//! Record-Route (RFC 3261 §20.10 and §25.1).
//!
//! Both forms are accepted: `"Display" <uri>;params` and `uri;params`. In the
//! second form everything after the first `;` belongs to the header, not the
//! URI, and a URI with `?headers` must be enclosed in angle brackets
//! (RFC 3261 §20). Display names are either a quoted string or tokens; a
//! comma or an unterminated quote is an error (RFC 4475 §3.1.2.6, §3.1.2.15),
//! and so is whitespace inside the brackets (§3.1.2.14).

use std::fmt;

use super::grammar::{
    Param, ParamError, find_param, is_token_char, is_wsp, parse_params, quoted_len, skip_wsp, trim,
    write_params,
};
use super::uri::{Uri, UriError};

/// Why a name-addr did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameAddrError {
    /// The value is empty.
    #[error("empty address")]
    Empty,
    /// The display name has an unterminated quote or a non-token character.
    #[error("malformed display name")]
    DisplayName,
    /// `<` without `>`, or text between `>` and the parameters.
    #[error("malformed angle brackets")]
    Brackets,
    /// The URI itself is malformed.
    #[error("malformed URI: {0}")]
    Uri(UriError),
    /// A header parameter is malformed (e.g. `;;`).
    #[error("malformed header parameter")]
    Param,
}

/// An address with optional display name and header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as written (quotes kept), if any.
    pub display: Option<Vec<u8>>,
    /// The address.
    pub uri: Uri,
    /// Header parameters (`tag`, `expires`, `lr` on Route is a URI param).
    pub params: Vec<Param>,
}

impl NameAddr {
    /// An address in angle brackets with no display name or parameters.
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parses one name-addr or addr-spec with its parameters.
    pub fn parse(s: &[u8]) -> Result<NameAddr, NameAddrError> {
        let s = trim(s);
        if s.is_empty() {
            return Err(NameAddrError::Empty);
        }
        let (display, uri_start) = if s[0] == b'"' {
            let n = quoted_len(s).ok_or(NameAddrError::DisplayName)?;
            let next = skip_wsp(s, n);
            if s.get(next) != Some(&b'<') {
                return Err(NameAddrError::Brackets);
            }
            (Some(s[..n].to_vec()), Some(next))
        } else if let Some(lt) = s.iter().position(|&b| b == b'<') {
            let name = trim(&s[..lt]);
            if !name.iter().all(|&b| is_token_char(b) || is_wsp(b)) {
                return Err(NameAddrError::DisplayName);
            }
            ((!name.is_empty()).then(|| name.to_vec()), Some(lt))
        } else {
            (None, None)
        };

        let (uri_bytes, rest) = match uri_start {
            Some(lt) => {
                let gt = s[lt..]
                    .iter()
                    .position(|&b| b == b'>')
                    .ok_or(NameAddrError::Brackets)?
                    + lt;
                (&s[lt + 1..gt], &s[gt + 1..])
            }
            None => {
                let end = s
                    .iter()
                    .position(|&b| b == b';' || is_wsp(b))
                    .unwrap_or(s.len());
                if s[..end].contains(&b'?') {
                    return Err(NameAddrError::Brackets);
                }
                (&s[..end], &s[end..])
            }
        };
        let uri = Uri::parse(uri_bytes).map_err(NameAddrError::Uri)?;
        let params = parse_params(rest).map_err(|e| match e {
            ParamError::BadName if !trim(rest).starts_with(b";") => NameAddrError::Brackets,
            _ => NameAddrError::Param,
        })?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").and_then(|p| p.value.as_deref())
    }

    /// A header parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for NameAddr {
    /// Always writes the angle-bracket form, which is valid for any URI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{} ", String::from_utf8_lossy(d))?;
        }
        write!(f, "<{}>", self.uri)?;
        let mut s = String::new();
        write_params(&mut s, &self.params);
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_spec_with_spaced_params() {
        let a =
            NameAddr::parse(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.tag(), Some("1918181833n"));
        assert_eq!(a.uri.to_string(), "sip:vivekg@chair-dnrc.example.com");
    }

    #[test]
    fn quoted_display_with_escapes() {
        let a = NameAddr::parse(
            br#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.display.as_deref(), Some(&br#""J Rosenberg \\\"""#[..]));
        assert_eq!(a.tag(), Some("98asjd8"));
        let a = NameAddr::parse(b"\"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" <sip:x@example.com>").unwrap();
        assert!(a.display.unwrap().contains(&0));
    }

    #[test]
    fn token_display_without_space() {
        let a = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display.as_deref(), Some(&b"caller"[..]));
        assert_eq!(a.tag(), Some("323"));
    }

    #[test]
    fn non_sip_schemes_allowed() {
        assert!(NameAddr::parse(b"isbn:2983792873").is_ok());
        assert!(NameAddr::parse(b"<http://www.example.com>;tag=1").is_ok());
    }

    #[test]
    fn rejects_torture_cases() {
        // unterminated quote, comma in display name, spaces in brackets,
        // empty params, unbracketed URI with headers
        for bad in [
            &b"\"Mr. J. User <sip:j.user@example.com>"[..],
            b"Bell, Alexander <sip:a.g.bell@bell-tel.com>;tag=43",
            b"\"Watson, Thomas\" < sip:t.watson@example.org >",
            b"\"Joe\" <sip:joe@example.org>;;;;",
            b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            b"<sip:x@y",
            b"<sip:x@y> junk",
        ] {
            assert!(
                NameAddr::parse(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
