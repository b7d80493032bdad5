//! Training: one loop (`loop.rs`) and one file per method over it.
//!
//! The loop owns everything a method does not care about: seeds, loaders and PK samplers, the
//! relabel cadence, the finite-loss check, backward, the optimiser and its lr schedule,
//! evaluation, checkpoints, metrics, plots and progress. A method implements [`Method`]: it builds
//! its models (parameters by name), relabels at the start of every epoch (extract -> cluster ->
//! memories / classifiers / the items to sample), returns the named loss terms of one step, and
//! updates its memories or mean nets after the optimiser. Nothing below `train/` knows which
//! method runs (shared/DESIGN.md, "Training").

pub mod cluster_contrast;
pub mod config;
pub mod evaluate;
pub mod ise;
pub mod methods;
pub mod mmt;
pub mod plots;
pub mod proda;
pub mod run_dir;
#[path = "loop.rs"]
pub mod run_loop;
pub mod source;
pub mod spcl;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::data::ReidItem;
use crate::nn::{Ctx, Param, ReidNet};
use crate::Tensor;

pub use config::{DataConfig, ModelConfig, RunConfig, ScheduleConfig};
pub use evaluate::{evaluate_model, EvalData};
pub use methods::{build_method, method_defaults, METHODS};
pub use run_dir::RunDir;
pub use run_loop::{train, TrainOptions, TrainSummary};

/// Errors of a training run; each names the setting, file, loss term or step at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("run directory {path}: {message}")]
    RunDir { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// metrics.jsonl unreadable, or a plot that could not be drawn or written.
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Sampler(#[from] crate::data::sampler::SamplerError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Extract(#[from] crate::nn::ExtractError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Tensor(#[from] crate::Error),
    #[error("loss term {term:?} is {value} at epoch {epoch}, step {step} (iteration {iter} of the epoch); the run stops here and the last checkpoint (end of the previous epoch) is intact")]
    NonFinite {
        term: String,
        value: f32,
        epoch: usize,
        iter: usize,
        step: u64,
    },
    #[error("{0}")]
    Method(String),
}

/// One stream of PK batches of an epoch: the loop draws one batch from every stream per step and
/// concatenates them in order (SpCL UDA: source then target, each its own BN domain).
#[derive(Clone, Debug)]
pub struct Stream {
    /// What the stream is ("source", "target"), for logs.
    pub name: String,
    /// The items, with `pid` = the label the PK sampler groups by (source ids, pseudo labels);
    /// items with a negative pid are never sampled (outliers).
    pub items: Arc<Vec<ReidItem>>,
    /// BN domain of these images (0 without DSBN).
    pub domain: usize,
    pub batch_size: usize,
    pub num_instances: usize,
    /// MMT: a second, independent augmentation of every image.
    pub two_views: bool,
}

/// What a method decides at the start of an epoch.
#[derive(Clone, Debug, Default)]
pub struct EpochPlan {
    pub streams: Vec<Stream>,
    /// Numbers to log for this relabelling (clusters, outliers, kept samples, NMI/ARI ...).
    pub record: serde_json::Map<String, serde_json::Value>,
    /// Forget the optimiser's moments before this epoch (MMT, after overwriting classifiers).
    pub reset_optimizer: bool,
}

/// One training step's batch on the device.
pub struct TrainBatch {
    /// [B, 3, H, W] normalised images, the streams' batches concatenated.
    pub images: Tensor,
    /// MMT's second view (same shape) when a stream asked for it.
    pub second_view: Option<Tensor>,
    /// Per row: the stream's label (pid / pseudo label).
    pub labels: Vec<i32>,
    /// Per row: the index of the image in its stream's `items`.
    pub indices: Vec<usize>,
    /// Rows of each stream, in order.
    pub ranges: Vec<std::ops::Range<usize>>,
    /// The forward context: training mode, BN groups (per domain, `bn_group` images each) and the
    /// dropout seed of this step.
    pub ctx: Ctx,
    pub epoch: usize,
    /// Iteration within the epoch.
    pub iter: usize,
    /// Global step (epoch * iters + iter).
    pub step: u64,
}

/// What every method shares with the loop: the device, the data, the configuration.
pub struct Session {
    pub device: crate::Device,
    pub config: RunConfig,
    /// Labelled source dataset (train split relabelled 0..C-1), when the run has one.
    pub source: Option<Arc<crate::data::ReidDataset>>,
    /// Target dataset (train split unlabelled for training; query/gallery for evaluation).
    pub target: Option<Arc<crate::data::ReidDataset>>,
    /// Lines the method wants in the log (printed and written to train.log by the loop).
    pub log: std::sync::Mutex<Vec<String>>,
    /// Seconds per named stage of the current relabelling ([`Session::timed`]), collected by the
    /// loop after every relabel.
    stages: std::sync::Mutex<BTreeMap<String, f64>>,
}

/// Stage names of [`Session::timed`]: feature extraction and clustering inside a relabelling. The
/// loop itself times the whole relabelling, the training iterations, evaluation and checkpoints
/// (`"kind":"timing"` records of metrics.jsonl, `stage_seconds` of summary.json).
pub const STAGE_EXTRACT: &str = "extract";
pub const STAGE_CLUSTER: &str = "cluster";

impl Session {
    pub fn new(
        device: crate::Device,
        config: RunConfig,
        source: Option<Arc<crate::data::ReidDataset>>,
        target: Option<Arc<crate::data::ReidDataset>>,
    ) -> Session {
        Session {
            device,
            config,
            source,
            target,
            log: Default::default(),
            stages: Default::default(),
        }
    }

    /// Runs `f` and adds its wall time (seconds) to `stage` ([`STAGE_EXTRACT`], [`STAGE_CLUSTER`]):
    /// the one way a method reports where its relabelling time goes.
    pub fn timed<R>(&self, stage: &str, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let out = f();
        let seconds = start.elapsed().as_secs_f64();
        // A poisoned lock still holds the sums: a panic elsewhere does not lose them.
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        *stages.entry(stage.to_string()).or_default() += seconds;
        out
    }

    /// The stage times gathered since the last call (seconds per stage name), cleared.
    pub fn take_stage_seconds(&self) -> BTreeMap<String, f64> {
        std::mem::take(&mut *self.stages.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Queues a line for the console and train.log.
    pub fn say(&self, line: impl Into<String>) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line.into());
        }
    }

    /// Where clustering runs: the GPU for a real adapter, the CPU GEMM path otherwise.
    pub fn cluster_backend(&self) -> crate::cluster::Backend {
        crate::cluster::Backend::from_device(&self.device)
    }
}

