//! Structured filters: slots the caller stated (bedrooms, budget, location,
//! property type) constrain inventory rows.
//!
//! The rules are the table [`FILTER_RULES`]. A rule applies to a document
//! only when the document has one of the rule's columns with a value that
//! can be read (CSV column names and JSON keys are normalised to lowercase
//! `snake_case`: `Price (Cr)` → `price_cr`); Markdown sections and rows
//! without the column pass untouched, and so does a value that cannot be
//! read (`price: on request` is not proof that the unit is too dear). A
//! rule that applies either matches — the document stays and ranks higher
//! — or excludes the document.
//!
//! | slot            | slot value              | columns (first present wins; text: any)                              | matches when                          |
//! |-----------------|-------------------------|-----------------------------------------------------------------------|---------------------------------------|
//! | `bedrooms`      | Number (or "3 BHK")     | bedrooms, bhk, beds, configuration                                    | the row's leading number is equal     |
//! | `budget`        | Money in rupees         | price, price_inr, price_rupees, price_cr, price_crore, price_lakh(s), total_price, cost | price ≤ budget × 1.1 |
//! | `location`      | Text                    | locality, area, zone, location, neighbourhood, neighborhood, micro_market | any column contains the words of the slot, or the slot contains the column's |
//! | `property_type` | Text                    | property_type, type, category                                        | same word containment                 |
//!
//! Money values are read as Indian amounts: `1.18 crore`, `1.18 Cr`,
//! `85 lakh`, `₹1,18,00,000`, `11800000`; a value without a unit takes the
//! unit of its column name (`price_crore`, `price_lakh`), otherwise rupees.

use std::collections::BTreeMap;

use crate::agent::provider::SlotValue;

/// How a rule compares the slot with the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FilterTest {
    /// The numbers are equal (bedrooms).
    NumberEquals,
    /// The row's amount is at most the slot's amount × (1 + slack).
    MoneyAtMost {
        /// Tolerance above the budget (0.1 = 10 %).
        slack: f64,
    },
    /// Whole-word containment either way, case-insensitive.
    TextMatches,
}

/// One structured filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterRule {
    /// Slot name in [`Query::slots`](crate::agent::provider::Query).
    pub slot: &'static str,
    /// Normalised column names it reads.
    pub columns: &'static [&'static str],
    /// The comparison.
    pub test: FilterTest,
}

/// The filter table (see the module doc).
pub const FILTER_RULES: &[FilterRule] = &[
    FilterRule {
        slot: "bedrooms",
        columns: &["bedrooms", "bhk", "beds", "configuration"],
        test: FilterTest::NumberEquals,
    },
    FilterRule {
        slot: "budget",
        columns: &[
            "price",
            "price_inr",
            "price_rupees",
            "price_cr",
            "price_crore",
            "price_lakh",
            "price_lakhs",
            "total_price",
            "cost",
        ],
        test: FilterTest::MoneyAtMost { slack: 0.1 },
    },
    FilterRule {
        slot: "location",
        columns: &[
            "locality",
            "area",
            "zone",
            "location",
            "neighbourhood",
            "neighborhood",
            "micro_market",
        ],
        test: FilterTest::TextMatches,
    },
    FilterRule {
        slot: "property_type",
        columns: &["property_type", "type", "category"],
        test: FilterTest::TextMatches,
    },
];

/// The rule whose columns include `column`, if any.
pub fn rule_for_column(column: &str) -> Option<&'static FilterRule> {
    FILTER_RULES.iter().find(|r| r.columns.contains(&column))
}

/// True when `slots` holds a slot some rule reads.
pub fn active(slots: &BTreeMap<String, SlotValue>) -> bool {
    FILTER_RULES.iter().any(|r| slots.contains_key(r.slot))
}

/// Applies every rule: `None` when a rule excludes the document, otherwise
/// how many rules matched it.
pub fn evaluate(
    slots: &BTreeMap<String, SlotValue>,
    fields: &BTreeMap<String, String>,
) -> Option<usize> {
    let mut matched = 0;
    for rule in FILTER_RULES {
        let Some(slot) = slots.get(rule.slot) else {
            continue;
        };
        match check(rule, slot, fields) {
            Some(true) => matched += 1,
            Some(false) => return None,
            None => {}
        }
    }
    Some(matched)
}

/// `Some(matches)` when the rule applies to these fields, `None` otherwise.
fn check(rule: &FilterRule, slot: &SlotValue, fields: &BTreeMap<String, String>) -> Option<bool> {
    let present = rule
        .columns
        .iter()
        .filter_map(|c| fields.get(*c).map(|v| (*c, v.trim())))
        .filter(|(_, v)| !v.is_empty());
    match rule.test {
        FilterTest::NumberEquals => {
            let want = match slot {
                SlotValue::Number(n) | SlotValue::Money(n) => *n,
                SlotValue::Text(t) | SlotValue::Date(t) => leading_number(t)?,
            };
            let have = present.filter_map(|(_, v)| leading_number(v)).next()?;
            Some((have - want).abs() < 1e-9)
        }
        FilterTest::MoneyAtMost { slack } => {
            let budget = match slot {
                SlotValue::Money(n) | SlotValue::Number(n) => *n,
                SlotValue::Text(t) | SlotValue::Date(t) => parse_money(t, "")?,
            };
            let price = present.filter_map(|(c, v)| parse_money(v, c)).next()?;
            Some(price <= budget * (1.0 + slack) + 1e-6)
        }
        FilterTest::TextMatches => {
            let want = words(&slot.as_text());
            if want.trim().is_empty() {
                return None;
            }
            let mut any = false;
            for (_, value) in present {
                any = true;
                let have = words(value);
                if have.contains(&want) || want.contains(&have) {
                    return Some(true);
                }
            }
            any.then_some(false)
        }
    }
}

