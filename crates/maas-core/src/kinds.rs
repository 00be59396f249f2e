use std::fmt;
use std::str::FromStr;

use crate::Error;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The value's text form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => {
                        let known: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                        Err(Error::invalid(format!("unknown {} '{s}' (expected one of: {})", $what, known.join(", "))))
                    }
                }
            }
        }
    };
}

text_enum!(
    /// What a model does; the server exposes capabilities by task.
    Task, "task" {
        /// Chat and text completion (LLMs).
        TextGeneration => "text-generation",
        /// Sentence or document embeddings.
        Embedding => "embedding",
        /// Speech to text.
        SpeechToText => "speech-to-text",
        /// Image classification.
        ImageClassification => "image-classification",
        /// Text classification.
        TextClassification => "text-classification",
        /// Classification over tabular features.
        TabularClassification => "tabular-classification",
        /// Regression over tabular features.
        TabularRegression => "tabular-regression",
        /// A generic tensor-in, tensor-out model (Open Inference Protocol).
        Tensor => "tensor",
    }
);

text_enum!(
    /// How a model's weights are stored.
    Format, "format" {
        /// llama.cpp's GGUF file.
        Gguf => "gguf",
        /// A Hugging Face folder with config.json and safetensors weights.
        Safetensors => "safetensors",
        /// An ONNX graph.
        Onnx => "onnx",
        /// A CTranslate2 folder (model.bin + config.json).
        Ctranslate2 => "ctranslate2",
        /// A network trained by maas: one safetensors file whose header holds the architecture
        /// and the fitted preprocessing.
        Maas => "maas",
    }
);

text_enum!(
    /// The element type of the layers' weight matrices when maas converts a model at pull.
    Precision, "weight precision" {
        /// 32-bit floats: the original numbers.
        F32 => "f32",
        /// IEEE half precision.
        F16 => "f16",
        /// bfloat16: half the memory; within cosine 0.99998 of f32 on all-MiniLM-L6-v2. Faster
        /// than f32 where bfloat16 dot products are fast (~1.6x on AMD Zen 4), slower on Intel
        /// Xeons, which run f32 FMAs on two ports and bfloat16 dot products on one.
        BF16 => "bf16",
    }
);

text_enum!(
    /// Where a training run is in its life.
    RunState, "run state" {
        /// Waiting for a training worker.
        Queued => "queued",
        /// Training.
        Running => "running",
        /// Finished; its model version is registered.
        Succeeded => "succeeded",
        /// Stopped by an error; `error` says why. Nothing was registered.
        Failed => "failed",
        /// Stopped on request. Nothing was registered.
        Cancelled => "cancelled",
        /// Cut off by a server stop or crash; resumable from its last checkpoint.
        Interrupted => "interrupted",
    }
);

impl RunState {
    /// Whether the run has ended for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

text_enum!(
    /// What an API key may do. Each role includes the ones below it.
    Role, "role" {
        /// Everything, including keys, deletion and the audit log.
        Admin => "admin",
        /// Pull and register models, move aliases.
        Deployer => "deployer",
        /// Read models and (later) call inference endpoints, possibly scoped to some models.
        Consumer => "consumer",
    }
);

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Admin => 2,
            Role::Deployer => 1,
            Role::Consumer => 0,
        }
    }
    /// Whether a key with this role may do what `required` is needed for.
    pub fn includes(self, required: Role) -> bool {
        self.rank() >= required.rank()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below() {
        assert!(Role::Admin.includes(Role::Deployer));
        assert!(Role::Deployer.includes(Role::Consumer));
        assert!(!Role::Consumer.includes(Role::Deployer));
        assert!(!Role::Deployer.includes(Role::Admin));
    }

    #[test]
    fn unknown_text_names_the_choices() {
        let err = "llm".parse::<Task>().unwrap_err();
        assert!(
            err.message.contains("'llm'") && err.message.contains("text-generation"),
            "{}",
            err.message
        );
        assert_eq!("gguf".parse::<Format>().unwrap(), Format::Gguf);
    }
}
