//! Words and pronunciations: turning the agent's phrases into dictionary
//! words, reading the CMU pronunciation dictionary, and guessing the
//! pronunciation of words it lacks.
//!
//! # Normalisation
//!
//! A phrase is lower-cased and split into words on anything that is not a
//! letter, a digit or an apostrophe inside a word ("two-bedroom" → "two
//! bedroom", "I'm" → "i'm"). Numbers written with digits are spelt out the
//! way a caller would say them ("3" → "three", "1.2" → "one point two",
//! "2500" → "two thousand five hundred"); a number with a leading zero or
//! more than nine digits is read digit by digit (phone numbers, PINs).
//! "&" becomes "and". The recogniser's output uses the same words, in lower
//! case.
//!
//! # Unknown words
//!
//! A word the dictionary does not have (Indian place names such as
//! "indiranagar", "crore", "lakh" are not in CMUdict) gets, in this order:
//! a pronunciation given in the configuration, or a guess by
//! [`guess_phones`], a small letter-to-sound rule set tuned for words that
//! are spelt the way they sound. Guesses are logged; an operator who wants
//! better ones gives explicit pronunciations. [`validate_phrases`] lists the
//! words that are not in the dictionary so `voxtrunk check` can show them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use crate::agent::words::{ONES, TENS};

/// Phones of the CMU en-US acoustic model (SIL is not used in words).
pub const EN_US_PHONES: [&str; 39] = [
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH",
    "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH",
    "UW", "V", "W", "Y", "Z", "ZH",
];

/// Splits a phrase into the words the recogniser knows it by (see the
/// module documentation).
pub fn normalize(phrase: &str) -> Vec<String> {
    let mut words = Vec::new();
    let lower = phrase.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            // A number: digits, optionally one decimal point between digits.
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let int_part: String = chars[start..i].iter().collect();
            let mut frac_part = String::new();
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    frac_part.push(chars[i]);
                    i += 1;
                }
            }
            spell_number(&int_part, &mut words);
            if !frac_part.is_empty() {
                words.push("point".to_owned());
                spell_digits(&frac_part, &mut words);
            }
        } else if c.is_alphabetic() || c == '\'' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphabetic() || chars[i] == '\'') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let word = word.trim_matches('\'');
            if !word.is_empty() {
                words.push(word.to_owned());
            }
        } else {
            if c == '&' {
                words.push("and".to_owned());
            }
            i += 1;
        }
    }
    words
}

/// Appends the words for a string of decimal digits.
fn spell_number(digits: &str, out: &mut Vec<String>) {
    if digits.len() > 9 || (digits.len() > 1 && digits.starts_with('0')) {
        spell_digits(digits, out);
        return;
    }
    match digits.parse::<u64>() {
        Ok(n) => spell_integer(n, out),
        Err(_) => spell_digits(digits, out),
    }
}

fn spell_digits(digits: &str, out: &mut Vec<String>) {
    for d in digits.bytes() {
        out.push(ONES[usize::from(d - b'0')].to_owned());
    }
}

/// Spells 0 ≤ n < 10⁹ the American way, without "and".
fn spell_integer(n: u64, out: &mut Vec<String>) {
    if n == 0 {
        out.push(ONES[0].to_owned());
        return;
    }
    let millions = n / 1_000_000;
    let thousands = (n / 1_000) % 1_000;
    let rest = n % 1_000;
    if millions > 0 {
        spell_below_thousand(millions, out);
        out.push("million".to_owned());
    }
    if thousands > 0 {
        spell_below_thousand(thousands, out);
        out.push("thousand".to_owned());
    }
    if rest > 0 {
        spell_below_thousand(rest, out);
    }
}

fn spell_below_thousand(n: u64, out: &mut Vec<String>) {
    let hundreds = n / 100;
    let rest = (n % 100) as usize;
    if hundreds > 0 {
        out.push(ONES[hundreds as usize].to_owned());
        out.push("hundred".to_owned());
    }
    if rest >= 20 {
        out.push(TENS[rest / 10].to_owned());
        if !rest.is_multiple_of(10) {
            out.push(ONES[rest % 10].to_owned());
        }
    } else if rest > 0 {
        out.push(ONES[rest].to_owned());
    }
}

/// The base word of a dictionary entry: `word(2)` → `word`.
fn base_word(entry: &str) -> &str {
    match entry.find('(') {
        Some(i) if entry.ends_with(')') && i > 0 => &entry[..i],
        _ => entry,
    }
}

/// Reads every line of a pronunciation dictionary, calling `each` with the
/// base word and the whole line (trimmed). Blank lines and `;;` comments
/// are skipped.
pub fn scan_dictionary(path: &Path, mut each: impl FnMut(&str, &str)) -> io::Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(";;") {
            continue;
        }
        let Some(entry) = trimmed.split_whitespace().next() else {
            continue;
        };
        each(base_word(entry), trimmed);
    }
}

