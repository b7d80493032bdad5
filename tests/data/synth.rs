use super::common::TempDir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use unreid::data::datasets::{load, DatasetSpec, Layout};
use unreid::data::synth::{
    generate, plan_domain, write_benchmark, Domain, SynthConfig, SynthSplit,
};
use unreid::eval::hardness::measure_hardness;

fn small() -> SynthConfig {
    SynthConfig {
        seed: 7,
        ids: 8,
        cameras: 3,
        height: 64,
        width: 32,
        ..SynthConfig::default()
    }
}

fn read_tree(root: &std::path::Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn same_seed_same_bytes_and_a_new_seed_changes_them() {
    let (a, b) = (TempDir::new("synth-a"), TempDir::new("synth-b"));
    let cfg = small();
    let n = write_benchmark(&cfg, a.path(), false, &|| {}).unwrap();
    // A different thread count must not change a byte: every image has its own keyed generator.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| write_benchmark(&cfg, b.path(), false, &|| {}))
        .unwrap();
    let (ta, tb) = (read_tree(a.path()), read_tree(b.path()));
    assert_eq!(ta.len(), n + 1, "images + synth.json");
    assert_eq!(ta, tb);
    let other = generate(
        &SynthConfig {
            seed: 8,
            ..cfg.clone()
        },
        &|| {},
    )
    .unwrap();
    let same_seed = generate(&cfg, &|| {}).unwrap();
    let identical = other
        .iter()
        .zip(&same_seed)
        .filter(|(x, y)| x.1 == y.1)
        .count();
    assert!(
        identical < other.len().min(same_seed.len()) / 10,
        "{identical} identical images"
    );
    // Refuses to overwrite without --overwrite, replaces with it.
    let err = write_benchmark(&cfg, a.path(), false, &|| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source") && err.contains("--overwrite"),
        "{err}"
    );
    write_benchmark(&cfg, a.path(), true, &|| {}).unwrap();
    assert_eq!(read_tree(a.path()), tb);
}

#[test]
fn both_domains_load_with_the_market_loader() {
    let tmp = TempDir::new("synth-load");
    let cfg = small();
    write_benchmark(&cfg, tmp.path(), false, &|| {}).unwrap();
    for domain in Domain::BOTH {
        let plan = plan_domain(&cfg, domain);
        let ds = load(&DatasetSpec::new(
            tmp.path().join(domain.dir_name()),
            Layout::Auto,
        ))
        .unwrap();
        assert_eq!(ds.layout, Layout::Market1501);
        assert_eq!(ds.num_train_pids, cfg.ids / 2);
        let count = |s: SynthSplit| plan.iter().filter(|p| p.split == s && p.pid >= 0).count();
        assert_eq!(ds.train.len(), count(SynthSplit::Train));
        assert_eq!(ds.query.len(), count(SynthSplit::Query));
        assert_eq!(
            ds.gallery.len(),
            count(SynthSplit::Gallery),
            "junk (-1) dropped, distractors kept"
        );
        assert!(
            ds.gallery.iter().any(|g| g.pid == 0),
            "Market-style distractors"
        );
        assert!(plan.iter().any(|p| p.pid == -1), "junk crops are written");
        // Every query has a same-identity gallery image in another camera (a valid Market query).
        for q in &ds.query {
            assert!(
                ds.gallery
                    .iter()
                    .any(|g| g.pid == q.pid && g.camid != q.camid),
                "{:?}",
                q.path
            );
        }
        // Train and test identities are disjoint.
        let train_raw: std::collections::HashSet<i32> =
            ds.train.iter().map(|t| t.raw_pid).collect();
        assert!(ds.query.iter().all(|q| !train_raw.contains(&q.pid)));
        let first = &ds.train[0];
        let img = unreid::data::decode::decode_rgb(&first.path).unwrap();
        assert_eq!((img.height(), img.width()), (64, 32));
    }
}

/// The benchmark is neither trivial nor hopeless for colour histograms within a domain, the domains are
/// statistically distinct, and a metric learned on the source helps the source more than the target.
#[test]
fn domain_gap_statistics() {
    let cfg = SynthConfig {
        seed: 3,
        ids: 40,
        cameras: 4,
        height: 64,
        width: 32,
        ..SynthConfig::default()
    };
    let r = measure_hardness(&cfg).unwrap();
    eprintln!("{r:?}");
    for (name, (map, _)) in [
        ("source", r.source),
        ("target", r.target),
        ("source metric", r.source_with_source_metric),
    ] {
        assert!(map > 0.05 && map < 0.9, "{name} mAP {map}");
    }
    assert!(
        r.domain_accuracy > 0.9,
        "domains must differ systematically: {}",
        r.domain_accuracy
    );
    assert!(
        r.source.0 > r.target.0,
        "the target is the harder domain: {r:?}"
    );
    let source_gain = r.source_with_source_metric.0 - r.source.0;
    let target_gain = r.target_with_source_metric.0 - r.target.0;
    assert!(
        source_gain > target_gain,
        "a source-learned metric transfers worse to the target: {r:?}"
    );
    assert!(
        r.target_with_target_metric.0 > r.target_with_source_metric.0,
        "on the target, a metric learned there beats one learned on the source: {r:?}"
    );
}
