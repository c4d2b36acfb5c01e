//! Text normalisation for speech: turns the written forms a phone agent's
//! replies contain (amounts, dates, times, flat types, phone numbers) into
//! the words a caller should hear, before any engine sees the text.
//!
//! The rules are deliberately small, ordered and deterministic; anything
//! they do not recognise is left for the engine's own front end. Numbers
//! are read as English cardinals with the short scale (thousand, million,
//! billion); rupee amounts of a lakh or more use the Indian scale (lakh,
//! crore), as callers say them. Dates drop the year ("2026-11-25" is
//! "November twenty fifth"). Words are joined by spaces, never hyphens.
//! Letters outside ASCII are kept (an espeak-ng voice may read them); the
//! flite provider drops what it cannot read itself.

use std::sync::LazyLock;

use regex::{Captures, Regex};

use crate::agent::words::{ONES, TENS};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Acronyms read letter by letter wherever they stand.
const SPELLED: &[&str] = &["BHK", "RK", "EMI", "GST", "OTP", "NRI", "KYC"];

/// Words for 0..1000, appended to `out`.
fn push_below_thousand(n: u64, out: &mut Vec<&'static str>) {
    debug_assert!(n < 1000);
    let hundreds = n / 100;
    let rest = n % 100;
    if hundreds > 0 {
        out.push(ONES[hundreds as usize]);
        out.push("hundred");
    }
    if rest >= 20 {
        out.push(TENS[(rest / 10) as usize]);
        if !rest.is_multiple_of(10) {
            out.push(ONES[(rest % 10) as usize]);
        }
    } else if rest > 0 || hundreds == 0 {
        out.push(ONES[rest as usize]);
    }
}

/// `n` in words, short scale: 1200 is "one thousand two hundred".
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "zero".to_owned();
    }
    const SCALES: [(u64, &str); 6] = [
        (1_000_000_000_000_000_000, "quintillion"),
        (1_000_000_000_000_000, "quadrillion"),
        (1_000_000_000_000, "trillion"),
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    let mut out = Vec::new();
    let mut rest = n;
    for (scale, word) in SCALES {
        if rest >= scale {
            push_below_thousand(rest / scale, &mut out);
            out.push(word);
            rest %= scale;
        }
    }
    if rest > 0 {
        push_below_thousand(rest, &mut out);
    }
    out.join(" ")
}

/// `n` in words, Indian scale: 12000000 is "one crore twenty lakh".
pub fn cardinal_indian(n: u64) -> String {
    if n < 100_000 {
        return cardinal(n);
    }
    let mut parts = Vec::new();
    let crores = n / 10_000_000;
    if crores > 0 {
        parts.push(format!("{} crore", cardinal_indian(crores)));
    }
    let lakhs = (n / 100_000) % 100;
    if lakhs > 0 {
        parts.push(format!("{} lakh", cardinal(lakhs)));
    }
    let rest = n % 100_000;
    if rest > 0 {
        parts.push(cardinal(rest));
    }
    parts.join(" ")
}

