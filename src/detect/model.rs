//! The multivariate per-agent model: a two-component Gaussian mixture
//! (linfa-clustering) over the agent's standardised window features, for
//! combinations that no single rule catches (a rate, a sweep, a volume
//! and a failure ratio each within bounds, together unlike the agent).
//!
//! Each agent keeps a reservoir of [`RESERVOIR`] feature vectors of events
//! that taught its baseline; the model is first fitted once the reservoir
//! is full, then again every [`RETRAIN_EVERY`] such events
//! (deterministically: linfa's fixed seed, on one thread), and keeps only
//! its parameters, in `f32`. An event scores by its negative
//! log-likelihood against the worst of the training samples.

use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// Features per vector.
pub const DIMS: usize = 5;
/// Names of the features, for explanations.
pub const FEATURES: [&str; DIMS] = [
    "ln(1+events per minute)",
    "ln(1+distinct resources in 10 min)",
    "ln(1+bytes and records)",
    "failed share of last 20",
    "sensitivity (0-3)",
];
/// Training vectors kept per agent.
pub const RESERVOIR: usize = 64;
/// Taught events between fits.
pub const RETRAIN_EVERY: u32 = 1024;
const COMPONENTS: usize = 2;
/// Entries of a lower triangle.
const TRI: usize = DIMS * (DIMS + 1) / 2;

/// One event's features.
pub type Vector = [f32; DIMS];

/// Steps per unit of each feature when kept in the reservoir (one byte
/// each): logs to 0.1, shares to 0.005, sensitivity exactly.
const STEPS: [f32; DIMS] = [10.0, 10.0, 10.0, 200.0, 50.0];

fn quantise(x: &Vector) -> [u8; DIMS] {
    std::array::from_fn(|d| (x[d] * STEPS[d]).round().clamp(0.0, 255.0) as u8)
}

fn restore(q: &[u8; DIMS]) -> Vector {
    std::array::from_fn(|d| f32::from(q[d]) / STEPS[d])
}

/// A fitted mixture: per component, its weight, mean and the Cholesky
/// factor of its precision (lower triangle), in standardised units.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Fitted {
    centre: Vec<f32>,
    scale: Vec<f32>,
    log_weights: Vec<f32>,
    means: Vec<f32>,
    chol: Vec<f32>,
    log_dets: Vec<f32>,
    /// The worst negative log-likelihood among the training vectors.
    pub worst: f32,
}

/// An agent's model state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentModel {
    reservoir: Vec<[u8; DIMS]>,
    seen: u32,
    since_fit: u32,
    /// The latest fit, once there is one.
    pub fitted: Option<Fitted>,
}

/// How unusual a vector is to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Surprise {
    /// Negative log-likelihood minus the worst training sample's.
    pub excess: f32,
    /// Standardised distance of each feature from the nearest component.
    pub z: Vector,
    /// That component's mean, in the features' own units.
    pub expected: Vector,
}

impl AgentModel {
    /// Takes a taught event's features; refits when due. `jitter` (from
    /// the agent's id) spreads the fits of agents that learn in step.
    pub fn learn(&mut self, x: Vector, jitter: u32) {
        self.seen = self.seen.saturating_add(1);
        let q = quantise(&x);
        if self.reservoir.len() < RESERVOIR {
            if self.reservoir.capacity() == 0 {
                self.reservoir.reserve_exact(RESERVOIR);
            }
            self.reservoir.push(q);
        } else {
            // Deterministic reservoir: replace in turn, keeping recent
            // behaviour without randomness.
            let i = (self.seen as usize) % RESERVOIR;
            self.reservoir[i] = q;
        }
        self.since_fit += 1;
        let due = match self.fitted {
            None => {
                self.reservoir.len() == RESERVOIR
                    && self.since_fit >= RESERVOIR as u32 + jitter % RESERVOIR as u32
            }
            Some(_) => self.since_fit >= RETRAIN_EVERY + jitter % RETRAIN_EVERY,
        };
        if due {
            self.since_fit = 0;
            let samples: Vec<Vector> = self.reservoir.iter().map(restore).collect();
            self.fitted = fit(&samples);
        }
    }

    /// How far `x` is beyond what the model was trained on.
    pub fn surprise(&self, x: &Vector) -> Option<Surprise> {
        let f = self.fitted.as_ref()?;
        let (nll, k) = f.nll(x);
        let mut z = [0f32; DIMS];
        let mut expected = [0f32; DIMS];
        for d in 0..DIMS {
            let m = f.means[k * DIMS + d];
            z[d] = (x[d] - f.centre[d]) / f.scale[d] - m;
            expected[d] = m * f.scale[d] + f.centre[d];
        }
        Some(Surprise {
            excess: nll - f.worst,
            z,
            expected,
        })
    }

    /// Bytes it holds.
    pub fn memory_bytes(&self) -> usize {
        let fitted = self.fitted.as_ref().map_or(0, |f| {
            4 * (f.centre.capacity()
                + f.scale.capacity()
                + f.log_weights.capacity()
                + f.means.capacity()
                + f.chol.capacity()
                + f.log_dets.capacity())
                + std::mem::size_of::<Fitted>()
        });
        self.reservoir.capacity() * DIMS + fitted
    }
}

