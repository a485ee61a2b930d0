//! keel-monitor against SciPy / numpy / textstat, on the inputs and outputs recorded in
//! `tests/fixtures/scipy_reference.json` by `tools/make_monitor_reference.py`.
//!
//! Statistics must agree to 1e-6 relative, or 1e-9 absolute where the reference is near
//! zero (tiny p-values). Text metrics: counts of words, sentences and characters, and the
//! automated readability index, exactly (to round-off); the Flesch–Kincaid grade within
//! the tolerance documented in `text_metrics` (syllables are estimated by rule, textstat
//! looks them up in the CMU dictionary).

use keel_monitor::profile_stats::NumericSummary;
use keel_monitor::stats::{
    chi_squared_test, js_distance, ks_2samp, ks_2samp_with_method, kstwo_sf, l_infinity_distance,
    population_stability_index, tv_distance, wasserstein_distance, KsMethod, NumericBins, DEFAULT_NUMERIC_BINS,
};
use keel_monitor::text_metrics;
use serde_json::Value;

const REL: f64 = 1e-6;
const ABS: f64 = 1e-9;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scipy_reference.json");
    let text = std::fs::read_to_string(path).expect("fixture present (run tools/make_monitor_reference.py)");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(num).collect()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Records a mismatch instead of panicking, so that one run reports every failure.
struct Checker {
    failures: Vec<String>,
    checked: usize,
    /// Largest relative error among reference values above the absolute tolerance, and
    /// largest absolute error among those at or below it (reported, not asserted).
    worst_rel: f64,
    worst_abs_near_zero: f64,
}

impl Checker {
    fn new() -> Self {
        Checker { failures: Vec::new(), checked: 0, worst_rel: 0.0, worst_abs_near_zero: 0.0 }
    }

    fn close(&mut self, what: &str, got: f64, want: f64) {
        self.close_tol(what, got, want, REL, ABS);
    }

