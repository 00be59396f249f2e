//! The boundary between the server and compute.
//!
//! The server speaks capabilities (generate, embed, infer, transcribe, classify) and never a
//! backend type. Backends (llama.cpp, tract, candle) live in their own crates behind cargo
//! features and implement [`Engine`]; they arrive with the serving issues. The trait is
//! synchronous on purpose: compute runs on backend threads, never on the async runtime.
#![deny(missing_docs)]

use maas_core::{Format, Task};

/// Something a loaded model can do, as the server asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Text generation (chat, completions).
    Generate,
    /// Embeddings.
    Embed,
    /// Tensor in, tensor out (Open Inference Protocol).
    Infer,
    /// Speech to text.
    Transcribe,
    /// Labels with scores.
    Classify,
}

impl Capability {
    /// The capability a task is served through.
    pub fn for_task(task: Task) -> Capability {
        match task {
            Task::TextGeneration => Capability::Generate,
            Task::Embedding => Capability::Embed,
            Task::SpeechToText => Capability::Transcribe,
            Task::ImageClassification | Task::TextClassification | Task::TabularClassification => {
                Capability::Classify
            }
            Task::TabularRegression | Task::Tensor => Capability::Infer,
        }
    }
}

/// A compute backend: decides which artifacts it can load. Loading and running arrive with
/// the first backend.
pub trait Engine: Send + Sync {
    /// A short name for logs and metrics (`llama.cpp`, `tract`, `candle`).
    fn name(&self) -> &'static str;
    /// Whether this backend can serve `task` from weights in `format`.
    fn supports(&self, format: Format, task: Task) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_maps_to_a_capability() {
        for task in Task::ALL {
            let _ = Capability::for_task(*task);
        }
        assert_eq!(Capability::for_task(Task::Embedding), Capability::Embed);
    }
}