/// Adds the pseudo labels' quality against the ground-truth ids to a relabel record, under the
/// keys every method logs and `curves.png` plots: `nmi`, `ari`, `pairwise_precision`,
/// `pairwise_recall`, `pairwise_f`.
pub(crate) fn record_label_quality(
    record: &mut serde_json::Map<String, serde_json::Value>,
    q: &crate::cluster::LabelQuality,
) {
    for (k, v) in [
        ("nmi", q.nmi),
        ("ari", q.ari),
        ("pairwise_precision", q.pairwise_precision),
        ("pairwise_recall", q.pairwise_recall),
        ("pairwise_f", q.pairwise_f),
    ] {
        record.insert(k.into(), v.into());
    }
}

/// A training method over the shared loop.
pub trait Method {
    /// The name users type (`--method source`).
    fn name(&self) -> &'static str;

    /// Called at the start of every epoch (also the first): pseudo-labelling, memory and
    /// classifier set-up. Returns the batch streams of the epoch.
    fn relabel(&mut self, session: &Session, epoch: usize) -> Result<EpochPlan, TrainError>;

    /// The named loss terms of one step, already weighted: the loop sums them, checks each is
    /// finite, runs backward and the optimiser.
    fn losses(
        &mut self,
        session: &Session,
        batch: &TrainBatch,
    ) -> Result<Vec<(String, Tensor)>, TrainError>;

    /// Updates after the optimiser step (memories, mean nets). Default: nothing.
    fn after_step(&mut self, _session: &Session, _batch: &TrainBatch) -> Result<(), TrainError> {
        Ok(())
    }

    /// Images one training forward pass holds when every stream draws `batch_size` images (the
    /// streams of a step are concatenated into one batch: SpCL UDA's source and target make
    /// twice the batch). The loop checks the models fit the adapter's binding limit at this size
    /// before the first step. Default: `batch_size` (one stream).
    fn images_per_forward(&self, batch_size: usize) -> usize {
        batch_size
    }

    /// The parameters the optimiser updates, with names unique across the method's models.
    fn trainable(&self) -> Vec<(String, &Param)>;

    /// Every model of the method by name (all are checkpointed for resume).
    fn models(&self) -> Vec<(String, &ReidNet)>;

    /// The models evaluated on the target, with the BN domain to evaluate with; the loop keeps
    /// the best of them as the run's result (MMT evaluates both mean nets).
    fn eval_models(&self) -> Vec<(String, &ReidNet, usize)>;

    /// Method state beyond the models (memories, thresholds) for checkpoints: tensors by name
    /// and a JSON object.
    fn state(&self) -> Result<(Vec<(String, Tensor)>, serde_json::Value), TrainError> {
        Ok((Vec::new(), serde_json::Value::Null))
    }

    /// Restores what `state` returned.
    fn load_state(
        &mut self,
        _tensors: &std::collections::BTreeMap<String, Tensor>,
        _meta: &serde_json::Value,
    ) -> Result<(), TrainError> {
        Ok(())
    }
}
