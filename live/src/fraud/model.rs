//! The learned fraud scorer: gradient-boosted decision trees over the [features](super::features),
//! giving each order a fraud probability, the `model_score` feature that rules read.
//!
//! **Why trees.** A fraud pattern is a combination of signals that honest shoppers show one at a
//! time (a new device *and* an expensive basket *and* few product views); trees learn such
//! combinations from labelled orders where a rule writer would need one rule per combination, and
//! a linear model cannot express them. On the simulated storefront with confounders, a model
//! trained on the development run lifts recall at a 1% review budget from 0.46–0.48 (the
//! hand-written rules) to the figures in `BENCHMARKS.md` on seeds and mixes it never saw.
//!
//! **The algorithm** (the one of XGBoost and LightGBM, in its plainest form): start from the log
//! odds of fraud in the training orders; each round fits a tree to the log loss's gradient and
//! Hessian; a split is the feature and cut that most increase `G²/(H+λ)` summed over the two
//! children, with at least [`Params::min_leaf`] orders on each side; a leaf adds
//! `-G/(H+λ) × learning rate` to the order's log odds. Cuts are taken at most [`Params::bins`]
//! quantiles of each feature in the training orders. Written here (about 250 lines) rather than
//! taken from a crate: the Rust boosting crates (`perpetual`, `forust-ml`) bring 9,000–28,000
//! lines and rayon to a build that CI already finds long, and switch on serde_json's
//! `float_roundtrip` for the whole tree, which slows float parsing on the event path.
//!
//! **The file** is JSON ([`Model::to_json`], [`Model::from_json`]): the feature names it reads, in
//! the order its splits index them, the base log odds, and each tree as a list of nodes (a split
//! `{"feature": i, "threshold": t, "left": n, "right": m}`, going left when the value is ≤ the
//! threshold, or a leaf `{"leaf": v}`; node 0 is the root). A file naming a feature this version
//! does not compute, or a node out of range, is refused with the reason.
//!
//! ```
//! use shoplake_live::fraud::features::Feature;
//! use shoplake_live::fraud::model::{Model, Params};
//!
//! // Fraud when both the amount is high and the device is new: a combination.
//! let features = [Feature::Amount, Feature::NewDevice];
//! let x: Vec<Vec<f64>> = (0..400)
//!     .map(|i| vec![(i % 20) as f64 * 50.0, (i % 3 == 0) as u8 as f64])
//!     .collect();
//! let y: Vec<bool> = x.iter().map(|r| r[0] >= 600.0 && r[1] == 1.0).collect();
//! let model = Model::train(&features, &x, &y, &Params::default(), "example");
//! assert!(model.probability(&[800.0, 1.0]) > 0.9);
//! assert!(model.probability(&[800.0, 0.0]) < 0.1);
//! let again = Model::from_json(&model.to_json()).unwrap();
//! assert_eq!(again.probability(&[800.0, 1.0]), model.probability(&[800.0, 1.0]));
//! ```

use serde::{Deserialize, Serialize};

use super::features::{Feature, FeatureValues};

/// The format name written into model files.
pub const FORMAT: &str = "shoplake-gbdt-1";

/// The model shipped with shoplake: trained on the simulator's development run (seed 42, the
/// default confounders, 30,000 sessions, 10% fraud), the run the default rules were written on.
/// A store replaces it with one trained on its own orders (`shoplake fraud train`).
pub const DEFAULT_MODEL: &str = include_str!("default_model.json");

