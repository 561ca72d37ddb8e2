//! Finding the line of a key in a TOML document, so that validation errors can point at it.

use toml_edit::{ImDocument, Item};

use crate::PolicyError;

/// A parsed document that can tell where a dotted key is written.
pub struct Locator<'a> {
    text: &'a str,
    origin: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    /// Indexes `text` (from `origin`, a file name or `<inline>`).
    pub fn new(text: &'a str, origin: &'a str) -> Self {
        Locator {
            text,
            origin,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The 1-based line where `key` (or its nearest written ancestor) is.
    pub fn line_of(&self, key: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut item: &Item = doc.as_item();
        let mut span = None;
        for k in key {
            match item.get(k) {
                Some(next) => {
                    item = next;
                    if let Some(s) = next.span() {
                        span = Some(s);
                    } else if let Some(t) = next.as_table() {
                        span = t.span().or(span);
                    }
                }
                None => break,
            }
        }
        let start = span?.start;
        Some(
            self.text[..start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
        )
    }

    /// An [`PolicyError::Invalid`] for `key`, with its line.
    pub fn invalid(&self, key: &[&str], value: &str, allowed: &str) -> PolicyError {
        PolicyError::Invalid {
            origin: match self.line_of(key) {
                Some(l) => format!("{}:{l}", self.origin),
                None => self.origin.to_string(),
            },
            key: key.join("."),
            value: value.to_string(),
            allowed: allowed.to_string(),
        }
    }
}
