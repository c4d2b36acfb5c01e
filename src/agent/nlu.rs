//! Intent and slot extraction from what the caller said, for the rules
//! reasoner and for retrieval prefetch on partial transcripts.
//!
//! Intents are matched by word overlap with the agent's example phrases
//! (Dice coefficient over content words) plus keyword hits; slots are
//! pulled out with small grammars for what callers of a booking agent say:
//! numbers written or spoken ("three", "1.2", "one point two"), money in
//! Indian units ("1.2 crore", "eighty five lakh"), bedrooms ("3BHK", "three
//! bedroom"), property types, places from the knowledge base, dates
//! ("tomorrow", "Saturday", "the 25th"), visit times ("at 11", "in the
//! evening") and names ("my name is Ravi").

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, Duration as Days, NaiveDate, Weekday};

use super::definition::AgentDefinition;
use super::provider::SlotValue;
use super::words::{ONES, TENS};

/// Words that carry no intent.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "i", "im", "am", "is", "are", "was", "be", "to", "of", "in", "on", "at",
    "for", "and", "or", "me", "my", "it", "its", "this", "that", "do", "does", "you", "your", "we",
    "our", "can", "could", "would", "please", "uh", "um", "so", "just", "with", "there", "some",
    "any", "about", "like", "want",
];

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '\''))
        .map(|w| w.trim_matches(|c| c == '.' || c == '\'').replace('\'', ""))
        .filter(|w| !w.is_empty())
        .collect()
}

fn content(text: &str) -> BTreeSet<String> {
    words(text)
        .into_iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| {
            w.strip_suffix('s')
                .filter(|s| s.len() > 2)
                .map(str::to_owned)
                .unwrap_or(w)
        })
        .collect()
}

/// What was understood of one utterance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Understanding {
    /// Best intent and its score (0–1).
    pub intent: Option<(String, f32)>,
    /// Slots found.
    pub slots: BTreeMap<String, SlotValue>,
}

/// A compiled intent.
#[derive(Debug, Clone)]
struct IntentModel {
    name: String,
    examples: Vec<BTreeSet<String>>,
    keywords: BTreeSet<String>,
}

/// The understanding model of one agent.
#[derive(Debug, Clone)]
pub struct Nlu {
    intents: Vec<IntentModel>,
    /// Place names, lower-case, longest first (so "east bangalore" wins
    /// over "bangalore").
    places: Vec<(String, String)>,
}

/// Minimum score for an intent to count.
pub const INTENT_THRESHOLD: f32 = 0.25;

impl Nlu {
    /// Builds the model from a definition and the places known to the
    /// knowledge base.
    pub fn new(def: &AgentDefinition, places: &[String]) -> Self {
        let intents = def
            .intent
            .iter()
            .map(|i| IntentModel {
                name: i.name.clone(),
                examples: i.examples.iter().map(|e| content(e)).collect(),
                keywords: i.keywords.iter().flat_map(|k| content(k)).collect(),
            })
            .collect();
        let mut places: Vec<(String, String)> = places
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| (words(p).join(" "), p.trim().to_owned()))
            .collect();
        places.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        places.dedup_by(|a, b| a.0 == b.0);
        Nlu { intents, places }
    }

    /// Understands an utterance; `today` anchors relative dates.
    pub fn understand(&self, text: &str, today: NaiveDate) -> Understanding {
        let c = content(text);
        let mut best: Option<(String, f32)> = None;
        for intent in &self.intents {
            let overlap = intent
                .examples
                .iter()
                .map(|e| {
                    let common = e.intersection(&c).count() as f32;
                    if e.is_empty() || c.is_empty() {
                        0.0
                    } else {
                        2.0 * common / (e.len() + c.len()) as f32
                    }
                })
                .fold(0.0f32, f32::max);
            let keyword = if intent.keywords.intersection(&c).next().is_some() {
                0.3
            } else {
                0.0
            };
            let score = (overlap + keyword).min(1.0);
            if best.as_ref().is_none_or(|(_, s)| score > *s) {
                best = Some((intent.name.clone(), score));
            }
        }
        Understanding {
            intent: best.filter(|(_, s)| *s >= INTENT_THRESHOLD),
            slots: self.slots(text, today),
        }
    }

    /// Slots only.
    pub fn slots(&self, text: &str, today: NaiveDate) -> BTreeMap<String, SlotValue> {
        let w = words(text);
        let mut slots = BTreeMap::new();
        let joined = w.join(" ");
        if let Some(n) = bedrooms(&w) {
            slots.insert("bedrooms".into(), SlotValue::Number(n));
        }
        if let Some(m) = money(&w) {
            slots.insert("budget".into(), SlotValue::Money(m));
        }
        for (key, value) in [
            ("apartment", "apartment"),
            ("flat", "apartment"),
            ("villa", "villa"),
            ("plot", "plot"),
            ("house", "house"),
            ("penthouse", "penthouse"),
        ] {
            if w.iter()
                .any(|x| x == key || x.strip_suffix('s') == Some(key))
            {
                slots.insert("property_type".into(), SlotValue::Text(value.into()));
                break;
            }
        }
        for (needle, place) in &self.places {
            if contains_phrase(&joined, needle) {
                slots.insert("location".into(), SlotValue::Text(place.clone()));
                break;
            }
        }
        if let Some(d) = date(&w, today) {
            slots.insert(
                "date".into(),
                SlotValue::Date(d.format("%Y-%m-%d").to_string()),
            );
        }
        if let Some(t) = time(&w) {
            slots.insert("time".into(), SlotValue::Text(t));
        }
        if let Some(n) = name(text) {
            slots.insert("name".into(), SlotValue::Text(n));
        }
        slots
    }
}

