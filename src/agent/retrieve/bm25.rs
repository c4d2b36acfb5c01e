//! A small in-memory BM25 index and the tokenizer it shares with queries.
//!
//! Tokens are lowercase alphanumeric runs. Digits stay tokens of their own
//! (`3bhk` → `3`, `bhk`; `1.18` stays `1.18`; Indian digit grouping
//! `1,18,00,000` becomes `11800000`). A tiny English stopword list is
//! dropped, plural endings are stemmed away (`policies` → `policy`,
//! `bedrooms` → `bedroom`) and a handful of synonyms are folded
//! ([`SYNONYMS`]: number words to digits, `bedroom` → `bhk`, `cr` →
//! `crore`...), so "three bedroom" meets "3 BHK".
//!
//! Scoring is Okapi BM25 (k1 = 1.2, b = 0.75) over weighted fields (BM25F
//! in its simplest form: a token in a field of weight w counts w times in
//! the term frequency and the document length).

use std::collections::HashMap;

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalisation.
const B: f32 = 0.75;

/// Words too common to carry meaning in a caller's question.
const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "any", "are", "around", "as", "at", "be", "below", "can", "could",
    "do", "does", "for", "from", "have", "how", "i", "in", "is", "it", "looking", "me", "my",
    "need", "of", "on", "or", "our", "please", "show", "so", "some", "tell", "that", "the",
    "there", "this", "to", "under", "us", "want", "was", "we", "what", "when", "which", "with",
    "would", "you", "your",
];

/// Folded spellings (after plural stemming): left becomes right.
pub const SYNONYMS: &[(&str, &str)] = &[
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("bedroom", "bhk"),
    ("bed", "bhk"),
    ("cr", "crore"),
    ("lac", "lakh"),
    ("flat", "apartment"),
    ("apt", "apartment"),
    ("sqft", "sft"),
];

/// Removes plural endings: `policies` → `policy`, `classes` → `class`,
/// `bedrooms` → `bedroom`; leaves `ss`, `us`, `is` endings, short words and
/// non-ASCII words alone.
pub fn stem(word: &str) -> String {
    let n = word.len();
    if !word.is_ascii() || n <= 3 {
        return word.to_owned();
    }
    if n > 4 && word.ends_with("ies") {
        return format!("{}y", &word[..n - 3]);
    }
    if n > 4 && word.ends_with("sses") {
        return word[..n - 2].to_owned();
    }
    if word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && !word.ends_with("is")
    {
        return word[..n - 1].to_owned();
    }
    word.to_owned()
}

/// One lowercase word → its index term, or `None` for a stopword.
fn normalise(word: &str) -> Option<String> {
    if STOPWORDS.contains(&word) {
        return None;
    }
    let term = stem(word);
    match SYNONYMS.iter().find(|(from, _)| *from == term) {
        Some((_, to)) => Some((*to).to_owned()),
        None => Some(term),
    }
}

/// Splits text into index terms (see the module doc).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            // A number: digits, with `.` or `,` kept/dropped when digits
            // follow (decimals, digit grouping).
            let mut num = String::new();
            while i < chars.len() {
                let c = chars[i];
                if c.is_ascii_digit() {
                    num.push(c);
                } else if (c == '.' || c == ',')
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())
                    && !num.is_empty()
                {
                    if c == '.' {
                        if num.contains('.') {
                            break;
                        }
                        num.push('.');
                    }
                } else {
                    break;
                }
                i += 1;
            }
            out.push(num);
        } else if c.is_alphanumeric() {
            let mut word = String::new();
            while i < chars.len() && chars[i].is_alphanumeric() && !chars[i].is_ascii_digit() {
                word.extend(chars[i].to_lowercase());
                i += 1;
            }
            out.extend(normalise(&word));
        } else {
            i += 1;
        }
    }
    out
}

/// An index over documents numbered 0.. in the order they were added.
#[derive(Debug, Default, Clone)]
pub struct Bm25Index {
    /// term → (document, weighted term frequency).
    postings: HashMap<String, Vec<(u32, f32)>>,
    /// Weighted length of each document.
    lengths: Vec<f32>,
    total_length: f64,
}

impl Bm25Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next document from weighted fields (`(text, weight)`);
    /// returns its number.
    pub fn add(&mut self, fields: &[(&str, f32)]) -> u32 {
        let doc = self.lengths.len() as u32;
        let mut tf: HashMap<String, f32> = HashMap::new();
        let mut length = 0.0;
        for (text, weight) in fields {
            for term in tokenize(text) {
                *tf.entry(term).or_default() += weight;
                length += weight;
            }
        }
        for (term, f) in tf {
            self.postings.entry(term).or_default().push((doc, f));
        }
        self.lengths.push(length);
        self.total_length += f64::from(length);
        doc
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// BM25 score of every document for `query` (0 for no match). Repeated
    /// query terms count once.
    pub fn scores(&self, query: &str) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.len()];
        if self.is_empty() {
            return scores;
        }
        let n = self.len() as f32;
        let avg = (self.total_length / self.len() as f64).max(1e-6) as f32;
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        for term in terms {
            let Some(postings) = self.postings.get(&term) else {
                continue;
            };
            let df = postings.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(doc, tf) in postings {
                let norm = K1 * (1.0 - B + B * self.lengths[doc as usize] / avg);
                scores[doc as usize] += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_folds_case_plurals_numbers_and_synonyms() {
        assert_eq!(
            tokenize("What are the Cancellation Policies?"),
            ["cancellation", "policy"]
        );
        assert_eq!(tokenize("Three bedrooms, 3BHK"), ["3", "bhk", "3", "bhk"]);
        assert_eq!(
            tokenize("₹1,18,00,000 or 1.18 Cr."),
            ["11800000", "1.18", "crore"]
        );
        assert_eq!(tokenize("version 2.0.1"), ["version", "2.0", "1"]);
        assert_eq!(tokenize("glass bus status"), ["glass", "bus", "status"]);
        assert_eq!(tokenize("Acres lakhs"), ["acre", "lakh"]);
    }

    #[test]
    fn rarer_and_denser_matches_rank_higher() {
        let mut index = Bm25Index::new();
        index.add(&[
            ("Cancellation policy", 2.0),
            ("Cancel up to a day before.", 1.0),
        ]);
        index.add(&[
            ("Token amount", 2.0),
            ("The token is refundable under the policy.", 1.0),
        ]);
        index.add(&[("Site visits", 2.0), ("Visits run daily.", 1.0)]);
        let scores = index.scores("what is the cancellation policy");
        assert!(scores[0] > scores[1], "{scores:?}");
        assert!(scores[1] > 0.0);
        assert_eq!(scores[2], 0.0);
        assert!(index.scores("").iter().all(|&s| s == 0.0));
    }
}
