//! Tests of `unreid::data`: dataset layouts and their errors, transforms, the PK sampler, the loader and the
//! synthetic benchmark. One test binary so the crate is linked once.

mod cli;
mod common;
mod datasets;
mod loader;
mod sampler;
mod synth;
mod transforms;
