//! Memory banks: in-place GPU updates vs the sequential reference, centroids, and a tiny training.

mod common;
use unreid::autograd::gradcheck::{assert_close, Input};
use unreid::memory::{class_centroids, ClusterMemory, HybridMemory, MemoryUpdate};
use unreid::ops::memory::update_memory_rows;
use unreid::optim::Adam;
use unreid::{Device, Tensor};

fn normalised(shape: &[usize], seed: u64) -> Input {
    let mut i = Input::randn(shape, seed);
    for row in i.values.chunks_mut(shape[1]) {
        let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    Input::new(i.values, shape)
}

#[test]
fn row_updates_match_the_sequential_reference() {
    // Rows repeat within the batch (order matters for momentum) and D exceeds the workgroup size.
    let rows = [3, 0, 3, 5, 3, 0];
    for mode in [
        MemoryUpdate::Momentum,
        MemoryUpdate::Hard,
        MemoryUpdate::MeanEma,
    ] {
        let (mem, feats) = (normalised(&[7, 300], 1), normalised(&[6, 300], 2));
        let run = |d: &Device| {
            let m = Tensor::from_f64(&mem.values, &mem.shape, d).unwrap();
            let f = Tensor::from_f64(&feats.values, &feats.shape, d).unwrap();
            update_memory_rows(&m, &f, &rows, 0.2, mode)
                .unwrap()
                .to_vec_f64()
                .unwrap()
        };
        let want = run(&Device::CpuF64);
        assert_close(
            &format!("{mode:?} update"),
            &run(&common::gpu()),
            &want,
            1e-5,
            1e-6,
        );
        // Untouched rows keep their values exactly.
        assert_eq!(&want[300..600], &mem.values[300..600]);
    }
}

#[test]
fn momentum_order_matters_and_is_kept() {
    let d = common::gpu();
    let m = Tensor::from_slice(&[1.0, 0.0], &[1, 2], &d).unwrap();
    let f = Tensor::from_slice(&[0.0, 1.0, -1.0, 0.0], &[2, 2], &d).unwrap();
    let out = update_memory_rows(&m, &f, &[0, 0], 0.5, MemoryUpdate::Momentum)
        .unwrap()
        .to_vec()
        .unwrap();
    // Step 1: (0.5, 0.5) -> (0.7071, 0.7071); step 2: (-0.1464, 0.3536) normalised.
    let (x, y) = (0.5f32 * 0.70710677 - 0.5, 0.5f32 * 0.70710677);
    let n = (x * x + y * y).sqrt();
    assert!(
        (out[0] - x / n).abs() < 1e-5 && (out[1] - y / n).abs() < 1e-5,
        "{out:?}"
    );
}

#[test]
fn centroids_are_normalised_class_means_without_outliers() {
    let d = common::gpu();
    let f = Tensor::from_slice(&[1.0, 0.0, 0.0, 1.0, 3.0, 4.0, 9.0, 9.0], &[4, 2], &d).unwrap();
    let c = class_centroids(&f, &[0, 0, 1, -1])
        .unwrap()
        .to_vec()
        .unwrap();
    let s = 0.5f32.sqrt();
    assert_close(
        "centroids",
        &c.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &[s as f64, s as f64, 0.6, 0.8],
        1e-6,
        1e-6,
    );
    let mem =
        ClusterMemory::from_clusters(&f, &[0, 0, 1, -1], 0.1, 0.05, MemoryUpdate::Hard).unwrap();
    assert_eq!(mem.centroids.shape(), &[2, 2]);
}

/// A linear embedding trained with the hybrid memory loss on separable data drives the loss to
/// near zero: the memory, its labels, the loss and the in-place update work together.
#[test]
fn hybrid_memory_training_reaches_near_zero_loss() {
    let d = common::gpu();
    let (classes, per_class, dim_in, dim_out) = (4, 6, 12, 8);
    let n = classes * per_class;
    // Class c's inputs cluster around a random centre.
    let centres = Input::randn(&[classes, dim_in], 3);
    let noise = Input::randn(&[n, dim_in], 4);
    let x: Vec<f32> = (0..n * dim_in)
        .map(|k| {
            (centres.values[(k / dim_in / per_class) * dim_in + k % dim_in] + 0.3 * noise.values[k])
                as f32
        })
        .collect();
    let x = Tensor::from_slice(&x, &[n, dim_in], &d).unwrap();
    let labels: Vec<i32> = (0..n).map(|i| (i / per_class) as i32).collect();
    let rows: Vec<usize> = (0..n).collect();
    let w = unreid::nn::Param::new(Tensor::randn(&[dim_in, dim_out], 0.0, 0.3, 5, &d).unwrap());
    let embed = |w: &Tensor| x.matmul(w).unwrap().l2_normalize(1).unwrap();
    let mut memory = HybridMemory::new(embed(&w.get()).detach(), labels, 0.2, 0.05).unwrap();
    let mut adam = Adam::new(0.05, 0.0);
    let first = memory
        .loss(&embed(&w.get()), &rows)
        .unwrap()
        .item()
        .unwrap();
    let mut last = first;
    for _ in 0..60 {
        let f = embed(&w.get());
        let loss = memory.loss(&f, &rows).unwrap();
        loss.backward().unwrap();
        memory.update(&f, &rows).unwrap();
        unreid::optim::Optimizer::step(&mut adam, &[("w".into(), &w)]).unwrap();
        last = loss.item().unwrap();
    }
    assert!(
        last.is_finite() && last < 0.05,
        "loss went from {first} to {last}"
    );
}
