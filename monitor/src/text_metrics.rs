//! Per-request text metrics that the monitor profiles (SPEC.md §6.2): readability grades
//! of prompts and responses, the counts they are built from, and the served model's
//! perplexity of its own response.
//!
//! Readability follows PyPI `textstat` 0.7 (`textstat.flesch_kincaid_grade`,
//! `textstat.automated_readability_index`) formula for formula:
//! - FK grade = 0.39 · words/sentences + 11.8 · syllables/words − 15.59;
//! - ARI = 4.71 · characters/tokens + 0.5 · words/sentences − 21.43;
//!   each 0.0 when one of its ratios is 0 (empty text), as in textstat.
//!
//! The counts are textstat's, reproduced exactly (Python's Unicode `\w` / `\s` classes are
//! mapped onto Rust's `char::is_alphanumeric` / `char::is_whitespace`, which agree on
//! English text):
//! - [`word_count`] (`lexicon_count`): whitespace tokens after removing punctuation —
//!   everything but word characters, whitespace and apostrophes, and apostrophes not
//!   starting a contraction ending (t, s, d, ve, ll, re);
//! - [`sentence_count`]: matches of `\b[^.!?]+[.!?]*`, not counting those of two words or
//!   fewer, at least 1 for non-empty text;
//! - [`char_count`]: non-whitespace characters, punctuation included; ARI divides them by
//!   the raw whitespace tokens ([`token_count`]), not by [`word_count`].
//!
//! **Syllables are estimated, not looked up.** textstat counts syllables with the CMU
//! Pronouncing Dictionary (126 000 words) and Pyphen hyphenation patterns for other words;
//! keel estimates them with the rules of [`count_word_syllables`], which agree with it on
//! about 99 % of running English words. Word and sentence counts — hence ARI — match textstat
//! exactly; the Flesch–Kincaid grade matches it within [`FLESCH_KINCAID_TOLERANCE`] grade
//! levels on the reference texts of `tests/fixtures/scipy_reference.json` (exactly on plain
//! prose; the largest gaps come from hyphenated compounds and rare technical words, which
//! textstat itself counts with Pyphen's approximate patterns).
//!
//! Invariants: every function accepts any `&str` (empty, non-English, emoji) without
//! panicking and returns finite values. Cost: O(length of the text).

mod syllables;

pub use syllables::count_word_syllables;

/// Largest difference from `textstat.flesch_kincaid_grade` on the reference texts,
/// rounded up; the reference test enforces it.
pub const FLESCH_KINCAID_TOLERANCE: f64 = 1.0;

/// Python's `\s` for `str` patterns: Unicode whitespace, plus the ASCII separators
/// U+001C..U+001F that Python counts and Rust does not.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` for `str` patterns: letters, digits and the underscore.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// textstat's `remove_punctuation(text, rm_apostrophe=False)`: drops apostrophes that do
/// not start a contraction ending (`'(?!([tsd]|ve|ll|re))`), then every character that is
/// not a word character, whitespace or apostrophe.
fn remove_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '\'' {
            let next = |k: usize| chars.get(i + k).copied();
            let contraction = matches!(next(1), Some('t' | 's' | 'd'))
                || matches!(
                    (next(1), next(2)),
                    (Some('v'), Some('e')) | (Some('l'), Some('l')) | (Some('r'), Some('e'))
                );
            if contraction {
                out.push(c);
            }
        } else if is_word_char(c) || is_space(c) {
            out.push(c);
        }
    }
    out
}

