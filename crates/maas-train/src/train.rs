//! Training on CPU with candle: an MLP, or a small CNN for images, from a declarative spec, SGD (momentum, weight
//! decay) or Adam/AdamW, cross-entropy or MSE, a step or cosine learning-rate schedule, early
//! stopping on validation loss keeping the best weights. Every random choice (initial weights,
//! batch order, dropout masks) comes from the run's seed, so a run is reproducible.

use candle_core::{Device, Tensor, Var};
use maas_core::{Error, Result};
use rand::distributions::{Distribution, Uniform};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dataset::{Problem, Profile, Table};
use crate::images::{self, ImageSpec};
use crate::metrics;
use crate::prep::{self, Pipeline, PrepSpec};
use crate::weights::{self, Named};
use std::collections::HashMap;

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

/// The convolutional part of a network for images: each convolution (padded to keep the size)
/// is followed by ReLU and a 2×2 max-pool; the MLP's layers then read the flattened result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    /// Output channels of each convolution.
    #[serde(default = "default_conv_channels")]
    pub channels: Vec<usize>,
    /// Side of every convolution's square kernel (odd).
    #[serde(default = "default_kernel")]
    pub kernel: usize,
}

fn default_conv_channels() -> Vec<usize> {
    vec![16, 32]
}
fn default_kernel() -> usize {
    3
}

impl Default for CnnSpec {
    fn default() -> Self {
        Self {
            channels: default_conv_channels(),
            kernel: default_kernel(),
        }
    }
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

/// Random changes to the training rows, drawn afresh every epoch (never applied to validation,
/// test or served inputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AugmentSpec {
    /// Standard deviation of Gaussian noise added to every numeric input after scaling (so in
    /// units of the feature's spread with z-score); 0 turns it off.
    #[serde(default)]
    pub noise: f64,
    /// Images: shift by up to this many pixels each way.
    #[serde(default)]
    pub shift: usize,
    /// Images: turn by up to this many degrees either way.
    #[serde(default)]
    pub rotate: f64,
}

/// Everything a training run is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The network (after the convolutions, for images).
    #[serde(default = "default_mlp")]
    pub mlp: MlpSpec,
    /// Convolutions for an image dataset (by default `CnnSpec::default()` on images).
    #[serde(default)]
    pub cnn: Option<CnnSpec>,
    /// How images become inputs.
    #[serde(default)]
    pub image: ImageSpec,
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
    /// An embedding model (`NAME`, `NAME:VERSION`) that encodes the dataset's text columns; an
    /// MLP head is trained on its vectors (the encoder stays frozen).
    #[serde(default)]
    pub encoder: Option<String>,
    /// Augmentation of the training rows.
    #[serde(default)]
    pub augment: AugmentSpec,
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
            cnn: None,
            image: ImageSpec::default(),
            optimizer: OptimizerSpec::default(),
            loss: None,
            epochs: default_epochs(),
            batch_size: default_batch(),
            schedule: Schedule::Constant,
            patience: None,
            prep: PrepSpec::default(),
            encoder: None,
            augment: AugmentSpec::default(),
        }
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::invalid(m.into())
}

fn candle_err(e: candle_core::Error) -> Error {
    Error::internal(format!("training failed: {e}"))
}

/// A tensor's values, row-major.
fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(candle_err)
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
    /// Checks the spec against the problem it will train on; the error names the setting.
    pub fn validate(&self, problem: Problem) -> Result<()> {
        self.check(problem).map(|_| ())
    }

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
        if !(self.augment.noise.is_finite() && self.augment.noise >= 0.0) {
            return Err(bad(format!(
                "augment.noise must be a number >= 0, got {}",
                self.augment.noise
            )));
        }
        if !(self.augment.rotate.is_finite() && (0.0..=180.0).contains(&self.augment.rotate)) {
            return Err(bad(format!(
                "augment.rotate must be between 0 and 180 degrees, got {}",
                self.augment.rotate
            )));
        }
        if let Some(cnn) = &self.cnn {
            if cnn.kernel.is_multiple_of(2) || cnn.kernel > 15 {
                return Err(bad(format!(
                    "cnn.kernel must be odd and at most 15, got {}",
                    cnn.kernel
                )));
            }
            if cnn.channels.is_empty() || cnn.channels.contains(&0) {
                return Err(bad("cnn.channels must list at least one positive width"));
            }
        }
        // Unset ones are taken from the images, and always fit.
        images::check(
            self.image.size.unwrap_or(1),
            self.image.channels.unwrap_or(1),
        )?;
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

