//! Measuring fraud decisions against ground truth the way a fraud team does.
//!
//! Labels map an order id to its fraud pattern (`card_testing`, `account_takeover`,
//! `multi_account`, …); orders without a label are legitimate. Decisions without an order id are
//! ignored, and the first decision of an order id counts.
//!
//! **Train and test.** Orders are split by time: the earlier [`Options::train_share`] trains the
//! learned baseline, and *every* figure is computed on the later orders only, so that the rules and
//! every baseline are judged on the same orders and the model never sees them.
//!
//! **Prevalence.** A store sees 0.1–2% fraud; a simulation needs more to measure anything. Figures
//! are given at each prevalence of [`Options::prevalences`] by reweighting the test orders (each
//! fraud order counts `π/(1−π) · honest/fraud` times): recall and the false-positive rate do not
//! depend on prevalence, precision does, and a review budget (a share of *all* orders) selects
//! fewer fraud orders when fraud is rarer.
//!
//! **Scorers.** Each ranks the orders; a team reviews from the top:
//! - `rules`: the decision's score as the engine served it: the rules plus, with a `[model]`
//!   table (the default rules have one), the shipped model's weighted probability (ties broken by
//!   amount, larger first);
//! - `amount`: the order's amount alone;
//! - `velocity rules`: the velocity-only rule set (`velocity_rules.toml`), scored on the same
//!   features;
//! - `logistic regression`: [`super::logistic`] over every feature, trained on the earlier orders;
//! - `boosted trees`: [`super::model`] trained on the earlier orders of this run alone, what a
//!   store gets by training on its own history (`shoplake fraud train`) instead of using the
//!   shipped model.
//!
//! For each: the average precision (area under the precision–recall curve), recall and precision
//! when the team reviews [`Options::budget`] of the orders, the cost per 1,000 orders at that
//! budget (fraud missed at its amount, each review at [`Options::review_cost`], each honest order
//! held at [`Options::friction_cost`]), and recall per pattern. The rules' verdicts (review +
//! block) are measured too, and each rule's precision at the reference prevalence.
//!
//! ```
//! use shoplake_live::fraud::eval::Figures;
//!
//! let f = Figures::from_counts(8, 2, 1);
//! assert_eq!((f.precision, f.recall), (0.8, 8.0 / 9.0));
//! ```

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::features::{Feature, FeatureValues};
use super::logistic::Logistic;
use super::model::{self, Model, Params};
use super::{Decision, RuleSet, Verdict};

/// The velocity-only rule set, a baseline.
pub const VELOCITY_RULES: &str = include_str!("velocity_rules.toml");

/// The parsed [`VELOCITY_RULES`].
pub fn velocity_rules() -> Arc<RuleSet> {
    static RULES: OnceLock<Arc<RuleSet>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            #[allow(clippy::expect_used)]
            // Invariant: the shipped file parses (test `the_velocity_rules_parse`).
            let rules = RuleSet::parse(VELOCITY_RULES).expect("the velocity rules parse");
            Arc::new(rules)
        })
        .clone()
}

/// Precision, recall and F1 of a set of flags (counts as observed, not reweighted).
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

/// What the evaluation needs of one order.
#[derive(Clone, Debug)]
pub struct Case {
    pub order_id: String,
    pub time: i64,
    /// Reporting currency (the `amount` feature), else the raw total.
    pub amount: f64,
    pub pattern: Option<String>,
    /// Every feature, in [`Feature::ALL`] order (0 where the decision lacks one).
    pub features: Vec<f64>,
    pub score: f64,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub shadow_reasons: Vec<String>,
}

/// One case per decided order (its first decision), in time order.
pub fn cases(decisions: &[Decision], labels: &HashMap<String, String>) -> Vec<Case> {
    let mut seen = HashSet::new();
    let mut out: Vec<Case> = decisions
        .iter()
        .filter(|d| !d.order_id.is_empty() && seen.insert(d.order_id.as_str()))
        .map(|d| Case {
            order_id: d.order_id.clone(),
            time: d.event_time,
            amount: d.feature("amount").or(d.total).unwrap_or(0.0),
            pattern: labels.get(&d.order_id).cloned(),
            features: Feature::ALL
                .iter()
                .map(|f| d.feature(f.name()).unwrap_or(0.0))
                .collect(),
            score: d.score,
            verdict: d.verdict,
            reasons: d.reasons.clone(),
            shadow_reasons: d.shadow_reasons.clone(),
        })
        .collect();
    out.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then_with(|| a.order_id.cmp(&b.order_id))
    });
    out
}