/// `n` as an ordinal in words: 25 is "twenty fifth".
pub fn ordinal(n: u64) -> String {
    let words = cardinal(n);
    let (head, last) = match words.rsplit_once(' ') {
        Some((head, last)) => (format!("{head} "), last),
        None => (String::new(), words.as_str()),
    };
    let last = match last {
        "one" => "first".to_owned(),
        "two" => "second".to_owned(),
        "three" => "third".to_owned(),
        "five" => "fifth".to_owned(),
        "eight" => "eighth".to_owned(),
        "nine" => "ninth".to_owned(),
        "twelve" => "twelfth".to_owned(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// Each digit of `s` as a word ("042" is "zero four two"); other
/// characters are skipped.
pub fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// An integer written with digits (commas allowed) in words; strings too
/// long for `u64` are read digit by digit.
fn integer_words(s: &str, indian: bool) -> String {
    let plain: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    match plain.parse::<u64>() {
        Ok(n) if indian => cardinal_indian(n),
        Ok(n) => cardinal(n),
        Err(_) => digits(&plain),
    }
}

/// A decimal number ("1.25", "1,200") in words: "one point two five".
fn decimal_words(s: &str, indian: bool) -> String {
    match s.split_once('.') {
        Some((int, frac)) => format!("{} point {}", integer_words(int, indian), digits(frac)),
        None => integer_words(s, indian),
    }
}

/// Whether a comma-grouped number is grouped the Indian way (45,00,000).
fn indian_grouping(s: &str) -> bool {
    let groups: Vec<&str> = s.split(',').collect();
    groups.len() > 2 && groups[1..groups.len() - 1].iter().all(|g| g.len() == 2)
}

fn scale_word(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().as_str() {
        "crore" | "crores" | "cr" => Some("crore"),
        "lakh" | "lakhs" | "lac" | "lacs" | "l" => Some("lakh"),
        "k" | "thousand" => Some("thousand"),
        "million" | "millions" | "mn" => Some("million"),
        "billion" | "billions" | "bn" => Some("billion"),
        _ => None,
    }
}

/// A money amount in words with its unit: "one point two crore rupees",
/// "five thousand rupees", "one rupee", "ninety nine rupees and fifty paise".
fn money_words(amount: &str, scale: Option<&str>, dollars: bool) -> String {
    let (one, many, minor) = if dollars {
        ("dollar", "dollars", "cents")
    } else {
        ("rupee", "rupees", "paise")
    };
    let indian = !dollars;
    if let Some(scale) = scale.and_then(scale_word) {
        return format!("{} {scale} {many}", decimal_words(amount, false));
    }
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let frac_value = frac.parse::<u64>().unwrap_or(0);
    let int_value: String = int.chars().filter(|c| c.is_ascii_digit()).collect();
    if frac.len() == 2 {
        let unit = if int_value.parse::<u64>() == Ok(1) {
            one
        } else {
            many
        };
        let head = format!("{} {unit}", integer_words(int, indian));
        return if frac_value > 0 {
            format!("{head} and {} {minor}", cardinal(frac_value))
        } else {
            head
        };
    }
    if frac.is_empty() {
        let unit = if int_value.parse::<u64>() == Ok(1) {
            one
        } else {
            many
        };
        return format!("{} {unit}", integer_words(int, indian));
    }
    format!("{} {many}", decimal_words(amount, indian))
}

/// "10", "10:30", "10:05", "10:00" with an optional "am"/"pm".
fn time_words(hour: u64, minute: Option<u64>, meridiem: Option<&str>) -> String {
    let mut out = cardinal(hour);
    match minute {
        Some(0) if meridiem.is_none() => out.push_str(" o'clock"),
        Some(0) | None => {}
        Some(m) if m < 10 => {
            out.push_str(" oh ");
            out.push_str(ONES[m as usize]);
        }
        Some(m) => {
            out.push(' ');
            out.push_str(&cardinal(m));
        }
    }
    if let Some(m) = meridiem {
        out.push_str(if m.eq_ignore_ascii_case("a") {
            " A M"
        } else {
            " P M"
        });
    }
    out
}

fn spell(letters: &str) -> String {
    letters
        .chars()
        .map(|c| c.to_ascii_uppercase().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn num(caps: &Captures<'_>, i: usize) -> Option<u64> {
    caps.get(i).and_then(|m| m.as_str().parse().ok())
}

macro_rules! re {
    ($name:ident, $pattern:expr) => {
        static $name: LazyLock<Regex> =
            LazyLock::new(|| Regex::new($pattern).expect("valid regex"));
    };
}

re!(
    CURRENCY,
    r"(?i)(₹|\brs\.?|\binr\b|\$|\busd\b)\s*(\d(?:[\d,]*\d)?(?:\.\d+)?)(?:\s*(crores?|cr|lakhs?|lacs?|l|k|thousand|millions?|mn|billions?|bn)\b)?"
);
re!(ISO_DATE, r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b");
re!(CLOCK, r"(?i)\b(\d{1,2}):(\d{2})(?:\s*([ap])\.?m\b)?");
re!(HOUR_MERIDIEM, r"(?i)\b(\d{1,2})\s*([ap])\.?m\b");
re!(ORDINAL, r"(?i)\b(\d+)(st|nd|rd|th)\b");
re!(SQ_FT, r"(?i)\bsq\.?\s*(?:ft|feet)\b|\bsqft\b");
re!(
    SCALED,
    r"(?i)\b(\d+(?:\.\d+)?)\s*(crores?|cr|lakhs?|lacs?)\b"
);
re!(NUM_LETTERS, r"\b(\d+)([A-Za-z]+)\b");
re!(ACRONYM, r"\b[A-Z]{2,3}\b");
re!(PERCENT, r"(\d+(?:\.\d+)?)\s*%");
re!(PHONE_PLUS, r"\+\s?(\d[\d -]{5,}\d)");
re!(GROUPED, r"\b\d{1,3}(?:,\d{2,3})+(?:\.\d+)?\b");
re!(DECIMAL, r"\b(\d+)\.(\d+)\b");
re!(INTEGER, r"\b\d+\b");
re!(SPACES, r"\s+");

/// Rewrites written forms into speakable words. See the module docs.
pub fn normalize_for_speech(text: &str) -> String {
    // Typography first, so the rules below see plain punctuation.
    let mut s = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{02bc}' => s.push('\''),
            '\u{201c}' | '\u{201d}' => s.push('"'),
            '\u{2013}' | '\u{2014}' => s.push_str(", "),
            '\u{2026}' => s.push_str("..."),
            '&' => s.push_str(" and "),
            '@' => s.push_str(" at "),
            c if c.is_whitespace() || c.is_control() => s.push(' '),
            c => s.push(c),
        }
    }

    let s = CURRENCY.replace_all(&s, |c: &Captures<'_>| {
        let symbol = c[1].to_ascii_lowercase();
        let dollars = symbol == "$" || symbol == "usd";
        money_words(&c[2], c.get(3).map(|m| m.as_str()), dollars)
    });
    let s = ISO_DATE.replace_all(&s, |c: &Captures<'_>| match (num(c, 2), num(c, 3)) {
        (Some(m @ 1..=12), Some(d @ 1..=31)) => {
            format!("{} {}", MONTHS[m as usize - 1], ordinal(d))
        }
        _ => c[0].to_owned(),
    });
    let s = CLOCK.replace_all(&s, |c: &Captures<'_>| match (num(c, 1), num(c, 2)) {
        (Some(h @ 0..=23), Some(m @ 0..=59)) => {
            time_words(h, Some(m), c.get(3).map(|m| m.as_str()))
        }
        _ => c[0].to_owned(),
    });
    let s = HOUR_MERIDIEM.replace_all(&s, |c: &Captures<'_>| match num(c, 1) {
        Some(h @ 1..=12) => time_words(h, None, Some(&c[2])),
        _ => c[0].to_owned(),
    });
    let s = ORDINAL.replace_all(&s, |c: &Captures<'_>| match num(c, 1) {
        Some(n) => ordinal(n),
        None => c[0].to_owned(),
    });
    let s = SQ_FT.replace_all(&s, " square feet");
    let s = SCALED.replace_all(&s, |c: &Captures<'_>| {
        let scale = scale_word(&c[2]).unwrap_or("");
        format!("{} {scale}", decimal_words(&c[1], false))
    });
    let s = NUM_LETTERS.replace_all(&s, |c: &Captures<'_>| {
        let letters = &c[2];
        let letters = if letters.chars().all(|l| l.is_ascii_uppercase()) {
            spell(letters)
        } else {
            letters.to_owned()
        };
        format!("{} {letters}", integer_words(&c[1], false))
    });
    let s = ACRONYM.replace_all(&s, |c: &Captures<'_>| {
        if SPELLED.contains(&&c[0]) {
            spell(&c[0])
        } else {
            c[0].to_owned()
        }
    });
    let s = PERCENT.replace_all(&s, |c: &Captures<'_>| {
        format!("{} percent", decimal_words(&c[1], false))
    });
    let s = PHONE_PLUS.replace_all(&s, |c: &Captures<'_>| format!("plus {}", digits(&c[1])));
    let s = GROUPED.replace_all(&s, |c: &Captures<'_>| {
        decimal_words(&c[0], indian_grouping(&c[0]))
    });
    let s = DECIMAL.replace_all(&s, |c: &Captures<'_>| {
        format!("{} point {}", integer_words(&c[1], false), digits(&c[2]))
    });
    let s = INTEGER.replace_all(&s, |c: &Captures<'_>| {
        let d = &c[0];
        // Phone numbers, PINs and codes: digit by digit.
        if d.len() >= 7 || (d.len() > 1 && d.starts_with('0')) {
            digits(d)
        } else {
            integer_words(d, false)
        }
    });
    SPACES.replace_all(s.trim(), " ").into_owned()
}

