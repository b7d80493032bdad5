//! Data: re-ID datasets in their usual layouts, the synthetic two-domain benchmark, augmentation, the PK
//! sampler and the background loader that turns sampled indices into normalised NCHW host batches.
//!
//! Flow: `datasets::load` -> items (path, pid, camid, domain) -> `sampler::PkSampler::epoch_batches` (indices)
//! -> `loader::Loader` (decode + `transforms` in a rayon pool, bounded prefetch) -> `loader::HostBatch`.

pub mod datasets;
pub mod decode;
pub mod hardness;
pub mod loader;
pub mod sampler;
pub mod synth;
pub mod transforms;

pub use datasets::{DataError, DatasetSpec, Layout, ListFiles, ReidDataset, ReidItem};
pub use loader::{HostBatch, Loader, LoaderConfig, LoaderStats};
pub use sampler::PkSampler;
pub use transforms::{AugmentConfig, Interpolation, SampleKey};