fn contains_phrase(haystack: &str, needle: &str) -> bool {
    haystack == needle
        || haystack.starts_with(&format!("{needle} "))
        || haystack.ends_with(&format!(" {needle}"))
        || haystack.contains(&format!(" {needle} "))
}

fn small_number(w: &str) -> Option<f64> {
    if let Some(i) = ONES.iter().position(|x| *x == w) {
        return Some(i as f64);
    }
    if let Some(i) = TENS.iter().position(|x| !x.is_empty() && *x == w) {
        return Some((i * 10) as f64);
    }
    w.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A number starting at `w[i]`: digits, or words with tens + ones and
/// "point" decimals. Returns the value and the words consumed.
fn number_at(w: &[String], i: usize) -> Option<(f64, usize)> {
    let first = small_number(w.get(i)?)?;
    let mut value = first;
    let mut used = 1;
    if first >= 20.0 && first % 10.0 == 0.0 {
        if let Some(ones) = w
            .get(i + 1)
            .and_then(|x| small_number(x))
            .filter(|v| *v < 10.0)
        {
            value += ones;
            used += 1;
        }
    }
    if w.get(i + used).map(String::as_str) == Some("point") {
        let mut decimals = String::new();
        let mut j = i + used + 1;
        while let Some(d) = w.get(j).and_then(|x| small_number(x)).filter(|v| *v < 10.0) {
            decimals.push_str(&format!("{d:.0}"));
            j += 1;
        }
        if !decimals.is_empty() {
            value = format!("{value:.0}.{decimals}").parse().unwrap_or(value);
            used = j - i;
        }
    }
    Some((value, used))
}

fn bedrooms(w: &[String]) -> Option<f64> {
    for i in 0..w.len() {
        // "3bhk"
        if let Some(n) = w[i].strip_suffix("bhk").and_then(|n| n.parse::<f64>().ok()) {
            return Some(n);
        }
        if let Some((n, used)) = number_at(w, i) {
            let next: Vec<&str> = w[i + used..].iter().take(3).map(String::as_str).collect();
            let is_bed = matches!(
                next.first(),
                Some(&("bedroom" | "bedrooms" | "bhk" | "bed" | "room"))
            ) || next.starts_with(&["b", "h", "k"]);
            if is_bed && (1.0..=10.0).contains(&n) {
                return Some(n);
            }
        }
    }
    None
}

fn money(w: &[String]) -> Option<f64> {
    for i in 0..w.len() {
        if let Some((n, used)) = number_at(w, i) {
            let unit = w.get(i + used).map(String::as_str);
            let scale = match unit {
                Some("crore" | "crores" | "cr") => 1e7,
                Some("lakh" | "lakhs" | "lac" | "lacs") => 1e5,
                Some("million") => 1e6,
                _ => continue,
            };
            return Some(n * scale);
        }
    }
    None
}

fn date(w: &[String], today: NaiveDate) -> Option<NaiveDate> {
    let joined = w.join(" ");
    if contains_phrase(&joined, "day after tomorrow") {
        return Some(today + Days::days(2));
    }
    if w.iter().any(|x| x == "tomorrow") {
        return Some(today + Days::days(1));
    }
    if w.iter().any(|x| x == "today") {
        return Some(today);
    }
    const DAYS: &[(&str, Weekday)] = &[
        ("monday", Weekday::Mon),
        ("tuesday", Weekday::Tue),
        ("wednesday", Weekday::Wed),
        ("thursday", Weekday::Thu),
        ("friday", Weekday::Fri),
        ("saturday", Weekday::Sat),
        ("sunday", Weekday::Sun),
    ];
    for (name, wd) in DAYS {
        if w.iter().any(|x| x == name) {
            let ahead = (7 + wd.num_days_from_monday() as i64
                - today.weekday().num_days_from_monday() as i64)
                % 7;
            return Some(today + Days::days(if ahead == 0 { 7 } else { ahead }));
        }
    }
    // "the 25th", "on 25", "twenty fifth"
    const ORD: &[&str] = &[
        "first",
        "second",
        "third",
        "fourth",
        "fifth",
        "sixth",
        "seventh",
        "eighth",
        "ninth",
        "tenth",
        "eleventh",
        "twelfth",
        "thirteenth",
        "fourteenth",
        "fifteenth",
        "sixteenth",
        "seventeenth",
        "eighteenth",
        "nineteenth",
        "twentieth",
    ];
    for i in 0..w.len() {
        let day = if let Some(d) = w[i]
            .trim_end_matches(|c: char| c.is_alphabetic())
            .parse::<u32>()
            .ok()
            .filter(|_| {
                w[i].ends_with("th")
                    || w[i].ends_with("st")
                    || w[i].ends_with("nd")
                    || w[i].ends_with("rd")
            }) {
            Some(d)
        } else if let Some(p) = ORD.iter().position(|o| *o == w[i]) {
            let base = if i > 0 && w[i - 1] == "twenty" {
                20
            } else if i > 0 && w[i - 1] == "thirty" {
                30
            } else {
                0
            };
            Some(base + p as u32 + 1)
        } else {
            None
        };
        if let Some(d) = day.filter(|d| (1..=31).contains(d)) {
            let this_month = NaiveDate::from_ymd_opt(today.year(), today.month(), d);
            return match this_month {
                Some(date) if date >= today => Some(date),
                _ => {
                    let (y, m) = if today.month() == 12 {
                        (today.year() + 1, 1)
                    } else {
                        (today.year(), today.month() + 1)
                    };
                    NaiveDate::from_ymd_opt(y, m, d)
                }
            };
        }
    }
    None
}

fn time(w: &[String]) -> Option<String> {
    for i in 0..w.len() {
        if w[i] == "at" {
            if let Some((h, used)) = number_at(w, i + 1) {
                if !(1.0..=12.0).contains(&h) && !(13.0..=23.0).contains(&h) {
                    continue;
                }
                let mut hour = h as u32;
                let mut minute = 0;
                let next = w.get(i + 1 + used).map(String::as_str);
                if next == Some("thirty") {
                    minute = 30;
                }
                let suffix = w[i + 1 + used..]
                    .iter()
                    .take(2)
                    .map(String::as_str)
                    .collect::<Vec<_>>();
                if (suffix.contains(&"pm")
                    || suffix.contains(&"evening")
                    || (hour < 8 && !suffix.contains(&"am")))
                    && hour < 12
                {
                    hour += 12;
                }
                return Some(format!("{hour:02}:{minute:02}"));
            }
        }
    }
    for (part, slot) in [
        ("morning", "10:00"),
        ("afternoon", "14:00"),
        ("evening", "17:00"),
    ] {
        if w.iter().any(|x| x == part) {
            return Some(slot.into());
        }
    }
    None
}

fn name(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let at = lower
        .find("my name is ")
        .map(|i| i + "my name is ".len())
        .or_else(|| lower.find("this is ").map(|i| i + "this is ".len()))?;
    let rest = &text[at..];
    let first = rest.split_whitespace().next()?;
    let clean: String = first.chars().filter(|c| c.is_alphabetic()).collect();
    if clean.len() < 2 {
        return None;
    }
    let mut c = clean.chars();
    Some(
        c.next()?
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
    )
}

/// Money in Indian units for speech: 12_000_000 → "1.2 crore".
pub fn money_words(rupees: f64) -> String {
    let (value, unit) = if rupees >= 1e7 {
        (rupees / 1e7, "crore")
    } else {
        (rupees / 1e5, "lakh")
    };
    let s = format!("{value:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} {unit}")
}

/// A date for speech: 2026-11-25 → "Wednesday, November 25".
pub fn date_words(iso: &str) -> Option<String> {
    let d = NaiveDate::parse_from_str(iso, "%Y-%m-%d").ok()?;
    Some(d.format("%A, %B %-d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> AgentDefinition {
        let text = r#"
[agent]
name = "t"
greeting = "hi"
[[intent]]
name = "search_property"
examples = ["I am looking for a three bedroom apartment in Whitefield", "do you have villas in East Bangalore"]
keywords = ["apartment", "flat", "villa", "bhk"]
[[intent.reply]]
text = "x"
[[intent]]
name = "book_visit"
examples = ["book a site visit for tomorrow", "can I visit on Saturday"]
keywords = ["visit", "book"]
[[intent.reply]]
text = "y"
[[intent]]
name = "policy"
examples = ["what is the cancellation policy", "how much is the token amount"]
keywords = ["policy", "cancel", "refund", "token"]
[[intent.reply]]
text = "z"
"#;
        toml::from_str(text).unwrap()
    }

    fn nlu() -> Nlu {
        Nlu::new(
            &def(),
            &[
                "Whitefield".into(),
                "East Bangalore".into(),
                "Bangalore".into(),
                "Sarjapur Road".into(),
            ],
        )
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap() // a Tuesday
    }

    #[test]
    fn intents_from_examples_and_keywords() {
        let n = nlu();
        let i = |t: &str| n.understand(t, today()).intent.map(|(i, _)| i);
        assert_eq!(
            i("I am looking for a three bedroom apartment in Whitefield").as_deref(),
            Some("search_property")
        );
        assert_eq!(
            i("i want a 3bhk flat near whitefield").as_deref(),
            Some("search_property")
        );
        assert_eq!(
            i("book a site visit for tomorrow").as_deref(),
            Some("book_visit")
        );
        assert_eq!(i("what happens if I cancel").as_deref(), Some("policy"));
        assert_eq!(i("blue giraffes dance"), None);
    }

    #[test]
    fn slots_callers_say() {
        let n = nlu();
        let s = n.slots(
            "I am looking for a three bedroom apartment in Whitefield, budget one point two crore",
            today(),
        );
        assert_eq!(s["bedrooms"], SlotValue::Number(3.0));
        assert_eq!(s["property_type"], SlotValue::Text("apartment".into()));
        assert_eq!(s["location"], SlotValue::Text("Whitefield".into()));
        assert_eq!(s["budget"], SlotValue::Money(12_000_000.0));
        let s = n.slots(
            "a 2BHK villa in east bangalore under eighty five lakh",
            today(),
        );
        assert_eq!(s["bedrooms"], SlotValue::Number(2.0));
        assert_eq!(
            s["location"],
            SlotValue::Text("East Bangalore".into()),
            "longest place wins"
        );
        assert_eq!(s["budget"], SlotValue::Money(8_500_000.0));
        assert_eq!(
            n.slots("1.2 crore", today())["budget"],
            SlotValue::Money(12_000_000.0)
        );
    }

    #[test]
    fn dates_and_times() {
        let n = nlu();
        let d = |t: &str| n.slots(t, today()).get("date").cloned();
        assert_eq!(
            d("book a site visit for tomorrow"),
            Some(SlotValue::Date("2026-11-25".into()))
        );
        assert_eq!(
            d("day after tomorrow please"),
            Some(SlotValue::Date("2026-11-26".into()))
        );
        assert_eq!(
            d("can I visit on Saturday"),
            Some(SlotValue::Date("2026-11-28".into()))
        );
        assert_eq!(
            d("next tuesday"),
            Some(SlotValue::Date("2026-12-01".into())),
            "a week ahead, not today"
        );
        assert_eq!(
            d("on the 5th"),
            Some(SlotValue::Date("2026-12-05".into())),
            "past days roll to next month"
        );
        assert_eq!(
            d("on the twenty fifth"),
            Some(SlotValue::Date("2026-11-25".into()))
        );
        let t = |s: &str| n.slots(s, today()).get("time").cloned();
        assert_eq!(t("at eleven"), Some(SlotValue::Text("11:00".into())));
        assert_eq!(t("at 4 pm"), Some(SlotValue::Text("16:00".into())));
        assert_eq!(t("at three thirty"), Some(SlotValue::Text("15:30".into())));
        assert_eq!(t("in the evening"), Some(SlotValue::Text("17:00".into())));
    }

    #[test]
    fn names_and_words_for_speech() {
        let n = nlu();
        assert_eq!(
            n.slots("my name is ravi kumar", today())["name"],
            SlotValue::Text("Ravi".into())
        );
        assert_eq!(money_words(12_000_000.0), "1.2 crore");
        assert_eq!(money_words(8_500_000.0), "85 lakh");
        assert_eq!(money_words(11_800_000.0), "1.18 crore");
        assert_eq!(
            date_words("2026-11-25").as_deref(),
            Some("Wednesday, November 25")
        );
    }
}
