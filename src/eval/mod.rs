//! Re-ID evaluation (shared/ALGORITHMS.md section 9): CMC and mAP under the Market-1501 protocol,
//! k-reciprocal re-ranking, and ranked-list pictures. Distances are produced one block of queries
//! at a time and each query is scored from its own row, so nothing query x gallery is held.

pub mod hardness;
pub mod metrics;
pub mod rerank;
pub mod visualize;

pub use metrics::{
    evaluate, evaluate_with, score_query, skip_reasons, top_ranked, EvalError, EvalResult,
    LabeledFeatures, QueryScore, SkipCounts,
};
pub use rerank::{RerankParams, Reranker};