/// The set of words in a pronunciation dictionary.
pub fn dictionary_words(path: &Path) -> io::Result<HashSet<String>> {
    let mut words = HashSet::new();
    scan_dictionary(path, |word, _| {
        if !words.contains(word) {
            words.insert(word.to_owned());
        }
    })?;
    Ok(words)
}

/// The dictionary lines (all pronunciation variants) of the `wanted`
/// words, by word.
pub fn dictionary_entries(
    path: &Path,
    wanted: &BTreeSet<String>,
) -> io::Result<BTreeMap<String, Vec<String>>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    scan_dictionary(path, |word, line| {
        if wanted.contains(word) {
            found
                .entry(word.to_owned())
                .or_default()
                .push(line.to_owned());
        }
    })?;
    Ok(found)
}

/// The words of `phrases` (after [`normalize`]) that the dictionary at
/// `dict` does not have, sorted and without repeats.
///
/// `voxtrunk check` calls this. Those words still work at run time when
/// the configuration gives their pronunciation or lets the recogniser guess
/// it (the default); the list tells the operator which ones to review. If
/// the dictionary cannot be read, the single entry describes why.
pub fn validate_phrases(dict: &Path, phrases: &[String]) -> Result<(), Vec<String>> {
    let known = match dictionary_words(dict) {
        Ok(words) => words,
        Err(err) => {
            return Err(vec![format!(
                "<cannot read dictionary {}: {err}>",
                dict.display()
            )]);
        }
    };
    let unknown = unknown_words(&known, phrases.iter().flat_map(|p| normalize(p)));
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(unknown)
    }
}

/// The words not in `known`, sorted and without repeats.
pub fn unknown_words(
    known: &HashSet<String>,
    words: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let set: BTreeSet<String> = words.into_iter().filter(|w| !known.contains(w)).collect();
    set.into_iter().collect()
}

/// Checks a pronunciation given in the configuration: phones of the en-US
/// model separated by spaces. Returns it normalised (upper case, single
/// spaces).
pub fn check_phones(phones: &str) -> Result<String, String> {
    let list: Vec<String> = phones.split_whitespace().map(str::to_uppercase).collect();
    if list.is_empty() {
        return Err("empty pronunciation".to_owned());
    }
    if let Some(bad) = list.iter().find(|p| !EN_US_PHONES.contains(&p.as_str())) {
        return Err(format!("unknown phone {bad:?}"));
    }
    Ok(list.join(" "))
}

