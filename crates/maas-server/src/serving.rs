//! A version's serving settings, given at pull time (`maas pull … --serving FILE.toml`) and kept
//! in its metadata under `serving`: image preprocessing, class labels, which output holds the
//! scores, and dynamic batching. They are checked against the model's signature before anything
//! is registered, so a model that would fail on its first image is refused at pull.

use maas_core::{Error, Result};
use maas_engine::vision::{Channels, Filter, ImagePreprocess, Layout, Resize};
use maas_engine::Signature;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Serving settings of a version.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    /// Class names, in the order of the scores output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// The output holding the class scores (default: the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Apply softmax to the scores (for models that output logits).
    #[serde(default)]
    pub softmax: bool,
    /// How an image becomes the model's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessConfig>,
    /// Dynamic batching of this version's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchingConfig>,
}

/// Image preprocessing.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// The image input (default: the first input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// A number: the shorter side, aspect kept; `[width, height]`: exactly that size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub resize: Option<Size>,
    /// `[width, height]` (or one number for a square) cut from the centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub crop: Option<Size>,
    /// `nearest`, `bilinear` (default), `bicubic` or `lanczos`.
    #[serde(default = "bilinear")]
    pub filter: String,
    /// `RGB` (default) or `BGR`.
    #[serde(default = "rgb")]
    pub channels: String,
    /// `NCHW` or `NHWC`; by default, what the input's shape says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Pixels 0–255 become 0–`pixel_range` before mean and std (255 keeps them; 1 gives 0–1).
    #[serde(default = "full_range")]
    pub pixel_range: f32,
    /// Per channel, in the model's channel order.
    #[serde(default)]
    pub mean: [f32; 3],
    /// Per channel, in the model's channel order.
    #[serde(default = "unit")]
    pub std: [f32; 3],
}

/// One number or a pair.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Size {
    /// One side.
    One(u32),
    /// Width and height.
    Two([u32; 2]),
}

/// Dynamic batching.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most rows in one run (1 turns batching off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    /// Longest a request waits for others to join it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u32>,
}

fn bilinear() -> String {
    "bilinear".to_owned()
}
fn rgb() -> String {
    "RGB".to_owned()
}
fn full_range() -> f32 {
    255.0
}
fn unit() -> [f32; 3] {
    [1.0; 3]
}

fn bad(m: impl Into<String>) -> Error {
    Error::invalid(format!("serving: {}", m.into()))
}

impl PreprocessConfig {
    /// The engine's preprocessing for an input of `shape` (-1 for dynamic dims).
    pub fn to_engine(&self, shape: &[i64]) -> Result<ImagePreprocess> {
        let layout = match self
            .layout
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("NHWC") => Layout::Nhwc,
            Some("NCHW") => Layout::Nchw,
            Some(other) => return Err(bad(format!("layout must be NHWC or NCHW, got '{other}'"))),
            None => match shape {
                [_, 3, _, _] => Layout::Nchw,
                [_, _, _, 3] => Layout::Nhwc,
                _ => {
                    return Err(bad(format!(
                        "cannot tell the layout from the input shape {shape:?}; set layout"
                    )))
                }
            },
        };
        let channels = match self.channels.to_ascii_uppercase().as_str() {
            "RGB" => Channels::Rgb,
            "BGR" => Channels::Bgr,
            other => return Err(bad(format!("channels must be RGB or BGR, got '{other}'"))),
        };
        let filter = match self.filter.to_ascii_lowercase().as_str() {
            "nearest" => Filter::Nearest,
            "bilinear" | "linear" | "triangle" => Filter::Bilinear,
            "bicubic" | "cubic" => Filter::Bicubic,
            "lanczos" => Filter::Lanczos,
            other => {
                return Err(bad(format!(
                    "filter must be nearest, bilinear, bicubic or lanczos, got '{other}'"
                )))
            }
        };
        let positive = |what: &str, v: u32| {
            if v == 0 {
                Err(bad(format!("{what} must be positive")))
            } else {
                Ok(v)
            }
        };
        let resize = match self.resize {
            None => Resize::None,
            Some(Size::One(s)) => Resize::Shorter(positive("resize", s)?),
            Some(Size::Two([w, h])) => {
                Resize::Exact(positive("resize", w)?, positive("resize", h)?)
            }
        };
        let crop = match self.crop {
            None => None,
            Some(Size::One(s)) => Some((positive("crop", s)?, s)),
            Some(Size::Two([w, h])) => Some((positive("crop", w)?, positive("crop", h)?)),
        };
        if !(self.pixel_range.is_finite() && self.pixel_range > 0.0) {
            return Err(bad("pixel_range must be a positive number"));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(bad("mean must be finite and std finite and non-zero"));
        }
        Ok(ImagePreprocess {
            resize,
            crop,
            filter,
            channels,
            layout,
            pixel_range: self.pixel_range,
            mean: self.mean,
            std: self.std,
        })
    }
}