/// How to evaluate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Options {
    /// Fraud prevalences to give figures at.
    pub prevalences: Vec<f64>,
    /// The prevalence per-pattern, per-rule and curve figures are given at.
    pub reference_prevalence: f64,
    /// Share of all orders the team can review.
    pub budget: f64,
    /// Share of the orders (earliest first) that trains the learned baseline; figures are over
    /// the rest.
    pub train_share: f64,
    /// Cost of reviewing one order (reporting currency).
    pub review_cost: f64,
    /// Cost of holding an honest order for review (a late parcel, a customer lost).
    pub friction_cost: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            prevalences: vec![0.001, 0.005, 0.01, 0.02],
            reference_prevalence: 0.01,
            budget: 0.01,
            train_share: 0.5,
            review_cost: 3.0,
            friction_cost: 10.0,
        }
    }
}

/// One scorer at one prevalence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtPrevalence {
    pub prevalence: f64,
    /// Area under the precision–recall curve (average precision).
    pub average_precision: f64,
    /// Recall and precision when the budget's share of orders is reviewed from the top.
    pub budget_recall: f64,
    pub budget_precision: f64,
    /// Per 1,000 orders: fraud missed (its amount), reviews, honest orders held.
    pub cost_per_1000: f64,
}

/// Recall on one pattern.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatternRecall {
    pub pattern: String,
    pub orders: usize,
    pub recall: f64,
}

/// A scorer's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScorerReport {
    pub name: String,
    pub at: Vec<AtPrevalence>,
    /// Interpolated precision at recall 0.1, 0.2 … 1.0 at the reference prevalence.
    pub curve: Vec<(f64, f64)>,
    /// At the budget and the reference prevalence.
    pub per_pattern: Vec<PatternRecall>,
}

impl ScorerReport {
    /// Its figures at `prevalence`.
    pub fn at(&self, prevalence: f64) -> Option<&AtPrevalence> {
        self.at
            .iter()
            .find(|a| (a.prevalence - prevalence).abs() < 1e-12)
    }
}

/// The rules' verdicts (review + block counted as flagged) at one prevalence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictAt {
    pub prevalence: f64,
    pub recall: f64,
    pub precision: f64,
    /// Share of all orders flagged.
    pub flagged_share: f64,
}

/// How one rule did on the test orders.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleFigures {
    pub reason: String,
    pub shadow: bool,
    pub fired: usize,
    pub on_fraud: usize,
    /// Share of fraud orders it fired on.
    pub recall: f64,
    /// At the reference prevalence.
    pub precision: f64,
}

/// Decisions measured against labels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FraudReport {
    pub options: Options,
    /// Decided orders, and of them fraud.
    pub orders: usize,
    pub fraud_orders: usize,
    /// Labelled orders no decision was made for (their order event never reached the engine).
    pub labels_without_decision: usize,
    pub train_orders: usize,
    pub train_fraud: usize,
    pub test_orders: usize,
    pub test_fraud: usize,
    /// The verdicts on the test orders as observed.
    pub observed: Figures,
    pub verdicts: Vec<VerdictAt>,
    /// Verdict recall per pattern on the test orders.
    pub verdict_per_pattern: Vec<PatternRecall>,
    pub scorers: Vec<ScorerReport>,
    pub per_rule: Vec<RuleFigures>,
}

impl FraudReport {
    pub fn scorer(&self, name: &str) -> Option<&ScorerReport> {
        self.scorers.iter().find(|s| s.name == name)
    }
}

/// The scorers' names.
pub const RULES: &str = "rules";
pub const AMOUNT: &str = "amount";
pub const VELOCITY: &str = "velocity rules";
pub const LOGISTIC: &str = "logistic regression";
/// Gradient-boosted trees trained on the earlier orders.
pub const BOOSTED: &str = "boosted trees";