/// Lowercase words separated (and surrounded) by single spaces, for
/// whole-word containment tests.
fn words(s: &str) -> String {
    let mut out = String::from(" ");
    for word in s
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        out.extend(word.chars().flat_map(char::to_lowercase));
        out.push(' ');
    }
    out
}

/// The first number in `s` (`"3 BHK"` → 3, `"3BHK"` → 3).
pub fn leading_number(s: &str) -> Option<f64> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let prefix = &s[..start];
    if prefix.chars().any(char::is_alphanumeric) {
        return None;
    }
    let rest = &s[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(rest.len());
    rest[..end]
        .trim_end_matches(['.', ','])
        .replace(',', "")
        .parse()
        .ok()
}

/// Reads an Indian money amount in rupees (see the module doc); `column`
/// gives the unit of a bare number.
pub fn parse_money(value: &str, column: &str) -> Option<f64> {
    let lower = value.trim().to_lowercase();
    let mut s = lower.trim_start_matches('₹').trim();
    for prefix in ["rs.", "rs", "inr"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.trim_start_matches('.').trim();
            break;
        }
    }
    let number = leading_number(s)?;
    let unit_words = s
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty());
    let mut unit = None;
    for word in unit_words {
        unit = match word {
            "crore" | "crores" | "cr" | "crs" => Some(1e7),
            "lakh" | "lakhs" | "lac" | "lacs" | "l" => Some(1e5),
            "k" | "thousand" => Some(1e3),
            _ => None,
        };
        if unit.is_some() {
            break;
        }
    }
    let unit = unit.unwrap_or_else(|| {
        let col = column.to_lowercase();
        if col.ends_with("_crore") || col.ends_with("_cr") || col.ends_with("_crores") {
            1e7
        } else if col.ends_with("_lakh") || col.ends_with("_lakhs") || col.ends_with("_lac") {
            1e5
        } else {
            1.0
        }
    });
    Some(number * unit)
}

/// Renders rupees the way a caller says them: `1.18 crore`, `85 lakh`,
/// `₹45000`.
pub fn format_money(rupees: f64) -> String {
    fn trim(x: f64) -> String {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
    if rupees >= 1e7 {
        format!("{} crore", trim(rupees / 1e7))
    } else if rupees >= 1e5 {
        format!("{} lakh", trim(rupees / 1e5))
    } else {
        format!("₹{rupees:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn money_is_read_in_indian_units() {
        assert_eq!(parse_money("1.18 crore", "price"), Some(11_800_000.0));
        assert_eq!(parse_money("₹1,18,00,000", "price"), Some(11_800_000.0));
        assert_eq!(parse_money("Rs. 85 Lakhs", "price"), Some(8_500_000.0));
        assert_eq!(parse_money("0.85", "price_crore"), Some(8_500_000.0));
        assert_eq!(parse_money("1.1 - 1.3 Cr", "price"), Some(11_000_000.0));
        assert_eq!(parse_money("on request", "price"), None);
        assert_eq!(format_money(11_800_000.0), "1.18 crore");
        assert_eq!(format_money(12_000_000.0), "1.2 crore");
        assert_eq!(format_money(8_500_000.0), "85 lakh");
        assert_eq!(format_money(45_000.0), "₹45000");
        assert_eq!(leading_number("3 BHK"), Some(3.0));
        assert_eq!(leading_number("BHK 3"), None);
    }

    #[test]
    fn rules_include_exclude_or_skip() {
        let slots: BTreeMap<String, SlotValue> = [
            ("bedrooms".to_owned(), SlotValue::Number(3.0)),
            ("budget".to_owned(), SlotValue::Money(12_000_000.0)),
            ("location".to_owned(), SlotValue::Text("Whitefield".into())),
        ]
        .into_iter()
        .collect();
        assert!(active(&slots));
        let prestige = fields(&[
            ("bedrooms", "3"),
            ("price", "1.18 crore"),
            ("locality", "Whitefield"),
        ]);
        assert_eq!(evaluate(&slots, &prestige), Some(3));
        // 1.32 crore is the ceiling (1.2 × 1.1).
        let dear = fields(&[
            ("bedrooms", "3"),
            ("price", "1.35 crore"),
            ("locality", "Whitefield"),
        ]);
        assert_eq!(evaluate(&slots, &dear), None);
        let edge = fields(&[
            ("bedrooms", "3 BHK"),
            ("price", "1.32 crore"),
            ("locality", "whitefield"),
        ]);
        assert_eq!(evaluate(&slots, &edge), Some(3));
        let two = fields(&[("bedrooms", "2"), ("price", "0.85 crore")]);
        assert_eq!(evaluate(&slots, &two), None);
        let elsewhere = fields(&[("locality", "Panathur"), ("zone", "East Bangalore")]);
        assert_eq!(evaluate(&slots, &elsewhere), None);
        // Any location column may match; "east" is a word of the zone.
        let east = [("location".to_owned(), SlotValue::Text("East".into()))]
            .into_iter()
            .collect();
        assert_eq!(evaluate(&east, &elsewhere), Some(1));
        // No such columns (a Markdown section), or unreadable values: untouched.
        assert_eq!(
            evaluate(&slots, &fields(&[("file", "policies.md")])),
            Some(0)
        );
        assert_eq!(
            evaluate(&slots, &fields(&[("price", "on request")])),
            Some(0)
        );
    }
}
