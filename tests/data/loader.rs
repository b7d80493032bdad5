use super::common::{touch_images, TempDir};
use std::sync::Arc;
use unreid::data::datasets::{load, DatasetSpec, Layout};
use unreid::data::loader::{load_batch, sequential_batches, Loader, LoaderConfig, LoaderStats};
use unreid::data::transforms::AugmentConfig;

fn fixture(tmp: &TempDir) -> Vec<unreid::data::ReidItem> {
    let files: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "bounding_box_train/{:04}_c{}s1_{:06}_01.jpg",
                1 + i / 3,
                1 + i % 3,
                i
            )
        })
        .chain([
            "query/0001_c1s1_000001_00.jpg".into(),
            "bounding_box_test/0001_c2s1_000001_00.jpg".into(),
        ])
        .collect();
    let refs: Vec<&str> = files.iter().map(|s| s.as_str()).collect();
    touch_images(tmp.path(), &refs);
    load(&DatasetSpec::new(tmp.path(), Layout::Market1501))
        .unwrap()
        .train
}

#[test]
fn background_loader_matches_synchronous_batches() {
    let tmp = TempDir::new("loader");
    let items = Arc::new(fixture(&tmp));
    let cfg = LoaderConfig {
        two_views: true,
        prefetch: 1,
        ..LoaderConfig::new(AugmentConfig::train(32, 16), 5)
    };
    let batches = vec![vec![0, 3, 6, 9], vec![1, 4, 7, 10], vec![2, 5, 8, 11]];
    let stats = Arc::new(LoaderStats::default());
    let loader = Loader::spawn(
        Arc::clone(&items),
        batches.clone(),
        3,
        cfg.clone(),
        None,
        Arc::clone(&stats),
    );
    let got: Vec<_> = loader.collect();
    assert_eq!(got.len(), 3);
    for (step, (batch, planned)) in got.iter().zip(&batches).enumerate() {
        assert_eq!(batch.step, step);
        assert_eq!(batch.shape, [4, 3, 32, 16]);
        assert_eq!(batch.images.len(), 4 * 3 * 32 * 16);
        assert_eq!(&batch.indices, planned);
        assert_eq!(
            batch.pids,
            planned.iter().map(|&i| items[i].pid).collect::<Vec<_>>()
        );
        assert_eq!(
            batch.camids,
            planned.iter().map(|&i| items[i].camid).collect::<Vec<_>>()
        );
        let again = load_batch(&items, planned, 3, step, &cfg, &LoaderStats::default());
        assert_eq!(*batch, again, "same (seed, epoch, position) -> same batch");
        let second = batch.second_view.as_ref().expect("two views requested");
        assert_ne!(
            &batch.images, second,
            "MMT's two views are independent augmentations"
        );
    }
    assert_eq!(stats.skipped(), 0);
    // Another epoch changes the augmentation.
    let other = load_batch(&items, &batches[0], 4, 0, &cfg, &LoaderStats::default());
    assert_ne!(other.images, got[0].images);
}

#[test]
fn unreadable_images_are_skipped_counted_and_never_stop_the_epoch() {
    let tmp = TempDir::new("loader-bad");
    let items = Arc::new(fixture(&tmp));
    let bytes = std::fs::read(&items[4].path).unwrap();
    std::fs::write(&items[4].path, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(&items[7].path).unwrap();
    let cfg = LoaderConfig::new(AugmentConfig::eval(32, 16), 0);
    let stats = Arc::new(LoaderStats::default());
    let batches = sequential_batches(items.len(), 5);
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![5, 5, 2]
    );
    let loader = Loader::spawn(
        Arc::clone(&items),
        batches.clone(),
        0,
        cfg.clone(),
        None,
        Arc::clone(&stats),
    );
    let got: Vec<_> = loader.collect();
    assert_eq!(got.len(), 3, "the epoch completes");
    assert_eq!(got[0].shape[0], 4);
    assert!(!got[0].indices.contains(&4));
    assert_eq!(got[1].shape[0], 4);
    assert!(!got[1].indices.contains(&7));
    assert_eq!(got[2].shape[0], 2);
    assert_eq!(got[0].images.len(), 4 * 3 * 32 * 16);
    assert_eq!(stats.skipped(), 2);
    // A second epoch counts the occurrences again, but the set of bad files stays two.
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let _: Vec<_> = Loader::spawn(
        Arc::clone(&items),
        batches,
        1,
        cfg,
        Some(pool),
        Arc::clone(&stats),
    )
    .collect();
    assert_eq!(stats.skipped(), 4);
    assert_eq!(
        stats.bad_files(),
        vec![items[4].path.clone(), items[7].path.clone()]
    );
}

#[test]
fn dropping_a_loader_early_stops_its_thread() {
    let tmp = TempDir::new("loader-drop");
    let items = Arc::new(fixture(&tmp));
    let batches: Vec<Vec<usize>> = (0..50).map(|i| vec![i % 12]).collect();
    let cfg = LoaderConfig::new(AugmentConfig::eval(16, 8), 0);
    let mut loader = Loader::spawn(
        items,
        batches,
        0,
        cfg,
        None,
        Arc::new(LoaderStats::default()),
    );
    assert!(loader.next().is_some());
    drop(loader); // must return (joins the worker blocked on the full queue)
}

#[test]
fn a_host_batch_uploads_in_one_tensor_per_view() {
    let tmp = TempDir::new("loader-upload");
    let items = fixture(&tmp);
    let cfg = LoaderConfig {
        two_views: true,
        ..LoaderConfig::new(AugmentConfig::train(16, 8), 1)
    };
    let batch = load_batch(&items, &[0, 5, 9], 0, 0, &cfg, &LoaderStats::default());
    let gpu = unreid::Device::gpu()
        .unwrap_or_else(|e| panic!("the GPU upload test needs an adapter: {e}"));
    for device in [unreid::Device::Cpu, gpu] {
        let on_device = batch.upload(&device).unwrap();
        assert_eq!(on_device.images.shape(), &[3, 3, 16, 8]);
        assert_eq!(on_device.images.to_vec().unwrap(), batch.images);
        let second = on_device.second_view.as_ref().unwrap().to_vec().unwrap();
        assert_eq!(second, *batch.second_view.as_ref().unwrap());
        assert_eq!(on_device.pids.to_vec_i32().unwrap(), batch.pids);
        assert_eq!(on_device.indices, vec![0, 5, 9]);
    }
}

#[test]
fn a_pk_epoch_yields_iters_batches_of_k_per_identity() {
    let tmp = TempDir::new("loader-pk");
    let items = Arc::new(fixture(&tmp));
    let sampler = unreid::data::PkSampler::from_items(&items, 2).unwrap();
    let cfg = LoaderConfig::new(AugmentConfig::train(16, 8), 3);
    let stats = Arc::new(LoaderStats::default());
    let loader = Loader::pk_epoch(Arc::clone(&items), &sampler, 0, 5, 4, cfg, None, stats).unwrap();
    let batches: Vec<_> = loader.collect();
    assert_eq!(batches.len(), 5);
    for b in &batches {
        assert_eq!(b.shape, [4, 3, 16, 8]);
        // Two identities, two images each, from different cameras (every fixture identity has 3 cameras).
        assert_eq!(b.pids[0], b.pids[1]);
        assert_eq!(b.pids[2], b.pids[3]);
        assert_ne!(b.camids[0], b.camids[1]);
        assert_ne!(b.camids[2], b.camids[3]);
    }
}
