//! Fraud rules: conditions over [features](super::features), each adding to an order's score,
//! and the thresholds that turn the score into a verdict.
//!
//! A rules file is TOML:
//!
//! ```toml
//! version = "2026-03-01"          # optional; a hash of the file's content when absent
//!
//! [thresholds]
//! review = 50                     # score at which an order is held for review
//! block = 80                      # score at which it is refused (review ≤ block)
//!
//! # Each rule: a reason code, a condition and a score contribution.
//! [[rule]]
//! reason = "card_testing_burst"   # [a-z0-9_], unique; recorded on the decision when it fires
//! condition = "device_failed_1h >= 2 && device_cards_1d >= 3"
//! score = 60                      # may be negative (a rule that vouches for an order)
//! shadow = false                  # optional: true scores nothing, records in shadow_reasons
//! description = "…"               # optional
//!
//! # Optional: the learned model's fraud probability (the `model_score` feature, 0–1) adds
//! # weight × model_score to every order's score; rules may also read model_score.
//! [model]
//! weight = 100
//! file = "fraud_model.json"       # optional: relative to this file; the shipped model otherwise
//! ```
//!
//! Conditions are [`evalexpr`] expressions, parsed once at load. Every identifier must be a
//! feature name ([`Feature::ALL`]); builtin functions (`min`, `max`, `math::abs`, …) are allowed.
//! A file is refused as a whole, with the line and the reason, when it is not valid TOML, has an
//! unknown or missing key, a condition that does not parse, names an unknown feature, does not
//! give true or false, or thresholds out of order, or a model file that does not read
//! ([`super::model`]); the caller keeps the rules it runs. A watched file ([`RulesFile`]) is
//! re-read when it or its model file changes (write a new model beside and rename it over the
//! old, so that a half-written file is never read). Without a `[model]` table no model runs and
//! `model_score` is 0.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use evalexpr::{EvalexprError, Node, Value};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::features::{Feature, FeatureValues};
use super::model::Model;
use super::state::hash_parts;

/// The rules shipped with shoplake.
pub const DEFAULT_RULES: &str = include_str!("default_rules.toml");

/// What to do with an order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    #[default]
    Allow,
    Review,
    Block,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Review => "review",
            Verdict::Block => "block",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rules file that cannot be used, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct RuleError {
    /// 1-based line of the offending key or table, when there is one.
    pub line: Option<usize>,
    pub message: String,
}

impl RuleError {
    fn at(line: usize, message: impl Into<String>) -> Self {
        RuleError {
            line: Some(line),
            message: message.into(),
        }
    }
}

/// Score thresholds of the verdicts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub review: f64,
    pub block: f64,
}

/// One rule, ready to evaluate.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The reason code recorded when it fires.
    pub reason: String,
    pub condition: String,
    pub score: f64,
    pub shadow: bool,
    pub description: Option<String>,
    /// Line of the rule's `[[rule]]` table in its file.
    pub line: usize,
    node: Node,
}

/// A parsed, checked set of rules.
#[derive(Clone, Debug)]
pub struct RuleSet {
    version: String,
    thresholds: Thresholds,
    rules: Vec<Rule>,
    /// The learned model and the weight of its probability in the score.
    model: Option<(Arc<Model>, f64)>,
    /// The model's file, when the rules name one.
    model_file: Option<PathBuf>,
    /// Hash of the source text, to tell a touched file from a changed one.
    content: u64,
}

/// What the rules made of one order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub score: f64,
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub shadow_reasons: Vec<String>,
    /// Conditions that failed to evaluate (an integer division by zero): counted as not fired.
    pub errors: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    version: Option<Spanned<String>>,
    thresholds: Option<Spanned<ThresholdSpec>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
    model: Option<Spanned<ModelSpec>>,
}