/// Abbreviations whose trailing period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs", "etc", "no", "rs", "approx", "sq",
];

/// Splits text into sentences at `.`, `!` or `?` followed by a space and
/// a capital letter or digit, except after common abbreviations and
/// single letters. The pieces are trimmed and never empty.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if matches!(c, '.' | '!' | '?') {
            // Run of terminators (and closing quotes) ends here.
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '.' | '!' | '?' | '"' | '\'' | ')') {
                j += 1;
            }
            let end = chars.get(j).map_or(text.len(), |&(p, _)| p);
            let next = chars[j..].iter().find(|(_, ch)| !ch.is_whitespace());
            let spaced = j < chars.len() && chars[j].1.is_whitespace();
            let starts_new = next.is_some_and(|&(_, ch)| ch.is_uppercase() || ch.is_ascii_digit());
            let word: String = text[..pos]
                .chars()
                .rev()
                .take_while(|ch| ch.is_alphanumeric())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let abbreviation = c == '.'
                && j == i + 1
                && (ABBREVIATIONS.contains(&word.to_ascii_lowercase().as_str())
                    || (word.chars().count() == 1 && word.chars().all(char::is_uppercase)));
            if spaced && starts_new && !abbreviation {
                let piece = text[start..end].trim();
                if !piece.is_empty() {
                    out.push(piece);
                }
                start = end;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    let piece = text[start..].trim();
    if !piece.is_empty() {
        out.push(piece);
    }
    out
}