/// An image model's settings, resolved against its signature.
pub struct ImageModel {
    /// The input the image goes to.
    pub input: String,
    /// How it is prepared.
    pub preprocess: ImagePreprocess,
    /// The output with the scores.
    pub output: String,
    /// Class names, one per score.
    pub labels: Option<Vec<String>>,
    /// Softmax the scores first.
    pub softmax: bool,
}

impl ServingConfig {
    /// Checks the settings against `signature` and resolves what an image request needs; None
    /// when there is no preprocessing (not an image model).
    pub fn image_model(&self, signature: &Signature) -> Result<Option<ImageModel>> {
        let Some(p) = &self.preprocess else {
            return Ok(None);
        };
        let input = match &p.input {
            Some(name) => signature
                .inputs
                .iter()
                .find(|i| &i.name == name)
                .ok_or_else(|| bad(format!("the model has no input '{name}'")))?,
            None => signature
                .inputs
                .first()
                .ok_or_else(|| bad("the model has no inputs"))?,
        };
        if input.datatype != "FP32" || input.shape.len() != 4 {
            return Err(bad(format!(
                "input '{}' is {} {:?}; image preprocessing feeds a 4-dimensional FP32 input",
                input.name, input.datatype, input.shape
            )));
        }
        let engine = p.to_engine(&input.shape)?;
        let fixed = |d: i64| (d >= 0).then_some(d as u32);
        let (want_w, want_h) = match engine.layout {
            Layout::Nhwc => (fixed(input.shape[2]), fixed(input.shape[1])),
            Layout::Nchw => (fixed(input.shape[3]), fixed(input.shape[2])),
        };
        let channel_dim = match engine.layout {
            Layout::Nhwc => input.shape[3],
            Layout::Nchw => input.shape[1],
        };
        if channel_dim >= 0 && channel_dim != 3 {
            return Err(bad(format!(
                "input '{}' has {channel_dim} channels where the {:?} layout puts them; images have 3",
                input.name, engine.layout
            )));
        }
        if want_w.is_some() || want_h.is_some() {
            let Some((w, h)) = engine.output_size() else {
                return Err(bad(format!(
                    "input '{}' takes a fixed size {:?}; set crop (or resize to [width, height])",
                    input.name, input.shape
                )));
            };
            if want_w.is_some_and(|x| x != w) || want_h.is_some_and(|x| x != h) {
                return Err(bad(format!(
                    "the preprocessing makes {w}×{h} images but input '{}' has shape {:?}",
                    input.name, input.shape
                )));
            }
        }
        let output = match &self.output {
            Some(name) => signature
                .outputs
                .iter()
                .find(|o| &o.name == name)
                .ok_or_else(|| bad(format!("the model has no output '{name}'")))?,
            None => signature
                .outputs
                .first()
                .ok_or_else(|| bad("the model has no outputs"))?,
        };
        if let (Some(labels), Some(classes)) = (&self.labels, output.shape.last()) {
            if *classes >= 0 && labels.len() as i64 != *classes {
                return Err(bad(format!(
                    "{} labels given but output '{}' has {classes} scores",
                    labels.len(),
                    output.name
                )));
            }
        }
        Ok(Some(ImageModel {
            input: input.name.clone(),
            preprocess: engine,
            output: output.name.clone(),
            labels: self.labels.clone(),
            softmax: self.softmax,
        }))
    }

