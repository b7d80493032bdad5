//! The crate's error type: every failure names the op, tensor or setting at fault.

use crate::gpu::GpuError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Gpu(#[from] GpuError),

    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    #[error("{op}: expected a {expected:?} tensor, got {got:?}")]
    DType {
        op: &'static str,
        expected: crate::DType,
        got: crate::DType,
    },

    #[error("{op}: operands live on different devices ({a} and {b})")]
    DeviceMismatch {
        op: &'static str,
        a: String,
        b: String,
    },

    #[error("autograd: {0}")]
    Autograd(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(op: &'static str, message: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        message: message.into(),
    })
}
