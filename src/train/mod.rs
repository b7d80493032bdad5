//! The training loop and its run outputs.

pub mod plots;
