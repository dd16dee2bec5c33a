//! Measuring decisions against ground truth: precision, recall and F1 overall, recall per fraud
//! pattern, how often each rule fired on fraud, and a naive baseline (one amount threshold, the
//! best one) to compare with.
//!
//! An order counts as flagged when its verdict is review or block. Labels map an order id to its
//! fraud pattern (`card_testing`, `account_takeover`, `multi_account`, …); orders without a label
//! are legitimate. Decisions without an order id are ignored, and the first decision of an order
//! id counts.
//!
//! ```
//! use shoplake_live::fraud::eval::Figures;
//!
//! let f = Figures::from_counts(8, 2, 1);
//! assert_eq!((f.precision, f.recall), (0.8, 8.0 / 9.0));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use super::{Decision, Verdict};

/// Precision, recall and F1 of a set of flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Figures {
    /// From counts; precision is 1 when nothing was flagged, recall 1 when there was no fraud.
    pub fn from_counts(
        true_positives: usize,
        false_positives: usize,
        false_negatives: usize,
    ) -> Figures {
        let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let precision = ratio(true_positives, true_positives + false_positives);
        let recall = ratio(true_positives, true_positives + false_negatives);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Figures {
            true_positives,
            false_positives,
            false_negatives,
            precision,
            recall,
            f1,
        }
    }
}

/// Recall on one fraud pattern.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatternFigures {
    pub pattern: String,
    pub orders: usize,
    pub flagged: usize,
    pub blocked: usize,
    pub recall: f64,
}

/// How one rule did: fired on how many orders, how many of them fraudulent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleFigures {
    pub reason: String,
    pub shadow: bool,
    pub fired: usize,
    pub on_fraud: usize,
    /// on_fraud / fired.
    pub precision: f64,
}

/// The best single amount threshold: flag every order at or above it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Baseline {
    /// In the reporting currency (the `amount` feature).
    pub threshold: f64,
    pub figures: Figures,
}

/// Decisions measured against labels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FraudReport {
    pub orders: usize,
    pub fraud_orders: usize,
    pub flagged: usize,
    pub blocked: usize,
    pub overall: Figures,
    pub per_pattern: Vec<PatternFigures>,
    pub per_rule: Vec<RuleFigures>,
    pub baseline: Baseline,
    /// Labelled orders no decision was made for (their order event never reached the engine).
    pub labels_without_decision: usize,
}

fn flagged(d: &Decision) -> bool {
    d.verdict != Verdict::Allow
}

/// One decision per order id, the first.
fn unique(decisions: &[Decision]) -> Vec<&Decision> {
    let mut seen = HashSet::new();
    decisions
        .iter()
        .filter(|d| !d.order_id.is_empty() && seen.insert(d.order_id.as_str()))
        .collect()
}

/// The amount an order is judged on by the baseline: the `amount` feature (reporting currency),
/// else the raw total.
fn amount(d: &Decision) -> f64 {
    d.feature("amount").or(d.total).unwrap_or(0.0)
}