/// The thread mixtures are fitted on. linfa's k-means start runs rayon
/// parallel loops: called from any other thread, each loop is handed to
/// rayon's global pool and waited for (a profile of the ingest bench spent
/// 2% of the server's CPU on those hand-offs, for fits of 64 samples), and
/// its random candidates are seeded per piece of work the pool splits, so
/// the model depended on scheduling. Inside a pool of one thread the loops
/// run inline and split the same way every time.
fn fit_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "vigil-fit".into())
            .build()
            .ok()
    })
    .as_ref()
}

fn fit(samples: &[Vector]) -> Option<Fitted> {
    match fit_pool() {
        Some(pool) => pool.install(|| fit_here(samples)),
        None => fit_here(samples),
    }
}

fn fit_here(samples: &[Vector]) -> Option<Fitted> {
    let n = samples.len() as f32;
    let mut centre = vec![0f32; DIMS];
    let mut scale = vec![0f32; DIMS];
    for d in 0..DIMS {
        centre[d] = samples.iter().map(|s| s[d]).sum::<f32>() / n;
        let var = samples
            .iter()
            .map(|s| (s[d] - centre[d]).powi(2))
            .sum::<f32>()
            / n;
        scale[d] = var.sqrt().max(0.5);
    }
    let data = Array2::from_shape_fn((samples.len(), DIMS), |(i, d)| {
        f64::from((samples[i][d] - centre[d]) / scale[d])
    });
    let gmm = GaussianMixtureModel::params(COMPONENTS)
        .reg_covariance(0.3)
        .max_n_iterations(50)
        .fit(&DatasetBase::from(data))
        .ok()?;
    let mut f = Fitted {
        centre,
        scale,
        ..Fitted::default()
    };
    for k in 0..COMPONENTS {
        f.log_weights.push(gmm.weights()[k].max(1e-9).ln() as f32);
        for d in 0..DIMS {
            f.means.push(gmm.means()[[k, d]] as f32);
        }
        let (chol, log_det) = cholesky(&gmm.precisions().index_axis(ndarray::Axis(0), k))?;
        f.chol.extend(chol);
        f.log_dets.push(log_det);
    }
    f.worst = samples.iter().map(|s| f.nll(s).0).fold(f32::MIN, f32::max);
    Some(f)
}

/// Lower Cholesky factor of a precision matrix, and log det of that
/// matrix (so log det of the covariance is its negative).
fn cholesky(p: &ndarray::ArrayView2<f64>) -> Option<(Vec<f32>, f32)> {
    let mut l = [[0f64; DIMS]; DIMS];
    for i in 0..DIMS {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let v = p[[i, i]] - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i][j] = v.sqrt();
            } else {
                l[i][j] = (p[[i, j]] - s) / l[j][j];
            }
        }
    }
    let log_det = 2.0 * (0..DIMS).map(|i| l[i][i].ln()).sum::<f64>();
    let flat = (0..DIMS)
        .flat_map(|i| (0..=i).map(move |j| (i, j)))
        .map(|(i, j)| l[i][j] as f32)
        .collect();
    Some((flat, log_det as f32))
}

impl Fitted {
    /// Negative log-likelihood of `x` and its most likely component.
    fn nll(&self, x: &Vector) -> (f32, usize) {
        let mut terms = [0f32; COMPONENTS];
        for (k, term) in terms.iter_mut().enumerate() {
            // Mahalanobis distance with the precision P = L L^T:
            // (x - m)^T P (x - m) = |L^T (x - m)|^2.
            let diff: Vector = std::array::from_fn(|i| {
                (x[i] - self.centre[i]) / self.scale[i] - self.means[k * DIMS + i]
            });
            let mut q = 0f32;
            for j in 0..DIMS {
                let v: f32 = (j..DIMS)
                    .map(|i| self.chol[k * TRI + i * (i + 1) / 2 + j] * diff[i])
                    .sum();
                q += v * v;
            }
            let log_norm =
                0.5 * self.log_dets[k] - 0.5 * DIMS as f32 * (2.0 * std::f32::consts::PI).ln();
            *term = self.log_weights[k] + log_norm - 0.5 * q;
        }
        let best = (0..COMPONENTS)
            .max_by(|a, b| terms[*a].total_cmp(&terms[*b]))
            .unwrap_or(0);
        let max = terms[best];
        let lse = max + terms.iter().map(|t| (t - max).exp()).sum::<f32>().ln();
        (-lse, best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_combination_unlike_the_training_is_surprising() {
        let mut m = AgentModel::default();
        // Two habits: quiet reads, and busier small writes.
        for i in 0..(3 * RESERVOIR as u32) {
            let j = (i % 7) as f32 / 7.0;
            let x = if i % 2 == 0 {
                [0.7 + 0.1 * j, 1.0 + 0.1 * j, 0.0, 0.0, 0.0]
            } else {
                [1.6 + 0.1 * j, 0.7, 3.0 + 0.2 * j, 0.05, 1.0]
            };
            m.learn(x, 0);
        }
        assert!(m.fitted.is_some());
        let usual = m.surprise(&[0.75, 1.05, 0.0, 0.0, 0.0]).unwrap();
        assert!(usual.excess < 0.0, "{usual:?}");
        // Each value seen before, but not together: a quiet read moving data.
        let odd = m.surprise(&[0.75, 1.05, 3.1, 0.05, 1.0]).unwrap();
        assert!(odd.excess > 5.0, "{odd:?}");
        assert!(m.memory_bytes() < 1200, "{}", m.memory_bytes());
    }
}