/// Words of `text` after punctuation removal (textstat's `list_words` defaults).
fn words(text: &str) -> Vec<String> {
    remove_punctuation(text).split(is_space).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// Number of words, punctuation removed (`textstat.lexicon_count(text)`).
pub fn word_count(text: &str) -> usize {
    words(text).len()
}

/// Whitespace-separated tokens, punctuation kept (`count_words(rm_punctuation=False)`).
pub fn token_count(text: &str) -> usize {
    text.split(is_space).filter(|w| !w.is_empty()).count()
}

/// Characters that are not whitespace (`textstat.char_count(text)`).
pub fn char_count(text: &str) -> usize {
    text.chars().filter(|&c| !is_space(c)).count()
}

/// Number of sentences (`textstat.sentence_count(text)`): 0 for "", otherwise at least 1.
pub fn sentence_count(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    let is_end = |c: char| matches!(c, '.' | '!' | '?');
    let chars: Vec<char> = text.chars().collect();
    let (mut found, mut ignored) = (0usize, 0usize);
    let mut p = 0;
    while p < chars.len() {
        let c = chars[p];
        let prev_word = p > 0 && is_word_char(chars[p - 1]);
        // `\b` then `[^.!?]`: a word boundary before a non-terminator.
        if is_end(c) || prev_word == is_word_char(c) {
            p += 1;
            continue;
        }
        let start = p;
        while p < chars.len() && !is_end(chars[p]) {
            p += 1;
        }
        while p < chars.len() && is_end(chars[p]) {
            p += 1;
        }
        let sentence: String = chars[start..p].iter().collect();
        found += 1;
        if word_count(&sentence) <= 2 {
            ignored += 1;
        }
    }
    found.saturating_sub(ignored).max(1)
}

/// Estimated syllables in `text`: the sum over its words (lower-cased, punctuation
/// removed). See the module documentation for how close this is to textstat.
pub fn syllable_count(text: &str) -> usize {
    words(text).iter().map(|w| count_word_syllables(&w.to_lowercase())).sum()
}

/// Average words per sentence, 0 when there is no sentence.
fn words_per_sentence(text: &str) -> f64 {
    match sentence_count(text) {
        0 => 0.0,
        s => word_count(text) as f64 / s as f64,
    }
}

/// Flesch–Kincaid grade level (`textstat.flesch_kincaid_grade`), with estimated
/// syllables; 0.0 for text without words.
pub fn flesch_kincaid_grade(text: &str) -> f64 {
    let sentence_length = words_per_sentence(text);
    let words = word_count(text);
    let syllables_per_word = if words == 0 { 0.0 } else { syllable_count(text) as f64 / words as f64 };
    if sentence_length == 0.0 || syllables_per_word == 0.0 {
        return 0.0;
    }
    (0.39 * sentence_length) + (11.8 * syllables_per_word) - 15.59
}

/// Automated readability index (`textstat.automated_readability_index`); 0.0 for text
/// without words.
pub fn automated_readability_index(text: &str) -> f64 {
    let tokens = token_count(text);
    let chars_per_word = if tokens == 0 { 0.0 } else { char_count(text) as f64 / tokens as f64 };
    let sentence_length = words_per_sentence(text);
    if chars_per_word == 0.0 || sentence_length == 0.0 {
        return 0.0;
    }
    (4.71 * chars_per_word) + (0.5 * sentence_length) - 21.43
}

/// Perplexity exp(−mean log p) of a sequence from its per-token natural-log
/// probabilities; `None` for an empty sequence or a non-finite mean (a NaN or a −∞
/// log-probability, i.e. a token the model gave probability 0).
pub fn perplexity(logprobs: &[f32]) -> Option<f64> {
    if logprobs.is_empty() {
        return None;
    }
    let mean = logprobs.iter().map(|&x| f64::from(x)).sum::<f64>() / logprobs.len() as f64;
    let ppl = (-mean).exp();
    (mean.is_finite() && ppl.is_finite()).then_some(ppl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_removal_keeps_contractions() {
        assert_eq!(remove_punctuation("Don't 'quote' me, we'll see's."), "Don't quote me we'll see's");
        assert_eq!(remove_punctuation("e.g. 42% re-run"), "eg 42 rerun");
        assert_eq!(remove_punctuation("café — naïve"), "café  naïve");
    }

    #[test]
    fn counts_on_a_small_text() {
        let t = "The cat sat. It ran away quickly! Why?";
        assert_eq!(word_count(t), 8);
        assert_eq!(token_count(t), 8);
        assert_eq!(char_count(t), 31);
        // "Why?" has one word, so it is not counted as a sentence.
        assert_eq!(sentence_count(t), 2);
        assert_eq!(sentence_count(""), 0);
        assert_eq!(sentence_count("   "), 1);
        assert_eq!(sentence_count("Hi there."), 1);
    }

    #[test]
    fn sentence_matches_start_at_word_boundaries() {
        // "...Hello" starts matching at "H"; "3.5" splits into "Version 3." (two words, not
        // counted) and "5 is out ..." (values from textstat 0.7.13).
        assert_eq!(sentence_count("...Hello there my friend. And then three more words."), 2);
        assert_eq!(sentence_count("Version 3.5 is out now for all of you"), 1);
    }

    #[test]
    fn grades_of_empty_text_are_zero() {
        for t in ["", "   ", "!!!", "..."] {
            assert_eq!(flesch_kincaid_grade(t), 0.0, "{t:?}");
            assert!(automated_readability_index(t).is_finite());
        }
        assert_eq!(automated_readability_index(""), 0.0);
    }

    #[test]
    fn harder_text_grades_higher() {
        let easy = "The dog ran. The cat sat. We had fun in the sun.";
        let hard = "Notwithstanding considerable methodological heterogeneity, the preponderance of \
                    epidemiological evidence indicates that socioeconomic deprivation constitutes an \
                    independent determinant of cardiovascular morbidity.";
        assert!(flesch_kincaid_grade(hard) > flesch_kincaid_grade(easy) + 10.0);
        assert!(automated_readability_index(hard) > automated_readability_index(easy) + 10.0);
    }

    #[test]
    fn any_input_is_safe() {
        for t in ["日本語のテキスト。", "🦙🚀 😶‍🌫️", "\u{1c}\u{1f}", "a\u{0301}", "'''", "x'"] {
            assert!(flesch_kincaid_grade(t).is_finite());
            assert!(automated_readability_index(t).is_finite());
        }
    }

    #[test]
    fn perplexity_is_exp_of_mean_negative_logprob() {
        assert_eq!(perplexity(&[]), None);
        assert_eq!(perplexity(&[0.0, 0.0]), Some(1.0));
        let lp = [-1.0f32, -2.0, -3.0];
        assert!((perplexity(&lp).unwrap() - 2f64.exp()).abs() < 1e-12);
        let uniform = (1.0f32 / 50.0).ln();
        assert!((perplexity(&[uniform; 7]).unwrap() - 50.0).abs() < 1e-4);
        assert_eq!(perplexity(&[f32::NEG_INFINITY]), None);
        assert_eq!(perplexity(&[f32::NAN]), None);
    }
}
