//! English number words, shared by the recogniser's lexicon (digits in
//! phrases → words), speech normalisation (digits in replies → words) and
//! the understanding model (spoken numbers → values).

/// "zero" to "nineteen", indexed by value.
pub const ONES: [&str; 20] = [
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
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

/// The tens, indexed by tens digit ("twenty" at 2; 0 and 1 are empty).
pub const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