    fn close_tol(&mut self, what: &str, got: f64, want: f64, rel: f64, abs: f64) {
        self.checked += 1;
        let err = (got - want).abs();
        if want.abs() > abs {
            self.worst_rel = self.worst_rel.max(err / want.abs());
        } else {
            self.worst_abs_near_zero = self.worst_abs_near_zero.max(err);
        }
        let ok = err <= abs || err <= rel * want.abs();
        if !ok {
            self.failures
                .push(format!("{what}: got {got:e}, want {want:e} (rel err {:e})", (got - want).abs() / want.abs()));
        }
    }

    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        self.checked += 1;
        if got != want {
            self.failures.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn finish(self, section: &str) {
        assert!(self.checked > 0, "{section}: nothing checked");
        eprintln!(
            "{section}: {} checks, largest relative error {:.2e}, largest absolute error near zero {:.2e}",
            self.checked, self.worst_rel, self.worst_abs_near_zero
        );
        assert!(
            self.failures.is_empty(),
            "{section}: {} of {} checks failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
    }
}

fn method_name(m: KsMethod) -> &'static str {
    match m {
        KsMethod::Auto => "auto",
        KsMethod::Exact => "exact",
        KsMethod::Asymp => "asymp",
    }
}

#[test]
fn ks_2samp_matches_scipy() {
    let fx = fixture();
    let mut c = Checker::new();
    let mut methods = std::collections::BTreeSet::new();
    for case in fx["sample_pairs"].as_array().unwrap() {
        let name = text(&case["name"]);
        let (a, b) = (nums(&case["a"]), nums(&case["b"]));
        let r = ks_2samp(&a, &b).unwrap();
        let want = &case["ks"];
        c.close(&format!("{name} ks statistic"), r.statistic, num(&want["statistic"]));
        c.close(&format!("{name} ks pvalue"), r.pvalue, num(&want["pvalue"]));
        c.equal(&format!("{name} ks method"), method_name(r.method), text(&want["method"]));
        methods.insert(method_name(r.method));
        if let Some(want) = case["ks_asymp"].as_object() {
            let r = ks_2samp_with_method(&a, &b, KsMethod::Asymp).unwrap();
            c.close(&format!("{name} ks_asymp statistic"), r.statistic, num(&want["statistic"]));
            c.close(&format!("{name} ks_asymp pvalue"), r.pvalue, num(&want["pvalue"]));
        }
    }
    assert_eq!(methods.len(), 2, "the fixture exercises both the exact and the asymptotic path");
    c.finish("ks_2samp");
}

#[test]
fn kstwo_sf_matches_scipy_over_every_method() {
    let fx = fixture();
    let mut c = Checker::new();
    for row in fx["kstwo_sf"].as_array().unwrap() {
        let (n, x) = (row["n"].as_u64().unwrap(), num(&row["x"]));
        c.close(&format!("kstwo.sf({x}, {n})"), kstwo_sf(n, x), num(&row["sf"]));
    }
    c.finish("kstwo_sf");
}

#[test]
fn wasserstein_matches_scipy() {
    let fx = fixture();
    let mut c = Checker::new();
    for case in fx["sample_pairs"].as_array().unwrap() {
        let (a, b) = (nums(&case["a"]), nums(&case["b"]));
        let got = wasserstein_distance(&a, &b).unwrap();
        c.close(&format!("{} wasserstein", text(&case["name"])), got, num(&case["wasserstein_distance"]));
    }
    c.finish("wasserstein_distance");
}

/// JS, PSI, TV and L∞ of one count pair against the recorded values.
fn check_distances(c: &mut Checker, name: &str, p: &[f64], q: &[f64], want: &Value) {
    c.close(&format!("{name} js"), js_distance(p, q).unwrap(), num(&want["js_distance"]));
    c.close(
        &format!("{name} psi"),
        population_stability_index(p, q).unwrap(),
        num(&want["population_stability_index"]),
    );
    c.close(&format!("{name} tv"), tv_distance(p, q).unwrap(), num(&want["tv_distance"]));
    c.close(&format!("{name} linf"), l_infinity_distance(p, q).unwrap(), num(&want["l_infinity_distance"]));
}

#[test]
fn binned_numeric_distances_match_numpy() {
    let fx = fixture();
    assert_eq!(fx["generator"]["numeric_bins"].as_u64(), Some(DEFAULT_NUMERIC_BINS as u64));
    let mut c = Checker::new();
    for case in fx["sample_pairs"].as_array().unwrap() {
        let name = text(&case["name"]);
        let (a, b) = (nums(&case["a"]), nums(&case["b"]));
        let want = &case["binned"];
        let bins = NumericBins::from_baseline(&a, DEFAULT_NUMERIC_BINS).unwrap();
        c.equal(&format!("{name} cuts"), bins.cuts().to_vec(), nums(&want["cuts"]));
        let (ca, cb) = (bins.counts(&a).unwrap(), bins.counts(&b).unwrap());
        c.equal(&format!("{name} counts a"), ca.clone(), nums(&want["counts_a"]));
        c.equal(&format!("{name} counts b"), cb.clone(), nums(&want["counts_b"]));
        check_distances(&mut c, name, &ca, &cb, want);
    }
    c.finish("binned distances");
}

#[test]
fn categorical_tests_match_scipy() {
    let fx = fixture();
    let mut c = Checker::new();
    for case in fx["count_pairs"].as_array().unwrap() {
        let name = text(&case["name"]);
        let (a, b) = (nums(&case["a"]), nums(&case["b"]));
        let r = chi_squared_test(&a, &b).unwrap();
        let want = &case["chi_squared"];
        c.close(&format!("{name} chi2 statistic"), r.statistic, num(&want["statistic"]));
        c.close(&format!("{name} chi2 pvalue"), r.pvalue, num(&want["pvalue"]));
        c.equal(&format!("{name} chi2 dof"), r.dof as u64, want["dof"].as_u64().unwrap());
        check_distances(&mut c, name, &a, &b, case);
    }
    c.finish("categorical");
}

#[test]
fn numeric_summaries_match_numpy() {
    let fx = fixture();
    let mut c = Checker::new();
    for case in fx["sample_pairs"].as_array().unwrap() {
        let name = text(&case["name"]);
        let a: Vec<Option<f64>> = nums(&case["a"]).into_iter().map(Some).collect();
        let want = &case["summary_a"];
        let s = NumericSummary::compute(&a).unwrap();
        c.equal(&format!("{name} count"), s.count, want["count"].as_u64().unwrap());
        c.close(&format!("{name} avg"), s.avg.unwrap(), num(&want["avg"]));
        match want["stddev"].as_f64() {
            Some(sd) => c.close(&format!("{name} stddev"), s.stddev.unwrap(), sd),
            None => c.equal(&format!("{name} stddev"), s.stddev, None),
        }
        c.close(&format!("{name} min"), s.min.unwrap(), num(&want["min"]));
        c.close(&format!("{name} max"), s.max.unwrap(), num(&want["max"]));
        c.close(&format!("{name} median"), s.median.unwrap(), num(&want["median"]));
        c.equal(&format!("{name} quantile levels"), s.quantile_levels.to_vec(), nums(&want["quantile_levels"]));
        for (i, (got, want)) in s.quantiles.iter().zip(nums(&want["quantiles"])).enumerate() {
            c.close(&format!("{name} quantile {i}"), *got, want);
        }
        c.equal(&format!("{name} distinct"), s.distinct_count, want["distinct_count"].as_u64().unwrap());
    }
    c.finish("numeric summaries");
}

#[test]
fn text_counts_and_ari_match_textstat() {
    let fx = fixture();
    let mut c = Checker::new();
    for case in fx["texts"].as_array().unwrap() {
        let name = text(&case["name"]);
        let t = text(&case["text"]);
        c.equal(&format!("{name} words"), text_metrics::word_count(t) as u64, case["lexicon_count"].as_u64().unwrap());
        c.equal(
            &format!("{name} sentences"),
            text_metrics::sentence_count(t) as u64,
            case["sentence_count"].as_u64().unwrap(),
        );
        c.equal(&format!("{name} chars"), text_metrics::char_count(t) as u64, case["char_count"].as_u64().unwrap());
        let ari = text_metrics::automated_readability_index(t);
        c.close_tol(&format!("{name} ARI"), ari, num(&case["automated_readability_index"]), 1e-12, 1e-12);
    }
    c.finish("text counts and ARI");
}

#[test]
fn flesch_kincaid_within_documented_tolerance() {
    let fx = fixture();
    let mut c = Checker::new();
    let mut worst = 0.0f64;
    for case in fx["texts"].as_array().unwrap() {
        let name = text(&case["name"]);
        let t = text(&case["text"]);
        let got = text_metrics::flesch_kincaid_grade(t);
        let want = num(&case["flesch_kincaid_grade"]);
        worst = worst.max((got - want).abs());
        c.close_tol(&format!("{name} FK grade"), got, want, 0.0, text_metrics::FLESCH_KINCAID_TOLERANCE);
        let syllables = case["syllable_count"].as_u64().unwrap() as f64;
        // The syllable estimate itself: within 10% of the dictionary count per text.
        let est = text_metrics::syllable_count(t) as f64;
        c.close_tol(&format!("{name} syllables"), est, syllables, 0.10, 0.0);
    }
    eprintln!("largest |FK grade − textstat| = {worst:.3}");
    c.finish("Flesch–Kincaid");
}