/// Trained weights of one convolution, `[outputs, inputs, kernel, kernel]` row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    /// Input channels.
    pub inputs: usize,
    /// Output channels.
    pub outputs: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// The kernels.
    pub weight: Vec<f32>,
    /// `outputs` biases.
    pub bias: Vec<f32>,
}

/// A trained network: optional convolutions over an image input, then linear layers; enough to
/// run it anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// Convolutions (each followed by ReLU and a 2×2 max-pool), for an image input.
    #[serde(default)]
    pub convs: Vec<Conv>,
    /// Channels and side of the image the convolutions read.
    #[serde(default)]
    pub image: Option<(usize, usize)>,
    /// Linear layers in order; the activation follows every one but the last.
    pub layers: Vec<Layer>,
    /// `relu` or `tanh`.
    pub activation: String,
}

/// Parameter shapes of a network: what a file or checkpoint must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Shapes {
    /// `(outputs, inputs, kernel)` of each convolution.
    #[serde(default)]
    pub convs: Vec<(usize, usize, usize)>,
    /// Channels and side of the image input (with convolutions).
    #[serde(default)]
    pub image: Option<(usize, usize)>,
    /// `(outputs, inputs)` of each linear layer.
    pub layers: Vec<(usize, usize)>,
}

/// Side of a feature map after a 2×2 max-pool (maps of side 1 are not pooled).
fn pooled(side: usize) -> usize {
    if side >= 2 {
        side / 2
    } else {
        side
    }
}

impl Shapes {
    /// Whether each part reads what the one before it produces, starting from `width` inputs.
    pub fn fits(&self, width: usize) -> bool {
        let mut features = width;
        if !self.convs.is_empty() {
            let Some((channels, side)) = self.image else {
                return false;
            };
            if channels * side * side != width {
                return false;
            }
            let (mut c, mut s) = (channels, side);
            for &(outputs, inputs, kernel) in &self.convs {
                if inputs != c || kernel.is_multiple_of(2) {
                    return false;
                }
                (c, s) = (outputs, pooled(s));
            }
            features = c * s * s;
        }
        self.layers.first().map(|l| l.1) == Some(features)
            && self.layers.windows(2).all(|w| w[0].0 == w[1].1)
    }
}

impl Network {
    /// Its parameter shapes.
    pub fn shapes(&self) -> Shapes {
        Shapes {
            convs: self
                .convs
                .iter()
                .map(|c| (c.outputs, c.inputs, c.kernel))
                .collect(),
            image: self.image,
            layers: self.layers.iter().map(|l| (l.outputs, l.inputs)).collect(),
        }
    }
}

/// A layer's weights as a trainable variable, `[outputs, inputs]` (PyTorch's and the file's layout).
fn weight_var(data: Vec<f32>, outputs: usize, inputs: usize) -> candle_core::Result<Var> {
    let w = Tensor::from_vec(data, (outputs, inputs), &Device::Cpu)?;
    Var::from_tensor(&w)
}

struct Mlp {
    /// Kernels `[out, in, k, k]` and biases.
    convs: Vec<(Var, Var)>,
    image: Option<(usize, usize)>,
    layers: Vec<(Var, Var)>,
    activation: Activation,
}

/// PyTorch's default initialisation of `nn.Linear` and `nn.Conv2d`: U(-1/√fan_in, 1/√fan_in) for
/// weights and biases.
fn uniform_init(
    fan_in: usize,
    n: usize,
    outputs: usize,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<f32>, Vec<f32>) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let dist = Uniform::new_inclusive(-bound, bound);
    let w = (0..n).map(|_| dist.sample(rng)).collect();
    let b = (0..outputs).map(|_| dist.sample(rng)).collect();
    (w, b)
}

fn bias_var(b: Vec<f32>) -> candle_core::Result<Var> {
    let n = b.len();
    Var::from_tensor(&Tensor::from_vec(b, n, &Device::Cpu)?)
}