/// How a model is trained.
#[derive(Clone, Debug)]
pub struct Params {
    /// Boosting rounds (trees).
    pub rounds: usize,
    pub learning_rate: f64,
    /// Depth of each tree (at most 2^depth leaves).
    pub max_depth: usize,
    /// Fewest training orders on either side of a split.
    pub min_leaf: usize,
    /// L2 regularisation of the leaf values.
    pub lambda: f64,
    /// Most cut points per feature.
    pub bins: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rounds: 200,
            learning_rate: 0.05,
            max_depth: 4,
            min_leaf: 20,
            lambda: 1.0,
            bins: 64,
        }
    }
}

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("fraud model is not valid JSON of the {FORMAT} format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("fraud model has format {0:?}; this version reads {FORMAT:?}")]
    Format(String),
    #[error("fraud model reads feature {0:?}, which this version does not compute")]
    UnknownFeature(String),
    #[error("fraud model reads feature model_score, its own output")]
    OwnOutput,
    #[error("fraud model base {0:e} is beyond ±{MAX_LOG_ODDS} log odds")]
    Base(f64),
    #[error("fraud model tree {tree}: {message}")]
    Tree { tree: usize, message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Node {
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    Leaf {
        leaf: f64,
    },
}

/// What a model file holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format: String,
    /// Recorded on each decision with the rules' version.
    version: String,
    /// Orders and fraud orders it was trained on.
    trained_orders: usize,
    trained_fraud: usize,
    features: Vec<String>,
    base: f64,
    trees: Vec<Vec<Node>>,
}

/// A trained model, ready to score.
#[derive(Clone, Debug)]
pub struct Model {
    version: String,
    trained_orders: usize,
    trained_fraud: usize,
    features: Vec<Feature>,
    base: f64,
    trees: Vec<Vec<Node>>,
}

/// The features a model is trained on: every feature but its own output.
pub fn inputs() -> Vec<Feature> {
    Feature::ALL
        .iter()
        .copied()
        .filter(|f| *f != Feature::ModelScore)
        .collect()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Model {
    /// Trains on rows of `x` (values of `features`, in that order) labelled `y` (true: fraud).
    /// `version` names the model in decisions.
    pub fn train(
        features: &[Feature],
        x: &[Vec<f64>],
        y: &[bool],
        params: &Params,
        version: &str,
    ) -> Model {
        let n = x.len().min(y.len());
        let width = features.len();
        let fraud = y[..n].iter().filter(|v| **v).count();
        // Log odds of fraud, kept away from infinity when one class is missing.
        let share = (fraud as f64 + 0.5) / (n as f64 + 1.0);
        let base = (share / (1.0 - share)).ln();
        let cuts: Vec<Vec<f64>> = (0..width)
            .map(|f| cut_points(x[..n].iter().map(|r| r[f]), params.bins))
            .collect();
        // Bin of each value: the first cut it does not exceed (cuts.len() when above them all).
        let binned: Vec<Vec<u16>> = (0..width)
            .map(|f| {
                x[..n]
                    .iter()
                    .map(|r| cuts[f].partition_point(|c| *c < clean(r[f])) as u16)
                    .collect()
            })
            .collect();
        let mut grower = Grower {
            cuts: &cuts,
            binned: &binned,
            params,
            grad: vec![0.0; n],
            hess: vec![0.0; n],
            raw: vec![base; n],
        };
        let mut trees = Vec::with_capacity(params.rounds);
        for _ in 0..params.rounds {
            for (i, &fraud) in y[..n].iter().enumerate() {
                let p = sigmoid(grower.raw[i]);
                grower.grad[i] = p - f64::from(u8::from(fraud));
                grower.hess[i] = (p * (1.0 - p)).max(1e-12);
            }
            let mut rows: Vec<u32> = (0..n as u32).collect();
            let mut nodes = Vec::new();
            grower.grow(&mut rows, 0, &mut nodes);
            if matches!(nodes.as_slice(), [Node::Leaf { leaf }] if leaf.abs() < 1e-12) {
                break;
            }
            trees.push(nodes);
        }
        Model {
            version: version.to_owned(),
            trained_orders: n,
            trained_fraud: fraud,
            features: features.to_vec(),
            base,
            trees,
        }
    }

    /// The fraud probability of one order, from the values of [`Model::features`] in order.
    pub fn probability(&self, values: &[f64]) -> f64 {
        let mut z = self.base;
        for tree in &self.trees {
            z += leaf_of(tree, |f| values.get(f).copied().unwrap_or(0.0));
        }
        sigmoid(z)
    }

    /// The fraud probability of an order from its computed features.
    pub fn score(&self, values: &FeatureValues) -> f64 {
        let mut z = self.base;
        for tree in &self.trees {
            z += leaf_of(tree, |f| {
                self.features.get(f).map_or(0.0, |&feat| values.get(feat))
            });
        }
        sigmoid(z)
    }

    /// The features the model reads, in the order [`Model::probability`] takes them.
    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Trees in the model.
    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// Orders and fraud orders it was trained on.
    pub fn trained_on(&self) -> (usize, usize) {
        (self.trained_orders, self.trained_fraud)
    }

    /// The model as its JSON file.
    pub fn to_json(&self) -> String {
        let file = ModelFile {
            format: FORMAT.to_owned(),
            version: self.version.clone(),
            trained_orders: self.trained_orders,
            trained_fraud: self.trained_fraud,
            features: self.features.iter().map(|f| f.name().to_owned()).collect(),
            base: self.base,
            trees: self.trees.clone(),
        };
        // Plain structs of strings and finite numbers: serialising cannot fail.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads and checks a model file.
    pub fn from_json(text: &str) -> Result<Model, ModelError> {
        let file: ModelFile = serde_json::from_str(text)?;
        if file.format != FORMAT {
            return Err(ModelError::Format(file.format));
        }
        let features = file
            .features
            .iter()
            .map(|name| match Feature::from_name(name) {
                Some(Feature::ModelScore) => Err(ModelError::OwnOutput),
                Some(f) => Ok(f),
                None => Err(ModelError::UnknownFeature(name.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !bounded(file.base) {
            return Err(ModelError::Base(file.base));
        }
        for (t, tree) in file.trees.iter().enumerate() {
            check_tree(tree, features.len())
                .map_err(|message| ModelError::Tree { tree: t, message })?;
        }
        Ok(Model {
            version: file.version,
            trained_orders: file.trained_orders,
            trained_fraud: file.trained_fraud,
            features,
            base: file.base,
            trees: file.trees,
        })
    }

    /// The shipped model ([`DEFAULT_MODEL`]).
    pub fn default_model() -> std::sync::Arc<Model> {
        static DEFAULT: std::sync::OnceLock<std::sync::Arc<Model>> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                #[allow(clippy::expect_used)]
                // Invariant: the shipped file reads (test `the_default_model_reads`).
                let model = Model::from_json(DEFAULT_MODEL).expect("the default fraud model reads");
                std::sync::Arc::new(model)
            })
            .clone()
    }
}

/// Largest leaf value and base a model file may hold (log odds): no sum of them overflows.
const MAX_LOG_ODDS: f64 = 100.0;

/// Within ±[`MAX_LOG_ODDS`] (NaN is not).
fn bounded(v: f64) -> bool {
    (-MAX_LOG_ODDS..=MAX_LOG_ODDS).contains(&v)
}

/// Largest leaf value training gives.
const MAX_STEP: f64 = 10.0;

/// A tree's nodes must point only to later nodes (so a walk from the root ends), with features in
/// range, finite thresholds and bounded leaves.
fn check_tree(tree: &[Node], width: usize) -> Result<(), String> {
    if tree.is_empty() {
        return Err("has no nodes".to_owned());
    }
    for (i, node) in tree.iter().enumerate() {
        match *node {
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                if feature >= width {
                    return Err(format!("node {i} splits on feature {feature} of {width}"));
                }
                if !threshold.is_finite() {
                    return Err(format!("node {i} has a threshold that is not a number"));
                }
                if left <= i || right <= i || left >= tree.len() || right >= tree.len() {
                    return Err(format!(
                        "node {i} points to nodes {left} and {right}, not after it among {}",
                        tree.len()
                    ));
                }
            }
            Node::Leaf { leaf } if !bounded(leaf) => {
                return Err(format!(
                    "node {i} has a leaf value of {leaf:e}, beyond ±{MAX_LOG_ODDS} log odds"
                ));
            }
            Node::Leaf { .. } => {}
        }
    }
    Ok(())
}

/// The leaf value an order reaches (`value(f)`: the order's value of the model's feature `f`).
fn leaf_of(tree: &[Node], value: impl Fn(usize) -> f64) -> f64 {
    let mut i = 0;
    // Checked trees only go forward, so this ends.
    while let Some(node) = tree.get(i) {
        match *node {
            Node::Leaf { leaf } => return leaf,
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => {
                i = if clean(value(feature)) <= threshold {
                    left
                } else {
                    right
                }
            }
        }
    }
    0.0
}

/// A value as the trees see it: NaN (which no feature should give) as 0, the same in training and
/// scoring.
fn clean(v: f64) -> f64 {
    if v.is_nan() { 0.0 } else { v }
}

/// Up to `bins` cut points: between every two distinct values when there are few, else after the
/// values at evenly spaced quantiles. Each cut is the midpoint between a value and the next one
/// seen, so that a value that comes back a unit in the last place off (a float through JSON, a
/// rate applied in another order) still falls on the side it was trained on.
fn cut_points(values: impl Iterator<Item = f64>, bins: usize) -> Vec<f64> {
    let mut v: Vec<f64> = values.map(clean).filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let mut distinct = v.clone();
    distinct.dedup();
    let mut at: Vec<f64> = if distinct.len() <= bins + 1 {
        distinct.clone()
    } else {
        (1..=bins)
            .map(|i| v[(i * (v.len() - 1)) / (bins + 1)])
            .collect()
    };
    at.dedup();
    at.into_iter()
        .filter_map(|c| {
            // The largest value splits nothing off: it has no next value.
            let next = distinct.get(distinct.partition_point(|d| *d <= c))?;
            Some(c + (next - c) / 2.0)
        })
        .collect()
}

struct Grower<'a> {
    cuts: &'a [Vec<f64>],
    binned: &'a [Vec<u16>],
    params: &'a Params,
    grad: Vec<f64>,
    hess: Vec<f64>,
    /// Each training order's log odds so far.
    raw: Vec<f64>,
}

struct Split {
    gain: f64,
    feature: usize,
    bin: usize,
}

impl Grower<'_> {
    /// Grows the subtree of `rows` into `nodes`; returns its root's index. Leaves add their value
    /// to the rows' log odds.
    fn grow(&mut self, rows: &mut [u32], depth: usize, nodes: &mut Vec<Node>) -> usize {
        let at = nodes.len();
        nodes.push(Node::Leaf { leaf: 0.0 });
        let (g, h) = rows.iter().fold((0.0, 0.0), |(g, h), &r| {
            (g + self.grad[r as usize], h + self.hess[r as usize])
        });
        let split = if depth < self.params.max_depth && rows.len() >= 2 * self.params.min_leaf {
            self.best_split(rows, g, h)
        } else {
            None
        };
        let Some(split) = split else {
            // Bounded as XGBoost's max_delta_step bounds it: a leaf of near-certain orders
            // (Hessians near 0) must not jump to infinity.
            let leaf = (-g / (h + self.params.lambda) * self.params.learning_rate)
                .clamp(-MAX_STEP, MAX_STEP);
            for &r in rows.iter() {
                self.raw[r as usize] += leaf;
            }
            nodes[at] = Node::Leaf { leaf };
            return at;
        };
        let column = &self.binned[split.feature];
        let mut left = 0;
        for i in 0..rows.len() {
            if usize::from(column[rows[i] as usize]) <= split.bin {
                rows.swap(i, left);
                left += 1;
            }
        }
        let (l, r) = rows.split_at_mut(left);
        let left = self.grow(l, depth + 1, nodes);
        let right = self.grow(r, depth + 1, nodes);
        nodes[at] = Node::Split {
            feature: split.feature,
            threshold: self.cuts[split.feature][split.bin],
            left,
            right,
        };
        at
    }

    fn best_split(&self, rows: &[u32], g: f64, h: f64) -> Option<Split> {
        let lambda = self.params.lambda;
        let parent = g * g / (h + lambda);
        let mut best: Option<Split> = None;
        for (feature, cuts) in self.cuts.iter().enumerate() {
            if cuts.is_empty() {
                continue;
            }
            let column = &self.binned[feature];
            let mut hist = vec![(0.0f64, 0.0f64, 0usize); cuts.len() + 1];
            for &r in rows {
                let b = &mut hist[usize::from(column[r as usize])];
                b.0 += self.grad[r as usize];
                b.1 += self.hess[r as usize];
                b.2 += 1;
            }
            let (mut gl, mut hl, mut nl) = (0.0, 0.0, 0usize);
            for (bin, &(bg, bh, bn)) in hist.iter().enumerate().take(cuts.len()) {
                gl += bg;
                hl += bh;
                nl += bn;
                let nr = rows.len() - nl;
                if nl < self.params.min_leaf || nr < self.params.min_leaf {
                    continue;
                }
                let (gr, hr) = (g - gl, h - hl);
                let gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
                if gain > 1e-9 && best.as_ref().is_none_or(|b| gain > b.gain) {
                    best = Some(Split { gain, feature, bin });
                }
            }
        }
        best
    }
}