/// Measures `decisions` against `labels` (order id → pattern).
pub fn evaluate(
    decisions: &[Decision],
    labels: &HashMap<String, String>,
    options: &Options,
) -> FraudReport {
    let all = cases(decisions, labels);
    let decided: HashSet<&str> = all.iter().map(|c| c.order_id.as_str()).collect();
    let labels_without_decision = labels
        .keys()
        .filter(|k| !decided.contains(k.as_str()))
        .count();
    let split = ((all.len() as f64) * options.train_share.clamp(0.0, 1.0)).round() as usize;
    let (train, test) = all.split_at(split.min(all.len()));
    let fraud = |cases: &[Case]| cases.iter().filter(|c| c.pattern.is_some()).count();

    let model = (!train.is_empty()).then(|| {
        // The model's inputs: not the shipped model's output.
        let x: Vec<Vec<f64>> = train.iter().map(model_inputs).collect();
        let y: Vec<bool> = train.iter().map(|c| c.pattern.is_some()).collect();
        Logistic::train(&x, &y)
    });
    let velocity = velocity_rules();
    let velocity_score = |c: &Case| {
        let mut values = FeatureValues::default();
        for (f, v) in Feature::ALL.iter().zip(&c.features) {
            values.set(*f, *v);
        }
        velocity.evaluate(&values).score
    };
    let inputs: Vec<Vec<f64>> = test.iter().map(model_inputs).collect();
    let probability: Vec<f64> = inputs
        .iter()
        .map(|x| model.as_ref().map_or(0.0, |m| m.score(x)))
        .collect();
    let boosted = train_model(train, "evaluation");
    let boosted: Vec<f64> = inputs.iter().map(|x| boosted.probability(x)).collect();
    let scorers: Vec<(&str, Vec<f64>)> = vec![
        (RULES, test.iter().map(|c| c.score).collect()),
        (AMOUNT, test.iter().map(|c| c.amount).collect()),
        (VELOCITY, test.iter().map(velocity_score).collect()),
        (LOGISTIC, probability),
        (BOOSTED, boosted),
    ];
    let scorers = scorers
        .into_iter()
        .map(|(name, scores)| rank(name, test, &scores, options))
        .collect();

    let flagged = |c: &Case| c.verdict != Verdict::Allow;
    let tp = test
        .iter()
        .filter(|c| c.pattern.is_some() && flagged(c))
        .count();
    let fp = test
        .iter()
        .filter(|c| c.pattern.is_none() && flagged(c))
        .count();
    let (f, l) = (fraud(test), test.len() - fraud(test));
    let verdicts = options
        .prevalences
        .iter()
        .map(|&p| {
            let recall = ratio(tp as f64, f as f64);
            let fpr = ratio(fp as f64, l as f64);
            VerdictAt {
                prevalence: p,
                recall,
                precision: ratio(p * recall, p * recall + (1.0 - p) * fpr),
                flagged_share: p * recall + (1.0 - p) * fpr,
            }
        })
        .collect();
    let selected: Vec<bool> = test.iter().map(flagged).collect();
    FraudReport {
        options: options.clone(),
        orders: all.len(),
        fraud_orders: fraud(&all),
        labels_without_decision,
        train_orders: train.len(),
        train_fraud: fraud(train),
        test_orders: test.len(),
        test_fraud: f,
        observed: Figures::from_counts(tp, fp, f - tp),
        verdicts,
        verdict_per_pattern: per_pattern(test, &selected),
        scorers,
        per_rule: per_rule(test, options.reference_prevalence),
    }
}

/// A case's values of the model's inputs ([`model::inputs`], in that order).
fn model_inputs(c: &Case) -> Vec<f64> {
    model::inputs()
        .iter()
        .map(|&f| c.features.get(f as usize).copied().unwrap_or(0.0))
        .collect()
}