/// Measures `decisions` against `labels` (order id → pattern).
pub fn evaluate(decisions: &[Decision], labels: &HashMap<String, String>) -> FraudReport {
    let decisions = unique(decisions);
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    let mut patterns: BTreeMap<&str, PatternFigures> = BTreeMap::new();
    let mut rules: BTreeMap<(&str, bool), (usize, usize)> = BTreeMap::new();
    let mut blocked = 0;
    for d in &decisions {
        let label = labels.get(&d.order_id);
        let hit = flagged(d);
        blocked += usize::from(d.verdict == Verdict::Block);
        match (label, hit) {
            (Some(_), true) => tp += 1,
            (Some(_), false) => fn_ += 1,
            (None, true) => fp += 1,
            (None, false) => {}
        }
        if let Some(pattern) = label {
            let p = patterns
                .entry(pattern.as_str())
                .or_insert_with(|| PatternFigures {
                    pattern: pattern.clone(),
                    orders: 0,
                    flagged: 0,
                    blocked: 0,
                    recall: 0.0,
                });
            p.orders += 1;
            p.flagged += usize::from(hit);
            p.blocked += usize::from(d.verdict == Verdict::Block);
        }
        let reasons = d.reasons.iter().map(|r| (r.as_str(), false));
        let shadow = d.shadow_reasons.iter().map(|r| (r.as_str(), true));
        for key in reasons.chain(shadow) {
            let r = rules.entry(key).or_default();
            r.0 += 1;
            r.1 += usize::from(label.is_some());
        }
    }
    let per_pattern = patterns
        .into_values()
        .map(|mut p| {
            p.recall = p.flagged as f64 / p.orders.max(1) as f64;
            p
        })
        .collect();
    let per_rule = rules
        .into_iter()
        .map(|((reason, shadow), (fired, on_fraud))| RuleFigures {
            reason: reason.to_owned(),
            shadow,
            fired,
            on_fraud,
            precision: on_fraud as f64 / fired.max(1) as f64,
        })
        .collect();
    let decided: HashSet<&str> = decisions.iter().map(|d| d.order_id.as_str()).collect();
    FraudReport {
        orders: decisions.len(),
        fraud_orders: tp + fn_,
        flagged: tp + fp,
        blocked,
        overall: Figures::from_counts(tp, fp, fn_),
        per_pattern,
        per_rule,
        baseline: amount_baseline_of(&decisions, labels),
        labels_without_decision: labels
            .keys()
            .filter(|k| !decided.contains(k.as_str()))
            .count(),
    }
}

/// The single amount threshold with the best F1 over `decisions`.
pub fn amount_baseline(decisions: &[Decision], labels: &HashMap<String, String>) -> Baseline {
    amount_baseline_of(&unique(decisions), labels)
}

fn amount_baseline_of(decisions: &[&Decision], labels: &HashMap<String, String>) -> Baseline {
    let mut scored: Vec<(f64, bool)> = decisions
        .iter()
        .map(|d| (amount(d), labels.contains_key(&d.order_id)))
        .collect();
    // Highest amount first: lowering the threshold past each distinct amount flags its orders.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let fraud = scored.iter().filter(|s| s.1).count();
    let mut best = Baseline {
        threshold: f64::INFINITY,
        figures: Figures::from_counts(0, 0, fraud),
    };
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < scored.len() {
        let threshold = scored[i].0;
        while i < scored.len() && scored[i].0 == threshold {
            if scored[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let figures = Figures::from_counts(tp, fp, fraud - tp);
        if figures.f1 > best.figures.f1 {
            best = Baseline { threshold, figures };
        }
    }
    best
}

impl fmt::Display for FraudReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.overall;
        writeln!(
            f,
            "orders {}, fraud {}, flagged {} (blocked {})",
            self.orders, self.fraud_orders, self.flagged, self.blocked
        )?;
        writeln!(
            f,
            "rules:    precision {:.3}  recall {:.3}  F1 {:.3}  (tp {}, fp {}, fn {})",
            o.precision, o.recall, o.f1, o.true_positives, o.false_positives, o.false_negatives
        )?;
        let b = &self.baseline.figures;
        writeln!(
            f,
            "baseline: precision {:.3}  recall {:.3}  F1 {:.3}  (amount >= {:.2})",
            b.precision, b.recall, b.f1, self.baseline.threshold
        )?;
        for p in &self.per_pattern {
            writeln!(
                f,
                "  {:<18} recall {:.3}  ({} of {}, {} blocked)",
                p.pattern, p.recall, p.flagged, p.orders, p.blocked
            )?;
        }
        for r in &self.per_rule {
            writeln!(
                f,
                "  rule {:<30}{} fired {:>5}  on fraud {:>5}  precision {:.3}",
                r.reason,
                if r.shadow { " (shadow)" } else { "         " },
                r.fired,
                r.on_fraud,
                r.precision
            )?;
        }
        if self.labels_without_decision > 0 {
            writeln!(
                f,
                "  labelled orders never decided: {}",
                self.labels_without_decision
            )?;
        }
        Ok(())
    }
}