/// A rules file's model: the model, its weight, its file and the file's text (none for the
/// shipped model).
struct LoadedModel {
    model: Arc<Model>,
    weight: f64,
    file: Option<PathBuf>,
    json: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    weight: Spanned<f64>,
    file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdSpec {
    review: Spanned<f64>,
    block: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    reason: Spanned<String>,
    condition: Spanned<String>,
    score: Spanned<f64>,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    description: Option<String>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Feature names closest to an unknown one, for "did you mean".
fn closest_feature(name: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, &cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    Feature::ALL
        .iter()
        .map(|f| (distance(name, f.name()), f.name()))
        .min()
        .filter(|(d, _)| *d <= 3.max(name.len() / 3))
        .map(|(_, n)| n)
}

/// Whether an evaluation error depends on the values (division by zero, overflow) rather than on
/// how the condition is written.
fn depends_on_values(e: &EvalexprError) -> bool {
    matches!(
        e,
        EvalexprError::AdditionError { .. }
            | EvalexprError::SubtractionError { .. }
            | EvalexprError::NegationError { .. }
            | EvalexprError::MultiplicationError { .. }
            | EvalexprError::DivisionError { .. }
            | EvalexprError::ModulationError { .. }
    )
}

impl RuleSet {
    /// Parses and checks a rules file; a model `file` is read relative to the working folder.
    pub fn parse(text: &str) -> Result<RuleSet, RuleError> {
        Self::parse_in(text, None)
    }

    /// Parses and checks a rules file whose model `file` is relative to `folder`.
    pub fn parse_in(text: &str, folder: Option<&Path>) -> Result<RuleSet, RuleError> {
        let spec: FileSpec = toml::from_str(text).map_err(|e| RuleError {
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        let version = match &spec.version {
            Some(v) if v.get_ref().trim().is_empty() => {
                return Err(RuleError::at(
                    line_of(text, v.span().start),
                    "version must not be empty (leave it out to use a hash of the file)",
                ));
            }
            Some(v) => v.get_ref().clone(),
            None => format!("content-{:016x}", hash_parts(&[text.as_bytes()])),
        };
        let Some(thresholds) = &spec.thresholds else {
            return Err(RuleError {
                line: None,
                message: "missing [thresholds] table (review and block scores)".to_owned(),
            });
        };
        let t = thresholds.get_ref();
        for (name, value) in [("review", &t.review), ("block", &t.block)] {
            if !value.get_ref().is_finite() {
                return Err(RuleError::at(
                    line_of(text, value.span().start),
                    format!("thresholds.{name} must be a finite number"),
                ));
            }
        }
        if t.review.get_ref() > t.block.get_ref() {
            return Err(RuleError::at(
                line_of(text, t.review.span().start),
                format!(
                    "thresholds out of order: review ({}) must not be above block ({})",
                    t.review.get_ref(),
                    t.block.get_ref()
                ),
            ));
        }
        let thresholds = Thresholds {
            review: *t.review.get_ref(),
            block: *t.block.get_ref(),
        };

        let mut rules = Vec::with_capacity(spec.rule.len());
        for rule in &spec.rule {
            let line = line_of(text, rule.span().start);
            rules.push(Self::check_rule(text, line, rule.get_ref(), &rules)?);
        }
        let (model, model_file, model_json) = match &spec.model {
            None => (None, None, String::new()),
            Some(m) => {
                let loaded = Self::load_model(text, m.get_ref(), folder)?;
                (
                    Some((loaded.model, loaded.weight)),
                    loaded.file,
                    loaded.json,
                )
            }
        };
        let version = match &model {
            Some((m, _)) => format!("{version}+{}", m.version()),
            None => version,
        };
        Ok(RuleSet {
            version,
            thresholds,
            rules,
            model,
            model_file,
            // A new model in the same file is a change too.
            content: hash_parts(&[text.as_bytes(), model_json.as_bytes()]),
        })
    }

    fn load_model(
        text: &str,
        spec: &ModelSpec,
        folder: Option<&Path>,
    ) -> Result<LoadedModel, RuleError> {
        let weight = *spec.weight.get_ref();
        if !weight.is_finite() {
            return Err(RuleError::at(
                line_of(text, spec.weight.span().start),
                "model.weight must be a finite number",
            ));
        }
        let Some(file) = &spec.file else {
            return Ok(LoadedModel {
                model: Model::default_model(),
                weight,
                file: None,
                json: String::new(),
            });
        };
        let at = line_of(text, file.span().start);
        let path = match folder {
            Some(dir) => dir.join(file.get_ref()),
            None => PathBuf::from(file.get_ref()),
        };
        let json = std::fs::read_to_string(&path).map_err(|e| {
            RuleError::at(
                at,
                format!("cannot read model file {}: {e}", path.display()),
            )
        })?;
        let model = Model::from_json(&json)
            .map_err(|e| RuleError::at(at, format!("model file {}: {e}", path.display())))?;
        Ok(LoadedModel {
            model: Arc::new(model),
            weight,
            file: Some(path),
            json,
        })
    }

    /// The learned model, when the file has a `[model]` table.
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.model.as_ref().map(|(m, _)| m)
    }

    /// Sets the `model_score` feature from the model (0 without one).
    pub fn apply_model(&self, features: &mut FeatureValues) {
        let p = self.model().map_or(0.0, |m| m.score(features));
        features.set(Feature::ModelScore, p);
    }

    fn check_rule(
        text: &str,
        line: usize,
        spec: &RuleSpec,
        earlier: &[Rule],
    ) -> Result<Rule, RuleError> {
        let reason = spec.reason.get_ref();
        let reason_line = line_of(text, spec.reason.span().start);
        if reason.is_empty()
            || !reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(RuleError::at(
                reason_line,
                format!("reason {reason:?} must be a code of a-z, 0-9 and _"),
            ));
        }
        if let Some(first) = earlier.iter().find(|r| &r.reason == reason) {
            return Err(RuleError::at(
                reason_line,
                format!(
                    "reason {reason} is used twice (first by the rule at line {})",
                    first.line
                ),
            ));
        }
        let score = *spec.score.get_ref();
        if !score.is_finite() {
            return Err(RuleError::at(
                line_of(text, spec.score.span().start),
                format!("score of rule {reason} must be a finite number"),
            ));
        }
        let condition = spec.condition.get_ref();
        let at = line_of(text, spec.condition.span().start);
        let bad = |message: String| RuleError::at(at, message);
        let node = evalexpr::build_operator_tree::<evalexpr::DefaultNumericTypes>(condition)
            .map_err(|e| {
                bad(format!(
                    "condition of rule {reason} is not a valid expression: {e}"
                ))
            })?;
        if let Some(name) = node.iter_write_variable_identifiers().next() {
            return Err(bad(format!(
                "condition of rule {reason} assigns to {name}; conditions only read features"
            )));
        }
        for name in node.iter_read_variable_identifiers() {
            if Feature::from_name(name).is_none() {
                let hint = closest_feature(name)
                    .map(|n| format!(" (did you mean {n}?)"))
                    .unwrap_or_default();
                return Err(bad(format!(
                    "condition of rule {reason} uses unknown feature {name}{hint}"
                )));
            }
        }
        // A trial run with every feature at zero / false catches type errors (a count used as a
        // flag), unknown functions and conditions that do not give true or false.
        match node.eval_with_context(&FeatureValues::default()) {
            Ok(Value::Boolean(_)) => {}
            Ok(other) => {
                return Err(bad(format!(
                    "condition of rule {reason} must give true or false, it gives {other}"
                )));
            }
            Err(e) if depends_on_values(&e) => {}
            Err(e) => {
                return Err(bad(format!(
                    "condition of rule {reason} cannot be evaluated: {e}"
                )));
            }
        }
        Ok(Rule {
            reason: reason.clone(),
            condition: condition.clone(),
            score,
            shadow: spec.shadow,
            description: spec.description.clone(),
            line,
            node,
        })
    }

    /// The shipped rules ([`DEFAULT_RULES`]).
    pub fn default_rules() -> Arc<RuleSet> {
        static DEFAULT: OnceLock<Arc<RuleSet>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                #[allow(clippy::expect_used)]
                // Invariant: the shipped file parses (test `the_default_rules_parse`).
                let rules = RuleSet::parse(DEFAULT_RULES).expect("the default fraud rules parse");
                Arc::new(rules)
            })
            .clone()
    }