/// Whether the text has anything to say (a letter or digit).
pub fn has_speech(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(7), "seven");
        assert_eq!(cardinal(15), "fifteen");
        assert_eq!(cardinal(40), "forty");
        assert_eq!(cardinal(42), "forty two");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(cardinal(105), "one hundred five");
        assert_eq!(cardinal(1200), "one thousand two hundred");
        assert_eq!(cardinal(2026), "two thousand twenty six");
        assert_eq!(cardinal(1_000_001), "one million one");
        assert_eq!(cardinal_indian(4_500_000), "forty five lakh");
        assert_eq!(cardinal_indian(12_000_000), "one crore twenty lakh");
        assert_eq!(
            cardinal_indian(12_050_500),
            "one crore twenty lakh fifty thousand five hundred"
        );
        assert_eq!(
            cardinal_indian(99_999),
            "ninety nine thousand nine hundred ninety nine"
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(2), "second");
        assert_eq!(ordinal(3), "third");
        assert_eq!(ordinal(11), "eleventh");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty first");
        assert_eq!(ordinal(25), "twenty fifth");
        assert_eq!(ordinal(30), "thirtieth");
    }

    #[test]
    fn currency() {
        let n = normalize_for_speech;
        assert_eq!(n("₹1.2 crore"), "one point two crore rupees");
        assert_eq!(n("Rs 1.2 crore"), "one point two crore rupees");
        assert_eq!(n("Rs. 85 lakhs"), "eighty five lakh rupees");
        assert_eq!(n("INR 1.2 Cr"), "one point two crore rupees");
        assert_eq!(n("₹5,000"), "five thousand rupees");
        assert_eq!(n("₹45,00,000"), "forty five lakh rupees");
        assert_eq!(n("Rs 1"), "one rupee");
        assert_eq!(n("₹99.50"), "ninety nine rupees and fifty paise");
        assert_eq!(n("$5"), "five dollars");
        assert_eq!(
            n("It costs ₹1.2 crore, all in."),
            "It costs one point two crore rupees, all in."
        );
        assert_eq!(n("1.2 crore rupees"), "one point two crore rupees");
    }

    #[test]
    fn dates_and_times() {
        let n = normalize_for_speech;
        assert_eq!(n("2026-11-25"), "November twenty fifth");
        assert_eq!(n("on 2026-01-01."), "on January first.");
        assert_eq!(n("10:30"), "ten thirty");
        assert_eq!(n("10:05"), "ten oh five");
        assert_eq!(n("10:00"), "ten o'clock");
        assert_eq!(n("at 10:30 am"), "at ten thirty A M");
        assert_eq!(n("at 5pm"), "at five P M");
        assert_eq!(n("at 5 p.m. tomorrow"), "at five P M. tomorrow");
        assert_eq!(n("the 3rd floor"), "the third floor");
        // Not a date or time: read as numbers.
        assert_eq!(n("2026-13-40"), "two thousand twenty six-thirteen-forty");
        assert_eq!(n("99:99"), "ninety nine:ninety nine");
    }

    #[test]
    fn flats_and_units() {
        let n = normalize_for_speech;
        assert_eq!(n("3BHK"), "three B H K");
        assert_eq!(n("a 2 BHK flat"), "a two B H K flat");
        assert_eq!(n("1200 sq ft"), "one thousand two hundred square feet");
        assert_eq!(n("1200 sqft"), "one thousand two hundred square feet");
        assert_eq!(n("5km away"), "five km away");
        assert_eq!(n("EMI of 8.5%"), "E M I of eight point five percent");
    }

    #[test]
    fn numbers_and_symbols() {
        let n = normalize_for_speech;
        assert_eq!(n("42 flats"), "forty two flats");
        assert_eq!(n("1,200 buyers"), "one thousand two hundred buyers");
        assert_eq!(
            n("call 9876543210"),
            "call nine eight seven six five four three two one zero"
        );
        assert_eq!(
            n("+91 98765 43210"),
            "plus nine one nine eight seven six five four three two one zero"
        );
        assert_eq!(n("PIN 0402"), "PIN zero four zero two");
        assert_eq!(n("3.75"), "three point seven five");
        assert_eq!(n("Tom & Jerry"), "Tom and Jerry");
        assert_eq!(n("  lots   of\tspace\n"), "lots of space");
        assert_eq!(
            n("it\u{2019}s \u{201c}fine\u{201d}\u{2026}"),
            "it's \"fine\"..."
        );
        assert_eq!(n(""), "");
    }

    #[test]
    fn deterministic() {
        let text = "Book a 3BHK at ₹1.2 crore on 2026-11-25 at 10:30.";
        assert_eq!(normalize_for_speech(text), normalize_for_speech(text));
        assert_eq!(
            normalize_for_speech(text),
            "Book a three B H K at one point two crore rupees on November twenty fifth at ten thirty."
        );
    }

    #[test]
    fn sentences() {
        assert_eq!(
            split_sentences("Hello there. How are you?"),
            vec!["Hello there.", "How are you?"]
        );
        assert_eq!(
            split_sentences("Mr. Smith is here. Yes!"),
            vec!["Mr. Smith is here.", "Yes!"]
        );
        assert_eq!(
            split_sentences("It is 3.5 km. Ok"),
            vec!["It is 3.5 km.", "Ok"]
        );
        assert_eq!(
            split_sentences("wait... what? no."),
            vec!["wait... what? no."]
        );
        assert_eq!(
            split_sentences("He said \"Go.\" Then left."),
            vec!["He said \"Go.\"", "Then left."]
        );
        assert_eq!(
            split_sentences("J. R. R. Tolkien wrote it."),
            vec!["J. R. R. Tolkien wrote it."]
        );
        assert_eq!(split_sentences("   "), Vec::<&str>::new());
        assert!(!has_speech(" ... , ! "));
        assert!(has_speech("ok"));
    }
}