/// A [`Model`] trained on labelled cases (a pattern: fraud), with the default [`Params`].
pub fn train_model(cases: &[Case], version: &str) -> Model {
    let x: Vec<Vec<f64>> = cases.iter().map(model_inputs).collect();
    let y: Vec<bool> = cases.iter().map(|c| c.pattern.is_some()).collect();
    Model::train(&model::inputs(), &x, &y, &Params::default(), version)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The weight of a fraud order that makes `fraud` of them among `honest` a prevalence `p`.
fn fraud_weight(p: f64, fraud: usize, honest: usize) -> f64 {
    if fraud == 0 {
        return 0.0;
    }
    p / (1.0 - p) * honest as f64 / fraud as f64
}

/// One scorer over the test cases: ranked by score, then amount, then order id.
fn rank(name: &str, cases: &[Case], scores: &[f64], options: &Options) -> ScorerReport {
    let mut order: Vec<usize> = (0..cases.len()).collect();
    order.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then_with(|| cases[b].amount.total_cmp(&cases[a].amount))
            .then_with(|| cases[a].order_id.cmp(&cases[b].order_id))
    });
    let fraud = cases.iter().filter(|c| c.pattern.is_some()).count();
    let honest = cases.len() - fraud;
    let at_p = |p: f64| -> (AtPrevalence, Vec<(f64, f64)>, Vec<bool>) {
        let w = fraud_weight(p, fraud, honest);
        let total = w * fraud as f64 + honest as f64;
        // The precision–recall curve, one point per distinct score.
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut points = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let s = scores[order[i]];
            while i < order.len() && scores[order[i]].total_cmp(&s) == Ordering::Equal {
                if cases[order[i]].pattern.is_some() {
                    tp += 1;
                } else {
                    fp += 1;
                }
                i += 1;
            }
            let precision = ratio(w * tp as f64, w * tp as f64 + fp as f64);
            points.push((ratio(tp as f64, fraud as f64), precision));
        }
        let mut average_precision = 0.0;
        let mut last_recall = 0.0;
        for &(r, p) in &points {
            average_precision += (r - last_recall) * p;
            last_recall = r;
        }
        // The budget: from the top until the reviewed mass reaches budget × all orders.
        let mut selected = vec![false; cases.len()];
        let (mut mass, mut tp, mut fp) = (0.0, 0usize, 0usize);
        let mut missed_loss: f64 = cases
            .iter()
            .filter(|c| c.pattern.is_some())
            .map(|c| w * c.amount)
            .sum();
        for &k in &order {
            if mass >= options.budget * total {
                break;
            }
            selected[k] = true;
            if cases[k].pattern.is_some() {
                mass += w;
                tp += 1;
                missed_loss -= w * cases[k].amount;
            } else {
                mass += 1.0;
                fp += 1;
            }
        }
        let cost = missed_loss + mass * options.review_cost + fp as f64 * options.friction_cost;
        let curve = (1..=10)
            .map(|tenth| {
                let r = tenth as f64 / 10.0;
                let best = points
                    .iter()
                    .filter(|(recall, _)| *recall >= r - 1e-9)
                    .map(|(_, p)| *p)
                    .fold(0.0, f64::max);
                (r, best)
            })
            .collect();
        (
            AtPrevalence {
                prevalence: p,
                average_precision,
                budget_recall: ratio(tp as f64, fraud as f64),
                budget_precision: ratio(w * tp as f64, w * tp as f64 + fp as f64),
                cost_per_1000: 1000.0 * ratio(cost, total),
            },
            curve,
            selected,
        )
    };
    let at = options.prevalences.iter().map(|&p| at_p(p).0).collect();
    let (_, curve, selected) = at_p(options.reference_prevalence);
    ScorerReport {
        name: name.to_owned(),
        at,
        curve,
        per_pattern: per_pattern(cases, &selected),
    }
}

fn per_pattern(cases: &[Case], selected: &[bool]) -> Vec<PatternRecall> {
    let mut by: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (c, &s) in cases.iter().zip(selected) {
        if let Some(p) = &c.pattern {
            let e = by.entry(p.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(s);
        }
    }
    by.into_iter()
        .map(|(pattern, (orders, hit))| PatternRecall {
            pattern: pattern.to_owned(),
            orders,
            recall: ratio(hit as f64, orders as f64),
        })
        .collect()
}

fn per_rule(cases: &[Case], prevalence: f64) -> Vec<RuleFigures> {
    let fraud = cases.iter().filter(|c| c.pattern.is_some()).count();
    let w = fraud_weight(prevalence, fraud, cases.len() - fraud);
    let mut rules: BTreeMap<(&str, bool), (usize, usize)> = BTreeMap::new();
    for c in cases {
        let reasons = c.reasons.iter().map(|r| (r.as_str(), false));
        let shadow = c.shadow_reasons.iter().map(|r| (r.as_str(), true));
        for key in reasons.chain(shadow) {
            let r = rules.entry(key).or_default();
            r.0 += 1;
            r.1 += usize::from(c.pattern.is_some());
        }
    }
    rules
        .into_iter()
        .map(|((reason, shadow), (fired, on_fraud))| {
            let honest = (fired - on_fraud) as f64;
            RuleFigures {
                reason: reason.to_owned(),
                shadow,
                fired,
                on_fraud,
                recall: ratio(on_fraud as f64, fraud as f64),
                precision: ratio(w * on_fraud as f64, w * on_fraud as f64 + honest),
            }
        })
        .collect()
}

/// What the rules must reach (issue 22): at the reference prevalence and the budget, recall and
/// precision, and recall over the amount threshold's at the same budget.
#[derive(Clone, Copy, Debug)]
pub struct Targets {
    pub recall: f64,
    pub precision: f64,
    pub over_amount: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            recall: 0.7,
            precision: 0.5,
            over_amount: 2.0,
        }
    }
}

