//! Training on CPU with candle: an MLP from a small declarative spec, SGD (momentum, weight
//! decay) or Adam/AdamW, cross-entropy or MSE, a step or cosine learning-rate schedule, early
//! stopping on validation loss keeping the best weights. Every random choice (initial weights,
//! batch order, dropout masks) comes from the run's seed, so a run is reproducible.

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use maas_core::{Error, Result};
use rand::distributions::{Distribution, Uniform};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dataset::{Problem, Profile, Table};
use crate::metrics;
use crate::prep::{self, Pipeline, PrepSpec};

/// The network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Widths of the hidden layers.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// `relu` (default) or `tanh`.
    #[serde(default = "default_activation")]
    pub activation: String,
    /// Dropout after each hidden layer, during training.
    #[serde(default)]
    pub dropout: f32,
}

fn default_hidden() -> Vec<usize> {
    vec![64]
}
fn default_activation() -> String {
    "relu".to_owned()
}

/// The optimiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// `sgd`, `adam` or `adamw` (default).
    #[serde(default = "default_optimizer")]
    pub kind: String,
    /// Learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// SGD momentum.
    #[serde(default)]
    pub momentum: f64,
    /// Weight decay (decoupled for AdamW, L2 for SGD and Adam).
    #[serde(default)]
    pub weight_decay: f64,
}

fn default_optimizer() -> String {
    "adamw".to_owned()
}
fn default_lr() -> f64 {
    0.01
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            kind: default_optimizer(),
            lr: default_lr(),
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }
}

/// How the learning rate changes over epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The same every epoch.
    #[default]
    Constant,
    /// Multiplied by `gamma` every `step_size` epochs.
    Step {
        /// Epochs between drops.
        step_size: usize,
        /// Factor.
        gamma: f64,
    },
    /// Half a cosine from the initial rate down to 0 over the run.
    Cosine,
}

/// Everything a training run is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The network.
    #[serde(default = "default_mlp")]
    pub mlp: MlpSpec,
    /// The optimiser.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// `cross_entropy` or `mse`; by default, what the problem needs.
    #[serde(default)]
    pub loss: Option<String>,
    /// Most passes over the training rows.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Rows per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Learning-rate schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// Stop after this many epochs without a better validation loss (None: run every epoch).
    #[serde(default)]
    pub patience: Option<usize>,
    /// Cleaning, split and feature transform.
    #[serde(default)]
    pub prep: PrepSpec,
}

fn default_mlp() -> MlpSpec {
    MlpSpec {
        hidden: default_hidden(),
        activation: default_activation(),
        dropout: 0.0,
    }
}
fn default_epochs() -> usize {
    100
}
fn default_batch() -> usize {
    32
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            mlp: default_mlp(),
            optimizer: OptimizerSpec::default(),
            loss: None,
            epochs: default_epochs(),
            batch_size: default_batch(),
            schedule: Schedule::Constant,
            patience: None,
            prep: PrepSpec::default(),
        }
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::invalid(m.into())
}

