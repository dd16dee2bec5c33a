//! A logistic regression over the fraud features: the learned baseline of the evaluation
//! ([`super::quality`]), trained on earlier orders and scored on later ones.
//!
//! Each feature goes through `sign(x)·ln(1 + |x|)` (counts and amounts are heavy-tailed), is
//! standardised with the training set's mean and deviation, and the model is fitted by full-batch
//! gradient descent on the log loss with L2 regularisation and balanced class weights (fraud is
//! rare: unweighted, the model learns to say "honest"). Small and exact enough for a few thousand
//! orders and ~60 features; it is a baseline, not the production scorer.
//!
//! ```
//! use shoplake_live::fraud::logistic::Logistic;
//!
//! // Fraud when the first feature is large.
//! let x: Vec<Vec<f64>> = (0..200).map(|i| vec![(i % 10) as f64, (i % 3) as f64]).collect();
//! let y: Vec<bool> = x.iter().map(|r| r[0] >= 8.0).collect();
//! let model = Logistic::train(&x, &y);
//! assert!(model.score(&[9.0, 1.0]) > 0.9);
//! assert!(model.score(&[1.0, 1.0]) < 0.1);
//! ```

/// A fitted model.
#[derive(Clone, Debug)]
pub struct Logistic {
    mean: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    bias: f64,
}

const EPOCHS: usize = 600;
const LEARNING_RATE: f64 = 0.5;
const L2: f64 = 1e-3;

fn squash(v: f64) -> f64 {
    v.signum() * v.abs().ln_1p()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Logistic {
    /// Fits `y` (true: fraud) from the rows of `x` (all of one width).
    pub fn train(x: &[Vec<f64>], y: &[bool]) -> Logistic {
        let width = x.first().map_or(0, Vec::len);
        let n = x.len().max(1) as f64;
        let rows: Vec<Vec<f64>> = x
            .iter()
            .map(|r| r.iter().copied().map(squash).collect())
            .collect();
        let mut mean = vec![0.0; width];
        for r in &rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n;
            }
        }
        let mut scale = vec![0.0; width];
        for r in &rows {
            for ((s, v), m) in scale.iter_mut().zip(r).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        // A constant feature keeps scale 1: it standardises to 0 and learns nothing.
        let scale: Vec<f64> = scale
            .into_iter()
            .map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 })
            .collect();
        let rows: Vec<Vec<f64>> = rows
            .into_iter()
            .map(|r| {
                r.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (v - m) / s)
                    .collect()
            })
            .collect();
        let positives = y.iter().filter(|&&f| f).count().max(1) as f64;
        let negatives = (y.len() as f64 - positives).max(1.0);
        let class_weight = |fraud: bool| {
            if fraud {
                n / (2.0 * positives)
            } else {
                n / (2.0 * negatives)
            }
        };
        let mut model = Logistic {
            mean,
            scale,
            weights: vec![0.0; width],
            bias: 0.0,
        };
        let mut grad = vec![0.0; width];
        for _ in 0..EPOCHS {
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut grad_bias = 0.0;
            for (r, &fraud) in rows.iter().zip(y) {
                let p = sigmoid(model.bias + dot(&model.weights, r));
                let err = (p - f64::from(u8::from(fraud))) * class_weight(fraud) / n;
                grad_bias += err;
                for (g, v) in grad.iter_mut().zip(r) {
                    *g += err * v;
                }
            }
            for (w, g) in model.weights.iter_mut().zip(&grad) {
                *w -= LEARNING_RATE * (g + L2 * *w);
            }
            model.bias -= LEARNING_RATE * grad_bias;
        }
        model
    }

    /// The probability the model gives a row (of the training rows' width) of being fraud.
    pub fn score(&self, row: &[f64]) -> f64 {
        let z: f64 = row
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((v, m), s), w)| w * (squash(*v) - m) / s)
            .sum();
        sigmoid(self.bias + z)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
