//! Reply templates: text with `{path}` placeholders (`{slot.location}`,
//! `{inventory.name}`, `{booking.date_words}`); `{{` and `}}` are literal
//! braces. Rendering fails when a placeholder has no value, so the reply
//! logic can fall through to the next template instead of speaking a gap.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses a template; the error says what is wrong for `voxtrunk check`.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) if ch.is_ascii_alphanumeric() || ch == '_' || ch == '.' => {
                                field.push(ch)
                            }
                            Some(ch) => {
                                return Err(format!("unexpected {ch:?} in placeholder {{{field}"));
                            }
                            None => return Err(format!("placeholder {{{field} is not closed")),
                        }
                    }
                    if field.is_empty() || !field.contains('.') {
                        return Err(format!(
                            "placeholder {{{field}}} must look like {{source.field}} or {{slot.name}}"
                        ));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Field(field));
                }
                '}' => return Err("a lone } (write }} for a brace)".into()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    /// Renders with `lookup`; `None` if any placeholder has no value.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => out.push_str(&lookup(f)?),
            }
        }
        Some(out)
    }

    /// The placeholders it uses.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Piece::Field(f) => Some(f.as_str()),
            Piece::Text(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_falls_through_on_missing_values() {
        let t = Template::parse("{inventory.name} in {slot.location} {{ok}}").unwrap();
        let r = t.render(|f| match f {
            "inventory.name" => Some("Prestige Lakeside".into()),
            "slot.location" => Some("Whitefield".into()),
            _ => None,
        });
        assert_eq!(r.as_deref(), Some("Prestige Lakeside in Whitefield {ok}"));
        assert_eq!(t.render(|_| None), None);
        assert_eq!(
            t.fields().collect::<Vec<_>>(),
            ["inventory.name", "slot.location"]
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(Template::parse("{name").unwrap_err().contains("not closed"));
        assert!(
            Template::parse("{name}")
                .unwrap_err()
                .contains("source.field")
        );
        assert!(Template::parse("a } b").unwrap_err().contains("lone"));
        assert!(Template::parse("{a b}").is_err());
    }
}