fn candle_err(e: candle_core::Error) -> Error {
    Error::internal(format!("training failed: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Relu,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    CrossEntropy,
    Mse,
}

impl TrainSpec {
    fn check(&self, problem: Problem) -> Result<(Activation, Loss)> {
        let activation = match self.mlp.activation.as_str() {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            other => {
                return Err(bad(format!(
                    "mlp.activation must be relu or tanh, got '{other}'"
                )))
            }
        };
        let loss =
            match (self.loss.as_deref(), problem) {
                (None | Some("cross_entropy"), Problem::Classification) => Loss::CrossEntropy,
                (None | Some("mse"), Problem::Regression) => Loss::Mse,
                (Some("mse"), Problem::Classification) => {
                    return Err(bad(
                        "loss mse is for regression; this dataset's target is a class label",
                    ))
                }
                (Some("cross_entropy"), Problem::Regression) => return Err(bad(
                    "loss cross_entropy is for classification; this dataset's target is a number",
                )),
                (Some(other), _) => {
                    return Err(bad(format!(
                        "loss must be cross_entropy or mse, got '{other}'"
                    )))
                }
            };
        if !matches!(self.optimizer.kind.as_str(), "sgd" | "adam" | "adamw") {
            return Err(bad(format!(
                "optimizer.kind must be sgd, adam or adamw, got '{}'",
                self.optimizer.kind
            )));
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return Err(bad(format!(
                "optimizer.lr must be a positive number, got {}",
                self.optimizer.lr
            )));
        }
        if !(0.0..1.0).contains(&self.mlp.dropout) {
            return Err(bad(format!(
                "mlp.dropout must be in [0, 1), got {}",
                self.mlp.dropout
            )));
        }
        if self.epochs == 0 || self.batch_size == 0 || self.mlp.hidden.contains(&0) {
            return Err(bad(
                "epochs, batch_size and every hidden width must be positive",
            ));
        }
        if let Schedule::Step { step_size: 0, .. } = self.schedule {
            return Err(bad("schedule.step_size must be positive"));
        }
        Ok((activation, loss))
    }

    fn lr_at(&self, epoch: usize) -> f64 {
        let base = self.optimizer.lr;
        match self.schedule {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => base * gamma.powi((epoch / step_size) as i32),
            Schedule::Cosine => {
                let t = epoch as f64 / self.epochs.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Trained weights of one linear layer, row-major `[out, in]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Inputs.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// `outputs × inputs` weights.
    pub weight: Vec<f32>,
    /// `outputs` biases.
    pub bias: Vec<f32>,
}

/// A trained MLP: layers and activation, enough to run it anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Linear layers in order; the activation follows every one but the last.
    pub layers: Vec<Layer>,
    /// `relu` or `tanh`.
    pub activation: String,
}

struct Mlp {
    layers: Vec<(Var, Var)>,
    activation: Activation,
}

impl Mlp {
    fn new(sizes: &[usize], activation: Activation, rng: &mut rand::rngs::StdRng) -> Result<Mlp> {
        let dev = Device::Cpu;
        let mut layers = vec![];
        for pair in sizes.windows(2) {
            let (inputs, outputs) = (pair[0], pair[1]);
            // PyTorch's nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)) for weights and biases.
            let bound = 1.0 / (inputs as f32).sqrt();
            let dist = Uniform::new_inclusive(-bound, bound);
            let w: Vec<f32> = (0..inputs * outputs).map(|_| dist.sample(rng)).collect();
            let b: Vec<f32> = (0..outputs).map(|_| dist.sample(rng)).collect();
            let w = Var::from_tensor(
                &Tensor::from_vec(w, (outputs, inputs), &dev).map_err(candle_err)?,
            )
            .map_err(candle_err)?;
            let b = Var::from_tensor(&Tensor::from_vec(b, outputs, &dev).map_err(candle_err)?)
                .map_err(candle_err)?;
            layers.push((w, b));
        }
        Ok(Mlp { layers, activation })
    }

    fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// Logits (or values). With `dropout`, masks come from `rng`.
    fn forward(
        &self,
        x: &Tensor,
        dropout: Option<(f32, &mut rand::rngs::StdRng)>,
    ) -> candle_core::Result<Tensor> {
        let mut dropout = dropout;
        let mut h = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&w.t()?)?.broadcast_add(b)?;
            if i < last {
                h = match self.activation {
                    Activation::Relu => h.relu()?,
                    Activation::Tanh => h.tanh()?,
                };
                if let Some((p, rng)) = dropout.as_mut() {
                    if *p > 0.0 {
                        let keep = 1.0 - *p;
                        let n = h.elem_count();
                        let mask: Vec<f32> = (0..n)
                            .map(|_| {
                                if rng.gen::<f32>() < keep {
                                    1.0 / keep
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        h = h.mul(&Tensor::from_vec(mask, h.shape(), h.device())?)?;
                    }
                }
            }
        }
        Ok(h)
    }

    fn network(&self) -> Result<Network> {
        let layers = self
            .layers
            .iter()
            .map(|(w, b)| {
                let (outputs, inputs) = w.dims2().map_err(candle_err)?;
                Ok(Layer {
                    inputs,
                    outputs,
                    weight: w
                        .flatten_all()
                        .and_then(|t| t.to_vec1())
                        .map_err(candle_err)?,
                    bias: b.to_vec1().map_err(candle_err)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Network {
            layers,
            activation: match self.activation {
                Activation::Relu => "relu",
                Activation::Tanh => "tanh",
            }
            .to_owned(),
        })
    }
}

/// SGD with momentum and L2 weight decay, as PyTorch's `SGD` (candle-nn's has no momentum).
struct Sgd {
    vars: Vec<Var>,
    velocity: Vec<Option<Tensor>>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        for (var, v) in self.vars.iter().zip(self.velocity.iter_mut()) {
            let Some(g) = grads.get(var) else { continue };
            let mut g = g.clone();
            if self.weight_decay != 0.0 {
                g = (g + (var.as_tensor() * self.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                g = match v.take() {
                    Some(prev) => ((prev * self.momentum)? + g)?,
                    None => g,
                };
                *v = Some(g.clone());
            }
            var.set(&(var.as_tensor() - (g * self.lr)?)?)?;
        }
        Ok(())
    }
}

enum Opt {
    Sgd(Sgd),
    AdamW(candle_nn::AdamW),
}

impl Opt {
    fn new(spec: &OptimizerSpec, vars: Vec<Var>) -> Result<Opt> {
        Ok(match spec.kind.as_str() {
            "sgd" => Opt::Sgd(Sgd {
                velocity: vec![None; vars.len()],
                vars,
                lr: spec.lr,
                momentum: spec.momentum,
                weight_decay: spec.weight_decay,
            }),
            // Adam's L2 decay and AdamW's decoupled decay differ; candle-nn implements the
            // decoupled form, which is what both names get here when weight_decay is set.
            _ => Opt::AdamW(
                candle_nn::AdamW::new(
                    vars,
                    candle_nn::ParamsAdamW {
                        lr: spec.lr,
                        weight_decay: spec.weight_decay,
                        ..Default::default()
                    },
                )
                .map_err(candle_err)?,
            ),
        })
    }

    fn set_lr(&mut self, lr: f64) {
        match self {
            Opt::Sgd(s) => s.lr = lr,
            Opt::AdamW(a) => a.set_learning_rate(lr),
        }
    }

    fn step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        match self {
            Opt::Sgd(s) => s.step(&grads),
            Opt::AdamW(a) => a.step(&grads),
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochStats {
    /// From 1.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss (NaN-free; equal to the train loss when there is no validation split).
    pub val_loss: f64,
    /// Validation accuracy (classification) or R² (regression).
    pub val_score: f64,
}

/// What a finished run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The fitted transform.
    pub pipeline: Pipeline,
    /// The best network (lowest validation loss).
    pub network: Network,
    /// Per-epoch figures.
    pub history: Vec<EpochStats>,
    /// Epoch whose weights were kept.
    pub best_epoch: usize,
    /// Metrics on the test split.
    pub test_metrics: serde_json::Value,
    /// Rows dropped before splitting.
    pub cleaned: prep::Cleaned,
    /// Rows in each split.
    pub split_sizes: [usize; 3],
}

fn tensor(x: &[f32], rows: usize, width: usize) -> Result<Tensor> {
    Tensor::from_vec(x.to_vec(), (rows, width), &Device::Cpu).map_err(candle_err)
}

fn targets(y: &[f32], loss: Loss) -> Result<Tensor> {
    let dev = Device::Cpu;
    match loss {
        Loss::CrossEntropy => Tensor::from_vec(
            y.iter().map(|v| *v as u32).collect::<Vec<u32>>(),
            y.len(),
            &dev,
        ),
        Loss::Mse => Tensor::from_vec(y.to_vec(), (y.len(), 1), &dev),
    }
    .map_err(candle_err)
}

fn loss_of(out: &Tensor, y: &Tensor, loss: Loss) -> candle_core::Result<Tensor> {
    match loss {
        Loss::CrossEntropy => candle_nn::loss::cross_entropy(out, y),
        Loss::Mse => candle_nn::loss::mse(out, y),
    }
}

/// Predictions of `network`-shaped `mlp` on `x`: class indices and class-1 scores, or values.
fn predict(mlp: &Mlp, x: &Tensor, loss: Loss) -> Result<(Vec<f32>, Option<Vec<f64>>)> {
    let out = mlp.forward(x, None).map_err(candle_err)?;
    match loss {
        Loss::CrossEntropy => {
            let probs = candle_nn::ops::softmax(&out, 1).map_err(candle_err)?;
            let rows: Vec<Vec<f32>> = probs.to_vec2().map_err(candle_err)?;
            let labels = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                        .map(|(i, _)| i as f32)
                        .unwrap_or(0.0)
                })
                .collect();
            let positive = rows
                .iter()
                .map(|r| f64::from(*r.get(1).unwrap_or(&0.0)))
                .collect();
            Ok((labels, Some(positive)))
        }
        Loss::Mse => Ok((
            out.flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(candle_err)?,
            None,
        )),
    }
}

/// Cleans, splits, fits the transform, trains and evaluates on the test split.
/// `on_epoch` sees each epoch's figures and returns false to stop the run (cancel).
pub fn fit(
    table: &Table,
    profile: &Profile,
    spec: &TrainSpec,
    on_epoch: &mut dyn FnMut(&EpochStats) -> bool,
) -> Result<Outcome> {
    let (activation, loss) = spec.check(profile.problem)?;
    let (table, cleaned) = prep::clean(table, &spec.prep);
    let target = table
        .columns
        .iter()
        .position(|c| *c == profile.target)
        .ok_or_else(|| bad(format!("the data has no column '{}'", profile.target)))?;
    let labels: Option<(Vec<usize>, Vec<String>)> = match profile.problem {
        Problem::Classification => {
            let classes = prep::classes(&table, target);
            let idx = table
                .rows
                .iter()
                .map(|r| {
                    r[target]
                        .as_ref()
                        .and_then(|v| classes.iter().position(|c| c == v))
                        .unwrap_or(0)
                })
                .collect();
            Some((idx, classes))
        }
        Problem::Regression => None,
    };
    let split = prep::split(
        table.rows.len(),
        labels.as_ref().map(|(l, n)| (l.as_slice(), n.as_slice())),
        &spec.prep,
    )?;
    let pipeline = Pipeline::fit(&table, profile, &split.train, &spec.prep)?;
    let width = pipeline.width();
    if width == 0 {
        return Err(bad("no numeric or categorical feature columns to train on"));
    }
    let outputs = match &pipeline.classes {
        Some(c) => c.len(),
        None => 1,
    };
    let (x_train, y_train) = pipeline.matrix(&table, &split.train)?;
    let (x_val, y_val) = pipeline.matrix(&table, &split.validation)?;
    let (x_test, y_test) = pipeline.matrix(&table, &split.test)?;

    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.prep.seed);
    let mut sizes = vec![width];
    sizes.extend(&spec.mlp.hidden);
    sizes.push(outputs);
    let mlp = Mlp::new(&sizes, activation, &mut rng)?;
    let mut opt = Opt::new(&spec.optimizer, mlp.vars())?;

    let n = split.train.len();
    let val = (!split.validation.is_empty())
        .then(|| {
            Ok::<_, Error>((
                tensor(&x_val, split.validation.len(), width)?,
                targets(&y_val, loss)?,
            ))
        })
        .transpose()?;
    let mut order: Vec<usize> = (0..n).collect();
    let mut history = vec![];
    let mut best: Option<(f64, usize, Network)> = None;
    for epoch in 1..=spec.epochs {
        let lr = spec.lr_at(epoch - 1);
        opt.set_lr(lr);
        order.shuffle(&mut rng);
        let (mut total, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(spec.batch_size) {
            let mut xb = Vec::with_capacity(chunk.len() * width);
            let mut yb = Vec::with_capacity(chunk.len());
            for &i in chunk {
                xb.extend_from_slice(&x_train[i * width..(i + 1) * width]);
                yb.push(y_train[i]);
            }
            let xb = tensor(&xb, chunk.len(), width)?;
            let yb = targets(&yb, loss)?;
            let out = mlp
                .forward(&xb, Some((spec.mlp.dropout, &mut rng)))
                .map_err(candle_err)?;
            let l = loss_of(&out, &yb, loss).map_err(candle_err)?;
            let value = f64::from(l.to_scalar::<f32>().map_err(candle_err)?);
            if !value.is_finite() {
                return Err(bad(format!(
                    "the training loss became {value} in epoch {epoch}: the optimiser diverged; lower optimizer.lr (now {})",
                    spec.optimizer.lr
                )));
            }
            opt.step(&l).map_err(candle_err)?;
            total += value * chunk.len() as f64;
            seen += chunk.len();
        }
        let train_loss = total / seen.max(1) as f64;
        let (val_loss, val_score) = match &val {
            Some((xv, yv)) => {
                let out = mlp.forward(xv, None).map_err(candle_err)?;
                let l = f64::from(
                    loss_of(&out, yv, loss)
                        .and_then(|t| t.to_scalar::<f32>())
                        .map_err(candle_err)?,
                );
                let (pred, _) = predict(&mlp, xv, loss)?;
                (l, score(&y_val, &pred, loss, outputs))
            }
            None => (train_loss, f64::NAN),
        };
        let stats = EpochStats {
            epoch,
            lr,
            train_loss,
            val_loss,
            val_score,
        };
        let go_on = on_epoch(&stats);
        history.push(stats);
        if best.as_ref().is_none_or(|(l, _, _)| val_loss < *l) {
            best = Some((val_loss, epoch, mlp.network()?));
        }
        if !go_on {
            return Err(Error::new(
                maas_core::ErrorKind::Conflict,
                format!("the run was cancelled in epoch {epoch}"),
            ));
        }
        if let (Some(p), Some((_, best_epoch, _))) = (spec.patience, &best) {
            if epoch - best_epoch >= p {
                break;
            }
        }
    }
    let (_, best_epoch, network) = best.ok_or_else(|| bad("no epoch ran"))?;
    // Evaluate the kept weights on the test split.
    let kept = Mlp::from_network(&network)?;
    let test_metrics = if split.test.is_empty() {
        serde_json::json!({})
    } else {
        let xt = tensor(&x_test, split.test.len(), width)?;
        let (pred, positive) = predict(&kept, &xt, loss)?;
        // Regression metrics are in the target's own units.
        let (truth, pred): (Vec<f32>, Vec<f32>) = if loss == Loss::Mse {
            (
                y_test.iter().map(|y| pipeline.unscale(*y)).collect(),
                pred.iter().map(|p| pipeline.unscale(*p)).collect(),
            )
        } else {
            (y_test.clone(), pred)
        };
        evaluate(&truth, &pred, positive.as_deref(), loss, outputs)
    };
    Ok(Outcome {
        pipeline,
        network,
        history,
        best_epoch,
        test_metrics,
        cleaned,
        split_sizes: [split.train.len(), split.validation.len(), split.test.len()],
    })
}

impl Mlp {
    fn from_network(net: &Network) -> Result<Mlp> {
        let dev = Device::Cpu;
        let activation = if net.activation == "tanh" {
            Activation::Tanh
        } else {
            Activation::Relu
        };
        let layers = net
            .layers
            .iter()
            .map(|l| {
                let w = Tensor::from_vec(l.weight.clone(), (l.outputs, l.inputs), &dev)?;
                let b = Tensor::from_vec(l.bias.clone(), l.outputs, &dev)?;
                Ok((Var::from_tensor(&w)?, Var::from_tensor(&b)?))
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(candle_err)?;
        Ok(Mlp { layers, activation })
    }
}

fn score(truth: &[f32], pred: &[f32], loss: Loss, classes: usize) -> f64 {
    match loss {
        Loss::CrossEntropy => {
            let t: Vec<usize> = truth.iter().map(|v| *v as usize).collect();
            let p: Vec<usize> = pred.iter().map(|v| *v as usize).collect();
            metrics::classification(&t, &p, classes, None).accuracy
        }
        Loss::Mse => {
            let t: Vec<f64> = truth.iter().map(|v| f64::from(*v)).collect();
            let p: Vec<f64> = pred.iter().map(|v| f64::from(*v)).collect();
            metrics::regression(&t, &p).r2
        }
    }
}

fn evaluate(
    truth: &[f32],
    pred: &[f32],
    positive: Option<&[f64]>,
    loss: Loss,
    classes: usize,
) -> serde_json::Value {
    match loss {
        Loss::CrossEntropy => {
            let t: Vec<usize> = truth.iter().map(|v| *v as usize).collect();
            let p: Vec<usize> = pred.iter().map(|v| *v as usize).collect();
            serde_json::to_value(metrics::classification(&t, &p, classes, positive))
                .unwrap_or_default()
        }
        Loss::Mse => {
            let t: Vec<f64> = truth.iter().map(|v| f64::from(*v)).collect();
            let p: Vec<f64> = pred.iter().map(|v| f64::from(*v)).collect();
            serde_json::to_value(metrics::regression(&t, &p)).unwrap_or_default()
        }
    }
}

/// Runs a trained network on an input matrix (`rows × width`, row-major): logits or values.
pub fn run_network(net: &Network, x: &[f32], rows: usize) -> Result<Vec<f32>> {
    let mlp = Mlp::from_network(net)?;
    let width = net.layers.first().map(|l| l.inputs).unwrap_or(0);
    let out = mlp
        .forward(&tensor(x, rows, width)?, None)
        .map_err(candle_err)?;
    out.flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(candle_err)
}