    /// The file's `version`, or `content-<hash>` when it has none.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The verdict of a score.
    pub fn verdict(&self, score: f64) -> Verdict {
        if score >= self.thresholds.block {
            Verdict::Block
        } else if score >= self.thresholds.review {
            Verdict::Review
        } else {
            Verdict::Allow
        }
    }

    /// Runs every rule over an order's features.
    pub fn evaluate(&self, features: &FeatureValues) -> Outcome {
        let mut out = Outcome::default();
        if let Some((_, weight)) = &self.model {
            out.score += weight * features.get(Feature::ModelScore);
        }
        for rule in &self.rules {
            match rule.node.eval_with_context(features) {
                Ok(Value::Boolean(true)) if rule.shadow => {
                    out.shadow_reasons.push(rule.reason.clone())
                }
                Ok(Value::Boolean(true)) => {
                    out.score += rule.score;
                    out.reasons.push(rule.reason.clone());
                }
                Ok(_) => {}
                Err(_) => out.errors += 1,
            }
        }
        out.verdict = self.verdict(out.score);
        out
    }
}

/// Modification time and length: what tells a changed file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    File(Option<SystemTime>, u64),
    Unreadable,
}

fn stamp(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => Stamp::File(m.modified().ok(), m.len()),
        Err(_) => Stamp::Unreadable,
    }
}