    /// Checks the settings of a version whose signature is `signature` (None: no tensors).
    pub fn check(&self, signature: Option<&Signature>) -> Result<()> {
        if let Some(b) = &self.batching {
            if b.max_batch_size == Some(0) {
                return Err(bad("batching.max_batch_size must be at least 1"));
            }
            if b.max_delay_ms.is_some_and(|ms| ms > 10_000) {
                return Err(bad("batching.max_delay_ms must be at most 10000"));
            }
        }
        match signature {
            Some(sig) => self.image_model(sig).map(|_| ()),
            None if self.preprocess.is_some() || self.labels.is_some() => Err(bad(
                "preprocess and labels need a tensor model (ONNX), and this one is not",
            )),
            None => Ok(()),
        }
    }
}

/// The signature kept in a version's metadata.
/// A signature as version metadata keeps it (`metadata.signature`), for the Open Inference
/// Protocol's model metadata and for checks before a model is loaded.
pub fn signature_to_metadata(signature: &Signature) -> serde_json::Value {
    let tensors = |specs: &[maas_engine::TensorSpec]| -> serde_json::Value {
        specs
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect()
    };
    serde_json::json!({
        "inputs": tensors(&signature.inputs),
        "outputs": tensors(&signature.outputs),
        "optimizer_error": signature.optimizer_error,
    })
}

/// Reads back what [`signature_to_metadata`] wrote (`metadata.signature`).
pub fn signature_from_metadata(metadata: &serde_json::Value) -> Option<Signature> {
    let sig = metadata.get("signature")?;
    let specs = |key: &str| -> Option<Vec<maas_engine::TensorSpec>> {
        sig.get(key)?
            .as_array()?
            .iter()
            .map(|t| {
                Some(maas_engine::TensorSpec {
                    name: t.get("name")?.as_str()?.to_owned(),
                    datatype: t.get("datatype")?.as_str()?.to_owned(),
                    shape: t
                        .get("shape")?
                        .as_array()?
                        .iter()
                        .map(|d| d.as_i64())
                        .collect::<Option<Vec<_>>>()?,
                })
            })
            .collect()
    };
    Some(Signature {
        inputs: specs("inputs")?,
        outputs: specs("outputs")?,
        optimizer_error: sig
            .get("optimizer_error")
            .and_then(|e| e.as_str())
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_engine::TensorSpec;

    fn nsfw() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input:0".to_owned(),
                datatype: "FP32".to_owned(),
                shape: vec![-1, 224, 224, 3],
            }],
            outputs: vec![TensorSpec {
                name: "outputs".to_owned(),
                datatype: "FP32".to_owned(),
                shape: vec![-1, 2],
            }],
            optimizer_error: None,
        }
    }

    fn config(toml_like: serde_json::Value) -> ServingConfig {
        serde_json::from_value(toml_like).unwrap()
    }

    #[test]
    fn settings_that_fit_the_signature_resolve() {
        let c = config(serde_json::json!({
            "labels": ["sfw", "nsfw"],
            "preprocess": {"resize": [256, 256], "crop": 224, "channels": "BGR", "mean": [104, 117, 123]}
        }));
        let m = c.image_model(&nsfw()).unwrap().unwrap();
        assert_eq!(m.input, "input:0");
        assert_eq!(m.output, "outputs");
        assert_eq!(m.preprocess.layout, Layout::Nhwc);
        assert_eq!(m.preprocess.crop, Some((224, 224)));
    }

    #[test]
    fn settings_that_do_not_fit_are_named() {
        let err = |v: serde_json::Value| config(v).check(Some(&nsfw())).unwrap_err().message;
        assert_eq!(
            err(serde_json::json!({"labels": ["a", "b", "c"], "preprocess": {"crop": 224}})),
            "serving: 3 labels given but output 'outputs' has 2 scores"
        );
        assert_eq!(
            err(serde_json::json!({"preprocess": {"crop": 200}})),
            "serving: the preprocessing makes 200×200 images but input 'input:0' has shape [-1, 224, 224, 3]"
        );
        assert!(
            err(serde_json::json!({"preprocess": {"crop": 224, "channels": "RGBA"}}))
                .contains("channels must be RGB or BGR")
        );
        assert!(err(serde_json::json!({"preprocess": {"resize": 256}})).contains("set crop"));
        assert!(err(serde_json::json!({"batching": {"max_batch_size": 0}})).contains("at least 1"));
        assert!(config(serde_json::json!({"labels": ["a"]}))
            .check(None)
            .is_err());
    }
}