fn is_vowel(c: u8) -> bool {
    matches!(c, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// How the letters a–z are said on their own.
const LETTER_NAMES: [&str; 26] = [
    "EY",
    "B IY",
    "S IY",
    "D IY",
    "IY",
    "EH F",
    "JH IY",
    "EY CH",
    "AY",
    "JH EY",
    "K EY",
    "EH L",
    "EH M",
    "EH N",
    "OW",
    "P IY",
    "K Y UW",
    "AA R",
    "EH S",
    "T IY",
    "Y UW",
    "V IY",
    "D AH B AH L Y UW",
    "EH K S",
    "W AY",
    "Z IY",
];

/// Guesses the en-US phones of a word that is spelt the way it sounds
/// (Indian place and person names, "crore", "lakh"...): greedy
/// left-to-right letter groups, no stress; a word without vowels is an
/// abbreviation and is spelt out ("bhk" → "B IY EY CH K EY"). English words with irregular
/// spelling come out wrong, which is why real dictionary entries always win.
/// `None` for a word with letters outside a–z (apostrophes are ignored).
pub fn guess_phones(word: &str) -> Option<String> {
    let w: Vec<u8> = word.bytes().filter(|&b| b != b'\'').collect();
    if w.is_empty() || !w.iter().all(u8::is_ascii_lowercase) {
        return None;
    }
    if !w.iter().any(|&b| is_vowel(b) || b == b'y') {
        // No vowel at all: an abbreviation, said letter by letter ("bhk").
        let names: Vec<&str> = w
            .iter()
            .map(|&b| LETTER_NAMES[usize::from(b - b'a')])
            .collect();
        return Some(names.join(" "));
    }
    let n = w.len();
    let at = |i: usize| -> Option<u8> { w.get(i).copied() };
    let vowel_at = |i: usize| at(i).is_some_and(is_vowel);
    let mut phones: Vec<&'static str> = Vec::new();
    let mut i = 0;
    while i < n {
        let c = w[i];
        let rest = &w[i..];
        let starts = |s: &str| rest.starts_with(s.as_bytes());
        let at_end = |len: usize| i + len == n;
        // Doubled consonants sound once.
        if i > 0 && w[i - 1] == c && !is_vowel(c) {
            i += 1;
            continue;
        }
        // Vowel + r: r-coloured unless a vowel follows the r.
        if is_vowel(c) && at(i + 1) == Some(b'r') && !vowel_at(i + 2) {
            let p: &[&'static str] = match c {
                b'a' => &["AA", "R"],
                b'o' => &["AO", "R"],
                _ => &["ER"],
            };
            phones.extend_from_slice(p);
            i += 2;
            continue;
        }
        if (starts("ore") || starts("are") || starts("ire")) && at_end(3) {
            let p: &[&'static str] = match c {
                b'o' => &["AO", "R"],
                b'a' => &["EH", "R"],
                _ => &["AY", "ER"],
            };
            phones.extend_from_slice(p);
            i += 3;
            continue;
        }
        let groups: &[(&str, &[&'static str])] = &[
            ("tch", &["CH"]),
            ("sch", &["S", "K"]),
            ("ch", &["CH"]),
            ("sh", &["SH"]),
            ("th", &["TH"]),
            ("ph", &["F"]),
            ("wh", &["W"]),
            ("kh", &["K"]),
            ("gh", &["G"]),
            ("bh", &["B"]),
            ("dh", &["D"]),
            ("jh", &["JH"]),
            ("ck", &["K"]),
            ("qu", &["K", "W"]),
            ("ee", &["IY"]),
            ("oo", &["UW"]),
            ("ea", &["IY"]),
            ("ay", &["EY"]),
            ("oa", &["OW"]),
            ("ou", &["AW"]),
            ("au", &["AO"]),
            ("ie", &["IY"]),
            ("ei", &["EY"]),
            ("oi", &["OY"]),
            ("oy", &["OY"]),
            ("aa", &["AA"]),
        ];
        if let Some((pat, p)) = groups.iter().find(|(pat, _)| starts(pat)) {
            phones.extend_from_slice(p);
            i += pat.len();
            continue;
        }
        if starts("ai") {
            phones.push(if at_end(2) { "AY" } else { "EY" });
            i += 2;
            continue;
        }
        if starts("ow") {
            phones.push(if at_end(2) { "OW" } else { "AW" });
            i += 2;
            continue;
        }
        if starts("ey") && at_end(2) {
            phones.push("IY");
            i += 2;
            continue;
        }
        if starts("ng") {
            phones.push("NG");
            if vowel_at(i + 2) {
                phones.push("G");
            }
            i += 2;
            continue;
        }
        let single: &[&'static str] = match c {
            b'a' => &["AH"],
            // A final e after a consonant is silent ("crore" is handled above).
            b'e' if at_end(1) && n > 2 && !vowel_at(i - 1) => &[],
            b'e' => &["EH"],
            b'i' if at_end(1) => &["IY"],
            b'i' => &["IH"],
            b'o' => &["OW"],
            b'u' if at_end(1) => &["UW"],
            b'u' => &["AH"],
            b'y' if i == 0 || vowel_at(i + 1) => &["Y"],
            b'y' if at_end(1) => &["IY"],
            b'y' => &["IH"],
            b'b' => &["B"],
            b'c' if matches!(at(i + 1), Some(b'e' | b'i' | b'y')) => &["S"],
            b'c' => &["K"],
            b'd' => &["D"],
            b'f' => &["F"],
            b'g' => &["G"],
            b'h' if i == 0 || vowel_at(i + 1) => &["HH"],
            b'h' => &[],
            b'j' => &["JH"],
            b'k' => &["K"],
            b'l' => &["L"],
            b'm' => &["M"],
            b'n' => &["N"],
            b'p' => &["P"],
            b'q' => &["K"],
            b'r' => &["R"],
            b's' => &["S"],
            b't' => &["T"],
            b'v' => &["V"],
            b'w' => &["W"],
            b'x' => &["K", "S"],
            b'z' => &["Z"],
            _ => &[],
        };
        phones.extend_from_slice(single);
        i += 1;
    }
    if phones.is_empty() {
        None
    } else {
        Some(phones.join(" "))
    }
}

/// Generic conversational words added to every domain model with a small
/// share of probability, so that words around the expected phrases ("uh",
/// "actually", "please", days, numbers) are recognised as themselves
/// instead of being forced onto a domain word. Words missing from the
/// dictionary in use are left out silently.
pub const BACKGROUND_WORDS: &[&str] = &[
    // pronouns, articles, conjunctions, prepositions
    "i",
    "i'm",
    "me",
    "my",
    "we",
    "us",
    "our",
    "you",
    "your",
    "it",
    "it's",
    "its",
    "he",
    "she",
    "they",
    "them",
    "their",
    "this",
    "that",
    "these",
    "those",
    "there",
    "here",
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "so",
    "if",
    "then",
    "than",
    "to",
    "of",
    "in",
    "on",
    "at",
    "for",
    "with",
    "from",
    "about",
    "by",
    "near",
    "around",
    "after",
    "before",
    "between",
    "under",
    "over",
    "up",
    "out",
    "into", // verbs
    "is",
    "am",
    "are",
    "was",
    "were",
    "be",
    "been",
    "do",
    "does",
    "did",
    "don't",
    "have",
    "has",
    "had",
    "can",
    "could",
    "would",
    "will",
    "should",
    "may",
    "might",
    "must",
    "want",
    "need",
    "like",
    "looking",
    "look",
    "see",
    "visit",
    "know",
    "tell",
    "call",
    "get",
    "go",
    "come",
    "give",
    "make",
    "take",
    "let",
    "say",
    "said",
    "think",
    "buy",
    "rent",
    "sell",
    "book",
    "pay",
    "move",
    "live",
    "show",
    "send",
    "check",
    "help",
    "talk",
    "speak",
    "wait",
    "mean",
    // questions and answers
    "what",
    "when",
    "where",
    "which",
    "who",
    "why",
    "how",
    "much",
    "many",
    "yes",
    "yeah",
    "no",
    "not",
    "nope",
    "okay",
    "ok",
    "sure",
    "right",
    "fine",
    "good",
    "great",
    "please",
    "thanks",
    "thank",
    "hello",
    "hi",
    "hey",
    "bye",
    "goodbye",
    "sorry",
    "maybe",
    "actually",
    "just",
    "also",
    "only",
    "really",
    "very",
    "well",
    "um",
    "uh",
    "oh",
    "hmm",
    "any",
    "some",
    "more",
    "less",
    "other",
    "another",
    "all",
    "something",
    "anything",
    "nothing",
    "again",
    "now",
    "later",
    "soon", // time
    "today",
    "tomorrow",
    "yesterday",
    "morning",
    "afternoon",
    "evening",
    "night",
    "day",
    "days",
    "week",
    "weekend",
    "month",
    "year",
    "time",
    "o'clock",
    "am",
    "pm",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "next",
    "this",
    "last",
    // numbers
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "fifteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "hundred",
    "thousand",
    "million",
    "point",
    "half",
    "first",
    "second",
    "third", // generic nouns
    "price",
    "cost",
    "budget",
    "money",
    "number",
    "name",
    "address",
    "place",
    "area",
    "house",
    "home",
    "room",
    "rooms",
    "family",
    "office",
    "person",
    "someone",
    "details",
    "information",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_punctuation_case_and_numbers() {
        assert_eq!(
            normalize("I'm looking for a 3-bedroom flat, budget 1.2 crore!"),
            [
                "i'm", "looking", "for", "a", "three", "bedroom", "flat", "budget", "one", "point",
                "two", "crore"
            ]
        );
        assert_eq!(
            normalize("2500 & 'quoted'"),
            ["two", "thousand", "five", "hundred", "and", "quoted"]
        );
        assert_eq!(
            normalize("call 0801234"),
            [
                "call", "zero", "eight", "zero", "one", "two", "three", "four"
            ]
        );
        assert_eq!(
            normalize("1000017 21 40"),
            ["one", "million", "seventeen", "twenty", "one", "forty"]
        );
        assert!(normalize(" ... ").is_empty());
    }

    #[test]
    fn guesses_phonetic_spellings() {
        assert_eq!(
            guess_phones("indiranagar").as_deref(),
            Some("IH N D IH R AH N AH G AA R")
        );
        assert_eq!(guess_phones("crore").as_deref(), Some("K R AO R"));
        assert_eq!(guess_phones("lakh").as_deref(), Some("L AH K"));
        assert_eq!(
            guess_phones("koramangala").as_deref(),
            Some("K OW R AH M AH NG G AH L AH")
        );
        assert_eq!(guess_phones("bhk").as_deref(), Some("B IY EY CH K EY"));
        assert_eq!(guess_phones("hebbal").as_deref(), Some("HH EH B AH L"));
        assert_eq!(guess_phones("café"), None);
        assert_eq!(guess_phones("''"), None);
        for word in [
            "indiranagar",
            "crore",
            "whitefield",
            "yelahanka",
            "xyz",
            "hsr",
        ] {
            let phones = guess_phones(word).unwrap();
            assert_eq!(check_phones(&phones).unwrap(), phones, "{word}");
        }
    }

    #[test]
    fn checks_configured_phones() {
        assert_eq!(check_phones(" k  r ow r ").unwrap(), "K R OW R");
        assert!(check_phones("K R XX").is_err());
        assert!(check_phones("  ").is_err());
    }
}