/// A rules file watched for changes: [`RulesFile::check`] re-reads it when its modification time
/// or length changed, or those of the model file it names. (Two edits within the file system's
/// time resolution that keep the length are seen as one.)
#[derive(Debug)]
pub struct RulesFile {
    path: PathBuf,
    /// The model file the rules in use name.
    model_file: Option<PathBuf>,
    /// Stamps of the rules and the model in use.
    current: (Stamp, Option<Stamp>),
    content: u64,
    /// Stamps of the last refused version, reported once.
    refused: Option<(Stamp, Option<Stamp>)>,
}

impl RulesFile {
    /// Reads and parses the file.
    pub fn open(path: &Path) -> Result<(Self, Arc<RuleSet>), RuleError> {
        let before = stamp(path);
        let text = read(path)?;
        let rules = RuleSet::parse_in(&text, path.parent())?;
        let file = RulesFile {
            path: path.to_owned(),
            current: (before, rules.model_file.as_deref().map(stamp)),
            model_file: rules.model_file.clone(),
            content: rules.content,
            refused: None,
        };
        Ok((file, Arc::new(rules)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(None)`: unchanged (or rewritten with the same content, or the same bad file as the
    /// last error). `Ok(Some(new))`: changed and valid. `Err`: changed and invalid; the caller
    /// keeps its rules.
    pub fn check(&mut self) -> Result<Option<Arc<RuleSet>>, RuleError> {
        let now = (stamp(&self.path), self.model_file.as_deref().map(stamp));
        if now == self.current || Some(now) == self.refused {
            return Ok(None);
        }
        let parsed = read(&self.path).and_then(|text| RuleSet::parse_in(&text, self.path.parent()));
        match parsed {
            Ok(rules) => {
                // The new rules may name another model file: watch that one from now on.
                self.model_file = rules.model_file.clone();
                self.current = (now.0, self.model_file.as_deref().map(stamp));
                self.refused = None;
                if rules.content == self.content {
                    return Ok(None);
                }
                self.content = rules.content;
                Ok(Some(Arc::new(rules)))
            }
            Err(e) => {
                self.refused = Some(now);
                Err(e)
            }
        }
    }
}

fn read(path: &Path) -> Result<String, RuleError> {
    std::fs::read_to_string(path).map_err(|e| RuleError {
        line: None,
        message: format!("cannot read rules file {}: {e}", path.display()),
    })
}