/// Whether the `rules` scorer meets `targets`; the error says which figure missed.
pub fn check_targets(report: &FraudReport, targets: &Targets) -> Result<(), String> {
    let p = report.options.reference_prevalence;
    let at = |name: &str| {
        report
            .scorer(name)
            .and_then(|s| s.at(p))
            .ok_or_else(|| format!("no {name} figures at prevalence {p}"))
    };
    let (rules, amount) = (at(RULES)?, at(AMOUNT)?);
    // Reweighted figures are sums of fractions: 0.5 may come out as 0.4999999999999.
    const ROUNDING: f64 = 1e-9;
    let mut missed = Vec::new();
    if rules.budget_recall < targets.recall - ROUNDING {
        missed.push(format!(
            "recall {:.3} < {}",
            rules.budget_recall, targets.recall
        ));
    }
    if rules.budget_precision < targets.precision - ROUNDING {
        missed.push(format!(
            "precision {:.3} < {}",
            rules.budget_precision, targets.precision
        ));
    }
    if rules.budget_recall < targets.over_amount * amount.budget_recall - ROUNDING {
        missed.push(format!(
            "recall {:.3} < {} × the amount threshold's {:.3}",
            rules.budget_recall, targets.over_amount, amount.budget_recall
        ));
    }
    if missed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "at prevalence {p} and a review budget of {}: {}",
            report.options.budget,
            missed.join("; ")
        ))
    }
}

impl fmt::Display for FraudReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "orders {} (fraud {}); trained on the first {} (fraud {}), measured on the last {} (fraud {})",
            self.orders,
            self.fraud_orders,
            self.train_orders,
            self.train_fraud,
            self.test_orders,
            self.test_fraud
        )?;
        writeln!(
            f,
            "review budget {:.1}% of orders; cost per 1,000 orders = fraud missed + {} per review + {} per honest order held",
            100.0 * o.budget,
            o.review_cost,
            o.friction_cost
        )?;
        writeln!(
            f,
            "\n{:<22}{:>10}{:>8}{:>11}{:>11}{:>11}",
            "scorer", "fraud", "AP", "recall@b", "prec@b", "cost/1k"
        )?;
        for s in &self.scorers {
            for a in &s.at {
                writeln!(
                    f,
                    "{:<22}{:>9.1}%{:>8.3}{:>11.3}{:>11.3}{:>11.1}",
                    s.name,
                    100.0 * a.prevalence,
                    a.average_precision,
                    a.budget_recall,
                    a.budget_precision,
                    a.cost_per_1000
                )?;
            }
        }
        writeln!(
            f,
            "\nrules' verdicts (review + block): observed tp {}, fp {}, fn {}",
            self.observed.true_positives,
            self.observed.false_positives,
            self.observed.false_negatives
        )?;
        for v in &self.verdicts {
            writeln!(
                f,
                "  at {:>4.1}% fraud: recall {:.3}  precision {:.3}  flagged {:.2}% of orders",
                100.0 * v.prevalence,
                v.recall,
                v.precision,
                100.0 * v.flagged_share
            )?;
        }
        writeln!(
            f,
            "\nrecall per pattern at the budget, {:.1}% fraud (verdicts last)",
            100.0 * o.reference_prevalence
        )?;
        let patterns: Vec<&PatternRecall> = self.verdict_per_pattern.iter().collect();
        for p in patterns {
            write!(f, "  {:<18} {:>4} orders", p.pattern, p.orders)?;
            for s in &self.scorers {
                let r = s
                    .per_pattern
                    .iter()
                    .find(|x| x.pattern == p.pattern)
                    .map_or(0.0, |x| x.recall);
                write!(f, "  {} {:.2}", s.name, r)?;
            }
            writeln!(f, "  verdicts {:.2}", p.recall)?;
        }
        writeln!(
            f,
            "\nprecision at recall 0.1 … 1.0, {:.1}% fraud",
            100.0 * o.reference_prevalence
        )?;
        for s in &self.scorers {
            write!(f, "  {:<22}", s.name)?;
            for (_, p) in &s.curve {
                write!(f, " {p:.2}")?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "\nrules (precision at {:.1}% fraud)",
            100.0 * o.reference_prevalence
        )?;
        for r in &self.per_rule {
            writeln!(
                f,
                "  {:<34}{} fired {:>5}  on fraud {:>5}  recall {:.3}  precision {:.3}",
                r.reason,
                if r.shadow { " (shadow)" } else { "         " },
                r.fired,
                r.on_fraud,
                r.recall,
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