impl Mlp {
    /// Convolutions `(outputs, inputs, kernel)` over an image `(channels, side)`, then linear
    /// layers through `sizes`, initialised from `rng`.
    fn new(
        convs: &[(usize, usize, usize)],
        image: Option<(usize, usize)>,
        sizes: &[usize],
        activation: Activation,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<Mlp> {
        let mut conv_vars = vec![];
        for &(outputs, inputs, k) in convs {
            let (w, b) = uniform_init(inputs * k * k, outputs * inputs * k * k, outputs, rng);
            let w = Tensor::from_vec(w, (outputs, inputs, k, k), &Device::Cpu)
                .and_then(|w| Var::from_tensor(&w))
                .map_err(candle_err)?;
            conv_vars.push((w, bias_var(b).map_err(candle_err)?));
        }
        let dev = Device::Cpu;
        let mut layers = vec![];
        for pair in sizes.windows(2) {
            let (inputs, outputs) = (pair[0], pair[1]);
            // PyTorch's nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)) for weights and biases.
            let bound = 1.0 / (inputs as f32).sqrt();
            let dist = Uniform::new_inclusive(-bound, bound);
            let w: Vec<f32> = (0..inputs * outputs).map(|_| dist.sample(rng)).collect();
            let b: Vec<f32> = (0..outputs).map(|_| dist.sample(rng)).collect();
            let w = weight_var(w, outputs, inputs).map_err(candle_err)?;
            let b = Var::from_tensor(&Tensor::from_vec(b, outputs, &dev).map_err(candle_err)?)
                .map_err(candle_err)?;
            layers.push((w, b));
        }
        Ok(Mlp {
            convs: conv_vars,
            image,
            layers,
            activation,
        })
    }

    fn vars(&self) -> Vec<Var> {
        self.convs
            .iter()
            .chain(&self.layers)
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// The convolutions' output, flattened per row (the input itself without convolutions).
    fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (Some((channels, side)), false) = (self.image, self.convs.is_empty()) else {
            return Ok(x.clone());
        };
        let rows = x.dim(0)?;
        let mut h = x.reshape((rows, channels, side, side))?;
        for (w, b) in &self.convs {
            let k = w.dim(3)?;
            h = h
                .conv2d(w, k / 2, 1, 1, 1)?
                .broadcast_add(&b.reshape((1, (), 1, 1))?)?
                .relu()?;
            if h.dim(2)? >= 2 {
                h = h.max_pool2d(2)?;
            }
        }
        h.flatten_from(1)
    }

    /// Logits (or values). With `dropout`, masks come from `rng`.
    fn forward(
        &self,
        x: &Tensor,
        dropout: Option<(f32, &mut rand::rngs::StdRng)>,
    ) -> candle_core::Result<Tensor> {
        let mut dropout = dropout;
        let mut h = self.features(x)?;
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
        let convs = self
            .convs
            .iter()
            .map(|(w, b)| {
                let (outputs, inputs, kernel, _) = w.dims4().map_err(candle_err)?;
                Ok(Conv {
                    inputs,
                    outputs,
                    kernel,
                    weight: flat(w)?,
                    bias: flat(b)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = self
            .layers
            .iter()
            .map(|(w, b)| {
                let (outputs, inputs) = w.dims2().map_err(candle_err)?;
                Ok(Layer {
                    inputs,
                    outputs,
                    weight: flat(w)?,
                    bias: flat(b)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Network {
            convs,
            image: self.image,
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

/// Adam with L2 weight decay, or AdamW with decoupled decay, as PyTorch defines them.
/// Written here (not candle-nn's) so its moments can be checkpointed and restored.
struct Adam {
    vars: Vec<Var>,
    /// First and second moments, flat, one per variable.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: usize,
    lr: f64,
    weight_decay: f64,
    decoupled: bool,
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPS: f32 = 1e-8;

impl Adam {
    /// One pass over each variable's values, moments and gradient: as a chain of tensor ops the
    /// update read and wrote every weight about forty times, which dominated steps of wide layers.
    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        let lr = self.lr as f32;
        let wd = self.weight_decay as f32;
        let (l2, shrink) = match self.decoupled {
            true => (0.0, 1.0 - lr * wd),
            false => (wd, 1.0),
        };
        for ((var, m), v) in self.vars.iter().zip(&mut self.m).zip(&mut self.v) {
            let Some(g) = grads.get(var) else { continue };
            let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
            let mut theta: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            for (((x, m), v), g) in theta.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(&g) {
                let g = g + l2 * *x;
                *m = BETA1 * *m + (1.0 - BETA1) * g;
                *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                let update = (*m / c1) / ((*v / c2).sqrt() + EPS);
                *x = *x * shrink - lr * update;
            }
            var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
        }
        Ok(())
    }
}

enum Opt {
    Sgd(Sgd),
    Adam(Adam),
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
            kind => {
                let zeros: Vec<Vec<f32>> = vars.iter().map(|v| vec![0.0; v.elem_count()]).collect();
                Opt::Adam(Adam {
                    m: zeros.clone(),
                    v: zeros,
                    vars,
                    step: 0,
                    lr: spec.lr,
                    weight_decay: spec.weight_decay,
                    decoupled: kind == "adamw",
                })
            }
        })
    }

    fn set_lr(&mut self, lr: f64) {
        match self {
            Opt::Sgd(s) => s.lr = lr,
            Opt::Adam(a) => a.lr = lr,
        }
    }

    fn step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        match self {
            Opt::Sgd(s) => s.step(&grads),
            Opt::Adam(a) => a.step(&grads),
        }
    }

    /// The optimiser's state as named tensors, and its step count.
    fn state(&self) -> Result<(Vec<Named>, usize)> {
        let named = |prefix: &str, i: usize, t: &Tensor| -> Result<Named> {
            Ok(Named {
                name: format!("opt.{prefix}.{i}"),
                shape: t.dims().to_vec(),
                data: flat(t)?,
            })
        };
        match self {
            Opt::Sgd(s) => Ok((
                s.velocity
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.as_ref().map(|v| named("velocity", i, v)))
                    .collect::<Result<_>>()?,
                0,
            )),
            Opt::Adam(a) => {
                let mut out = vec![];
                for (i, ((m, v), var)) in a.m.iter().zip(&a.v).zip(&a.vars).enumerate() {
                    let shape = var.as_tensor().dims().to_vec();
                    for (prefix, data) in [("m", m), ("v", v)] {
                        out.push(Named {
                            name: format!("opt.{prefix}.{i}"),
                            shape: shape.clone(),
                            data: data.clone(),
                        });
                    }
                }
                Ok((out, a.step))
            }
        }
    }

    /// Puts back what [`Opt::state`] saved.
    fn restore(&mut self, tensors: &mut HashMap<String, Named>, step: usize) -> Result<()> {
        let load = |tensors: &mut HashMap<String, Named>, name: String, like: &Var| {
            let shape = like.as_tensor().dims().to_vec();
            let data = weights::take(tensors, &name, &shape)?;
            Tensor::from_vec(data, shape, &Device::Cpu).map_err(candle_err)
        };
        match self {
            Opt::Sgd(s) => {
                for (i, (var, v)) in s.vars.iter().zip(&mut s.velocity).enumerate() {
                    let name = format!("opt.velocity.{i}");
                    *v = match tensors.contains_key(&name) {
                        true => Some(load(tensors, name, var)?),
                        false => None,
                    };
                }
            }
            Opt::Adam(a) => {
                for (i, var) in a.vars.iter().enumerate() {
                    let shape = var.as_tensor().dims().to_vec();
                    a.m[i] = weights::take(tensors, &format!("opt.m.{i}"), &shape)?;
                    a.v[i] = weights::take(tensors, &format!("opt.v.{i}"), &shape)?;
                }
                a.step = step;
            }
        }
        Ok(())
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// From 1.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss (NaN-free; equal to the train loss when there is no validation split).
    pub val_loss: f64,
    /// Validation accuracy (classification) or R² (regression); absent without a validation split.
    pub val_score: Option<f64>,
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
            let labels = rows.iter().map(|r| argmax(r) as f32).collect();
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

/// Index of the largest value; the first on ties.
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut rand::rngs::StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The random stream of one epoch (batch order, dropout), derived from the seed alone so a
/// resumed run draws exactly what the uninterrupted run would have.
fn epoch_rng(seed: u64, epoch: usize) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The header of a checkpoint file.
#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    kind: String,
    /// The spec and data shape it belongs to: a checkpoint of another run is refused.
    fingerprint: String,
    history: Vec<EpochStats>,
    best_epoch: Option<usize>,
    best_loss: Option<f64>,
    opt_step: usize,
    stopped: bool,
}

/// A training run stepped one epoch at a time, so the caller can report progress, checkpoint
/// after each epoch, stop, and resume from a checkpoint with the same result as an
/// uninterrupted run.
pub struct Trainer {
    spec: TrainSpec,
    loss: Loss,
    width: usize,
    outputs: usize,
    pipeline: Pipeline,
    x_train: Vec<f32>,
    y_train: Vec<f32>,
    val: Option<(Tensor, Tensor, Vec<f32>)>,
    /// Which input positions are numbers or pixels (noise applies to those).
    numeric: Vec<bool>,
    /// Image inputs: offset in the input vector, channels, side.
    images: Vec<(usize, usize, usize)>,
    x_test: Vec<f32>,
    y_test: Vec<f32>,
    cleaned: prep::Cleaned,
    split_sizes: [usize; 3],
    mlp: Mlp,
    opt: Opt,
    history: Vec<EpochStats>,
    best: Option<(f64, usize, Network)>,
    stopped: bool,
}

impl Trainer {
    /// Cleans, splits and fits the transform; the network starts from the seed's weights.
    pub fn new(table: &Table, profile: &Profile, spec: &TrainSpec) -> Result<Trainer> {
        Self::with_encoded(table, profile, spec, &prep::Encoded::new())
    }

    /// As [`Trainer::new`], with text columns represented by their embeddings in `encoded`.
    pub fn with_encoded(
        table: &Table,
        profile: &Profile,
        spec: &TrainSpec,
        encoded: &prep::Encoded,
    ) -> Result<Trainer> {
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
        let pipeline = Pipeline::fit_encoded(&table, profile, &split.train, &spec.prep, encoded)?;
        let width = pipeline.width();
        if width == 0 {
            return Err(bad(
                "no numeric or categorical feature columns to train on (text columns need an encoder: set `encoder` to an embedding model)",
            ));
        }
        let outputs = match &pipeline.classes {
            Some(c) => c.len(),
            None => 1,
        };
        let (x_train, y_train) = pipeline.matrix_encoded(&table, &split.train, encoded)?;
        let (x_val, y_val) = pipeline.matrix_encoded(&table, &split.validation, encoded)?;
        let (x_test, y_test) = pipeline.matrix_encoded(&table, &split.test, encoded)?;
        let val = if split.validation.is_empty() {
            None
        } else {
            Some((
                tensor(&x_val, split.validation.len(), width)?,
                targets(&y_val, loss)?,
                y_val,
            ))
        };
        let mut images = vec![];
        let mut offset = 0;
        for f in &pipeline.features {
            if let prep::Feature::Image { channels, size, .. } = f {
                images.push((offset, *channels, *size));
            }
            offset += f.width();
        }
        if !images.is_empty() && profile.problem == Problem::Regression {
            return Err(bad(format!(
                "the target '{}' is a number; an image dataset's target must be a label",
                profile.target
            )));
        }
        if images.is_empty() && (spec.augment.shift > 0 || spec.augment.rotate > 0.0) {
            return Err(bad(
                "augment.shift and augment.rotate apply to images; this dataset has no image column",
            ));
        }
        let single_image = match images.as_slice() {
            [(_, c, s)] if pipeline.features.len() == 1 => Some((*c, *s)),
            _ => None,
        };
        let cnn = match (&spec.cnn, single_image) {
            (Some(cnn), Some(_)) => Some(cnn.clone()),
            (None, Some(_)) => Some(CnnSpec::default()),
            (Some(_), None) if images.is_empty() => {
                return Err(bad(
                    "cnn is for image datasets; this dataset has no image column",
                ))
            }
            (Some(_), None) => return Err(bad("cnn needs the image to be the only input column")),
            (None, None) => None,
        };
        let mut convs = vec![];
        let mut features = width;
        if let (Some(cnn), Some((channels, side))) = (&cnn, single_image) {
            let (mut c, mut s) = (channels, side);
            for &out in &cnn.channels {
                convs.push((out, c, cnn.kernel));
                (c, s) = (out, pooled(s));
            }
            features = c * s * s;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(spec.prep.seed);
        let mut sizes = vec![features];
        sizes.extend(&spec.mlp.hidden);
        sizes.push(outputs);
        let image = cnn.and(single_image);
        let mlp = Mlp::new(&convs, image, &sizes, activation, &mut rng)?;
        let opt = Opt::new(&spec.optimizer, mlp.vars())?;
        let numeric = pipeline
            .features
            .iter()
            .flat_map(|f| match f {
                prep::Feature::Numeric { .. } => vec![true],
                prep::Feature::OneHot { categories, .. } => vec![false; categories.len()],
                prep::Feature::Embedding { dims, .. } => vec![false; *dims],
                prep::Feature::Image { channels, size, .. } => vec![true; channels * size * size],
            })
            .collect();
        Ok(Trainer {
            numeric,
            images,
            spec: spec.clone(),
            loss,
            width,
            outputs,
            pipeline,
            x_train,
            y_train,
            val,
            x_test,
            y_test,
            cleaned,
            split_sizes: [split.train.len(), split.validation.len(), split.test.len()],
            mlp,
            opt,
            history: vec![],
            best: None,
            stopped: false,
        })
    }

    /// Epochs finished so far.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// Figures of the epochs finished so far.
    pub fn history(&self) -> &[EpochStats] {
        &self.history
    }

    /// Rows in the train, validation and test splits.
    pub fn split_sizes(&self) -> [usize; 3] {
        self.split_sizes
    }

    /// Whether every epoch has run or early stopping ended the run.
    pub fn is_done(&self) -> bool {
        self.stopped || self.history.len() >= self.spec.epochs
    }

    /// Runs the next epoch; None when the run is done.
    pub fn next_epoch(&mut self) -> Result<Option<EpochStats>> {
        if self.is_done() {
            return Ok(None);
        }
        let (spec, loss, width) = (&self.spec, self.loss, self.width);
        let epoch = self.history.len() + 1;
        let lr = spec.lr_at(epoch - 1);
        self.opt.set_lr(lr);
        let mut rng = epoch_rng(spec.prep.seed, epoch);
        let mut order: Vec<usize> = (0..self.split_sizes[0]).collect();
        order.shuffle(&mut rng);
        let (mut total, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(spec.batch_size) {
            let mut xb = Vec::with_capacity(chunk.len() * width);
            let mut yb = Vec::with_capacity(chunk.len());
            for &i in chunk {
                xb.extend_from_slice(&self.x_train[i * width..(i + 1) * width]);
                yb.push(self.y_train[i]);
            }
            if spec.augment.shift > 0 || spec.augment.rotate > 0.0 {
                for row in xb.chunks_mut(width) {
                    for &(offset, channels, side) in &self.images {
                        let block = &mut row[offset..offset + channels * side * side];
                        let moved = images::augment(
                            block,
                            channels,
                            side,
                            spec.augment.shift,
                            spec.augment.rotate,
                            &mut rng,
                        );
                        block.copy_from_slice(&moved);
                    }
                }
            }
            if spec.augment.noise > 0.0 {
                for (x, numeric) in xb.iter_mut().zip(self.numeric.iter().cycle()) {
                    if *numeric {
                        *x += (gaussian(&mut rng) * spec.augment.noise) as f32;
                    }
                }
            }
            let xb = tensor(&xb, chunk.len(), width)?;
            let yb = targets(&yb, loss)?;
            let out = self
                .mlp
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
            self.opt.step(&l).map_err(candle_err)?;
            total += value * chunk.len() as f64;
            seen += chunk.len();
        }
        let train_loss = total / seen.max(1) as f64;
        let (val_loss, val_score) = match &self.val {
            Some((xv, yv, y_val)) => {
                let out = self.mlp.forward(xv, None).map_err(candle_err)?;
                let l = f64::from(
                    loss_of(&out, yv, loss)
                        .and_then(|t| t.to_scalar::<f32>())
                        .map_err(candle_err)?,
                );
                let (pred, _) = predict(&self.mlp, xv, loss)?;
                (l, Some(score(y_val, &pred, loss, self.outputs)))
            }
            None => (train_loss, None),
        };
        let stats = EpochStats {
            epoch,
            lr,
            train_loss,
            val_loss,
            val_score,
        };
        self.history.push(stats.clone());
        if self.best.as_ref().is_none_or(|(l, _, _)| val_loss < *l) {
            self.best = Some((val_loss, epoch, self.mlp.network()?));
        }
        if let (Some(p), Some((_, best_epoch, _))) = (spec.patience, &self.best) {
            if epoch - best_epoch >= p {
                self.stopped = true;
            }
        }
        Ok(Some(stats))
    }

    fn fingerprint(&self) -> String {
        serde_json::json!({
            "spec": self.spec,
            "split_sizes": self.split_sizes,
            "width": self.width,
            "outputs": self.outputs,
        })
        .to_string()
    }

    /// The run's state after the epochs so far: weights, optimiser moments, best weights,
    /// history. [`Trainer::restore`] continues from it.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let mut tensors = layer_tensors("params", &self.mlp.network()?);
        let (opt, opt_step) = self.opt.state()?;
        tensors.extend(opt);
        if let Some((_, _, best)) = &self.best {
            tensors.extend(layer_tensors("best", best));
        }
        let header = CheckpointHeader {
            kind: "checkpoint".to_owned(),
            fingerprint: self.fingerprint(),
            history: self.history.clone(),
            best_epoch: self.best.as_ref().map(|b| b.1),
            best_loss: self.best.as_ref().map(|b| b.0),
            opt_step,
            stopped: self.stopped,
        };
        let header = serde_json::to_string(&header).map_err(|e| Error::internal(e.to_string()))?;
        weights::pack(&tensors, &header)
    }

    /// Continues from a checkpoint of this same run (same spec and data).
    pub fn restore(&mut self, checkpoint: &[u8]) -> Result<()> {
        let (header, mut tensors) = weights::unpack(checkpoint)?;
        let header: CheckpointHeader = serde_json::from_str(&header)
            .map_err(|e| bad(format!("the checkpoint's header is not valid: {e}")))?;
        if header.kind != "checkpoint" || header.fingerprint != self.fingerprint() {
            return Err(bad(
                "the checkpoint belongs to another run (its spec or data differ)",
            ));
        }
        let shapes = self.mlp.network()?.shapes();
        let current = network_from(&mut tensors, "params", &shapes, &self.spec.mlp.activation)?;
        // The same parameters in the same order as the running network's variables.
        let loaded = Mlp::from_network(&current)?;
        for (var, value) in self.mlp.vars().iter().zip(loaded.vars()) {
            var.set(value.as_tensor()).map_err(candle_err)?;
        }
        self.opt.restore(&mut tensors, header.opt_step)?;
        self.best = match (header.best_loss, header.best_epoch) {
            (Some(loss), Some(epoch)) => Some((
                loss,
                epoch,
                network_from(&mut tensors, "best", &shapes, &self.spec.mlp.activation)?,
            )),
            _ => None,
        };
        self.history = header.history;
        self.stopped = header.stopped;
        Ok(())
    }

    /// Evaluates the best weights on the test split and hands over the result.
    pub fn finish(self) -> Result<Outcome> {
        let (_, best_epoch, network) = self.best.ok_or_else(|| bad("no epoch ran"))?;
        let loss = self.loss;
        let kept = Mlp::from_network(&network)?;
        let n_test = self.split_sizes[2];
        let test_metrics = if n_test == 0 {
            serde_json::json!({})
        } else {
            let xt = tensor(&self.x_test, n_test, self.width)?;
            let (pred, positive) = predict(&kept, &xt, loss)?;
            // Regression metrics are in the target's own units.
            let (truth, pred): (Vec<f32>, Vec<f32>) = if loss == Loss::Mse {
                (
                    self.y_test
                        .iter()
                        .map(|y| self.pipeline.unscale(*y))
                        .collect(),
                    pred.iter().map(|p| self.pipeline.unscale(*p)).collect(),
                )
            } else {
                (self.y_test.clone(), pred)
            };
            evaluate(&truth, &pred, positive.as_deref(), loss, self.outputs)
        };
        Ok(Outcome {
            pipeline: self.pipeline,
            network,
            history: self.history,
            best_epoch,
            test_metrics,
            cleaned: self.cleaned,
            split_sizes: self.split_sizes,
        })
    }
}

/// A network's layers as named tensors `{prefix}.{i}.weight|bias`.
pub(crate) fn layer_tensors(prefix: &str, net: &Network) -> Vec<Named> {
    let convs = net.convs.iter().enumerate().flat_map(|(i, c)| {
        [
            Named {
                name: format!("{prefix}.conv.{i}.weight"),
                shape: vec![c.outputs, c.inputs, c.kernel, c.kernel],
                data: c.weight.clone(),
            },
            Named {
                name: format!("{prefix}.conv.{i}.bias"),
                shape: vec![c.outputs],
                data: c.bias.clone(),
            },
        ]
    });
    let layers = net.layers.iter().enumerate().flat_map(|(i, l)| {
        [
            Named {
                name: format!("{prefix}.{i}.weight"),
                shape: vec![l.outputs, l.inputs],
                data: l.weight.clone(),
            },
            Named {
                name: format!("{prefix}.{i}.bias"),
                shape: vec![l.outputs],
                data: l.bias.clone(),
            },
        ]
    });
    convs.chain(layers).collect()
}

/// Reads back what [`layer_tensors`] wrote, for a network of `shapes`.
pub(crate) fn network_from(
    tensors: &mut HashMap<String, Named>,
    prefix: &str,
    shapes: &Shapes,
    activation: &str,
) -> Result<Network> {
    let convs = shapes
        .convs
        .iter()
        .enumerate()
        .map(|(i, &(outputs, inputs, kernel))| {
            Ok(Conv {
                inputs,
                outputs,
                kernel,
                weight: weights::take(
                    tensors,
                    &format!("{prefix}.conv.{i}.weight"),
                    &[outputs, inputs, kernel, kernel],
                )?,
                bias: weights::take(tensors, &format!("{prefix}.conv.{i}.bias"), &[outputs])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let layers = shapes
        .layers
        .iter()
        .enumerate()
        .map(|(i, &(outputs, inputs))| {
            Ok(Layer {
                inputs,
                outputs,
                weight: weights::take(
                    tensors,
                    &format!("{prefix}.{i}.weight"),
                    &[outputs, inputs],
                )?,
                bias: weights::take(tensors, &format!("{prefix}.{i}.bias"), &[outputs])?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Network {
        convs,
        image: shapes.image,
        layers,
        activation: activation.to_owned(),
    })
}

/// Runs `work` on a rayon pool as wide as candle's thread count (`RAYON_NUM_THREADS`, else the
/// cores): candle's parallel loops then start on the training thread itself, rather than handing
/// every operation to a pool thread and waiting for it (1.65x faster on the digit-image CNN).
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(candle_core::utils::get_num_threads())
        .thread_name(|i| format!("maas-train-{i}"))
        .build()
        .map_err(|e| Error::internal(format!("cannot start the training threads: {e}")))?;
    Ok(pool.install(work))
}

/// Cleans, splits, fits the transform, trains and evaluates on the test split.
/// `on_epoch` sees each epoch's figures and returns false to stop the run (cancel).
pub fn fit(
    table: &Table,
    profile: &Profile,
    spec: &TrainSpec,
    on_epoch: &mut (dyn FnMut(&EpochStats) -> bool + Send),
) -> Result<Outcome> {
    on_pool(move || {
        let mut trainer = Trainer::new(table, profile, spec)?;
        while let Some(stats) = trainer.next_epoch()? {
            if !on_epoch(&stats) {
                return Err(Error::new(
                    maas_core::ErrorKind::Conflict,
                    format!("the run was cancelled in epoch {}", stats.epoch),
                ));
            }
        }
        trainer.finish()
    })?
}

impl Mlp {
    fn from_network(net: &Network) -> Result<Mlp> {
        let dev = Device::Cpu;
        let activation = if net.activation == "tanh" {
            Activation::Tanh
        } else {
            Activation::Relu
        };
        let convs = net
            .convs
            .iter()
            .map(|c| {
                let k = c.kernel;
                let w = Tensor::from_vec(c.weight.clone(), (c.outputs, c.inputs, k, k), &dev)?;
                Ok((Var::from_tensor(&w)?, bias_var(c.bias.clone())?))
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(candle_err)?;
        let layers = net
            .layers
            .iter()
            .map(|l| {
                let b = Tensor::from_vec(l.bias.clone(), l.outputs, &dev)?;
                Ok((
                    weight_var(l.weight.clone(), l.outputs, l.inputs)?,
                    Var::from_tensor(&b)?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(candle_err)?;
        Ok(Mlp {
            convs,
            image: net.image,
            layers,
            activation,
        })
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
    let width = match (net.image, net.convs.is_empty()) {
        (Some((channels, side)), false) => channels * side * side,
        _ => net.layers.first().map(|l| l.inputs).unwrap_or(0),
    };
    let out = mlp
        .forward(&tensor(x, rows, width)?, None)
        .map_err(candle_err)?;
    out.flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(candle_err)
}
