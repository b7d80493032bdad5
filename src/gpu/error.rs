//! Errors the GPU runtime reports; every one says what to do next where there is something to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found on any backend ({detail}). On Linux without a GPU, install Mesa's software \
         Vulkan driver (`apt-get install mesa-vulkan-drivers`, as root), or run with `--device cpu`"
    )]
    NoAdapter { detail: String },

    #[error(
        "no adapter matches {wanted:?} (from {source_of_choice}); available adapters: {available}"
    )]
    AdapterNotFound {
        wanted: String,
        source_of_choice: String,
        available: String,
    },

    #[error("could not open a device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },

    #[error("out of GPU memory allocating {bytes} bytes for {what}")]
    OutOfMemory { bytes: u64, what: String },

    #[error("{what} needs {bytes} bytes in one buffer but the adapter allows at most {limit}")]
    BufferTooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },

    #[error("invalid GPU option: {0}")]
    InvalidOption(String),

    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    #[error("GPU validation error: {0}")]
    Validation(String),

    #[error("shader {shader:?} (entry {entry:?}) failed to compile: {message}")]
    Shader {
        shader: String,
        entry: String,
        message: String,
    },

    #[error("not supported on this device: {0}")]
    Unsupported(String),

    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),
}
