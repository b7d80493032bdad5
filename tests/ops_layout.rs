// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

//! Layout and index ops: GPU vs the CPU reference (f32 and i32), gradients, bad input.

mod common;
use common::{check, check_on, compare_forward_on};
use unreid::autograd::gradcheck::{Input, TestFn};
use unreid::{Device, Tensor};

/// On the adapter's own kernel shapes and on the GPU shapes (on lavapipe: strided copies in
/// runs of 16 innermost elements, then one element per invocation).
fn both_shapes() -> [Device; 2] {
    [common::gpu(), common::gpu_shaped()]
}

#[test]
fn permute_transpose_reshape() {
    for device in both_shapes() {
        let x = Input::randn(&[2, 3, 4, 5], 1);
        check_on(
            &device,
            "permute",
            &|xs, _| xs[0].permute(&[2, 0, 3, 1]),
            &[x.clone()],
        );
        check_on(
            &device,
            "transpose",
            &|xs, _| xs[0].transpose(1, -1),
            &[x.clone()],
        );
        check_on(
            &device,
            "reshape",
            &|xs, _| xs[0].reshape(&[6, 20])?.transpose(0, 1),
            &[x],
        );
        // Larger than one workgroup and of odd size; innermost runs of 33 (two whole runs of 16
        // and one element) and of 40 read with a stride.
        let y = Input::randn(&[33, 65, 3], 2);
        compare_forward_on(
            &device,
            "permute large",
            &|xs, _| xs[0].permute(&[1, 2, 0]),
            &[y],
            0.0,
            0.0,
        );
        let z = Input::randn(&[3, 37, 40], 7);
        compare_forward_on(
            &device,
            "transpose large",
            &|xs, _| xs[0].transpose(1, 2),
            &[z],
            0.0,
            0.0,
        );
    }
}

#[test]
fn narrow_concat_broadcast() {
    for device in both_shapes() {
        let check = |name: &str, f: &TestFn, inputs: &[Input]| check_on(&device, name, f, inputs);
        let x = Input::randn(&[4, 7, 3], 3);
        check("narrow", &|xs, _| xs[0].narrow(1, 2, 4), &[x.clone()]);
        check(
            "narrow first axis",
            &|xs, _| xs[0].narrow(0, 3, 1),
            &[x.clone()],
        );
        let (a, b) = (Input::randn(&[4, 2, 3], 4), Input::randn(&[4, 5, 3], 5));
        check(
            "concat axis 1",
            &|xs, _| Tensor::concat(&[&xs[0], &xs[1], &xs[0]], 1),
            &[a, b],
        );
        check(
            "concat axis 0",
            &|xs, _| Tensor::concat(&[&xs[0], &xs[0]], 0),
            &[x.clone()],
        );
        check(
            "broadcast_to",
            &|xs, _| xs[0].broadcast_to(&[2, 4, 7, 3]),
            &[x],
        );
        let row = Input::randn(&[1, 5], 6);
        check(
            "broadcast_to rows",
            &|xs, _| xs[0].broadcast_to(&[9, 5]),
            &[row],
        );
        // A broadcast innermost dim (stride 0) of 21 elements, written at an offset by narrow.
        let col = Input::randn(&[5, 1], 8);
        check(
            "broadcast_to columns, narrowed",
            &|xs, _| xs[0].broadcast_to(&[5, 21])?.narrow(1, 3, 17),
            &[col],
        );
        // A single element (every dim of size 1 collapses away).
        let one = Input::randn(&[1, 1, 1], 9);
        check(
            "concat of single elements",
            &|xs, _| Tensor::concat(&[&xs[0], &xs[0]], 1),
            &[one],
        );
    }
}

#[test]
fn integer_tensors_move_through_layout_ops() {
    let g = common::gpu();
    let v: Vec<i32> = (0..24).collect();
    let run = |d: &Device| {
        let t = Tensor::from_i32(&v, &[2, 3, 4], d).unwrap();
        let p = t.permute(&[2, 0, 1]).unwrap();
        let n = p.narrow(0, 1, 2).unwrap();
        let c = Tensor::concat(&[&n, &n], 2).unwrap();
        (c.shape().to_vec(), c.to_vec_i32().unwrap())
    };
    assert_eq!(run(&g), run(&Device::Cpu));
}

#[test]
fn index_select_and_index_add() {
    let x = Input::randn(&[5, 4, 3], 7);
    let rows = [4, 0, 0, 2, 4, 1];
    check(
        "index_select axis 1",
        &|xs, d| xs[0].index_select(1, &Tensor::from_i32(&[3, 3, 0], &[3], d)?),
        &[x.clone()],
    );
    check(
        "index_select axis 0 repeated",
        &|xs, d| xs[0].index_select(0, &Tensor::from_i32(&rows, &[6], d)?),
        &[x.clone()],
    );
    let src = Input::randn(&[6, 4, 3], 8);
    check(
        "index_add",
        &|xs, d| xs[0].index_add(0, &Tensor::from_i32(&rows, &[6], d)?, &xs[1]),
        &[x, src],
    );
}

#[test]
fn gather_and_scatter_add() {
    // Logits-style gather of one column per row (the cross-entropy pattern) and a wider one.
    let logits = Input::randn(&[6, 11], 9);
    let labels = [3, 0, 10, 3, 7, 1];
    check(
        "gather labels",
        &|xs, d| xs[0].gather(1, &Tensor::from_i32(&labels, &[6, 1], d)?),
        &[logits.clone()],
    );
    let idx: Vec<i32> = (0..6 * 4).map(|i| i * 7 % 11).collect();
    check(
        "gather wide",
        &|xs, d| xs[0].gather(1, &Tensor::from_i32(&idx, &[6, 4], d)?),
        &[logits.clone()],
    );
    let src = Input::randn(&[6, 4], 10);
    check(
        "scatter_add",
        &|xs, d| xs[0].scatter_add(1, &Tensor::from_i32(&idx, &[6, 4], d)?, &xs[1]),
        &[logits, src],
    );
    // Along the first axis of a 3-D tensor, with repeated targets.
    let base = Input::randn(&[3, 2, 2], 11);
    let src = Input::randn(&[5, 2, 2], 12);
    let idx3 = [0, 2, 2, 1, 0, 0, 1, 2, 2, 2, 0, 1, 1, 1, 0, 2, 0, 0, 2, 1];
    check(
        "scatter_add axis 0",
        &|xs, d| xs[0].scatter_add(0, &Tensor::from_i32(&idx3, &[5, 2, 2], d)?, &xs[1]),
        &[base, src],
    );
}

#[test]
fn out_of_range_indices_read_nan_and_bad_shapes_are_errors() {
    let g = common::gpu();
    for d in [&g, &Device::Cpu] {
        let x = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3, 1], d).unwrap();
        let idx = Tensor::from_i32(&[2, 3, -1], &[3], d).unwrap();
        let out = x.index_select(0, &idx).unwrap().to_vec().unwrap();
        assert_eq!(out[0], 3.0);
        assert!(out[1].is_nan() && out[2].is_nan(), "{out:?} on {d}");
    }
    let x = Tensor::zeros(&[3, 4], &g).unwrap();
    let bad = Tensor::from_i32(&[0, 1], &[2, 1, 1], &g).unwrap();
    assert!(x
        .gather(1, &bad)
        .unwrap_err()
        .to_string()
        .contains("gather"));
    assert!(x
        .narrow(1, 3, 2)
        .unwrap_err()
        .to_string()
        .contains("outside"));
    assert!(x
        .permute(&[0, 0])
        .unwrap_err()
        .to_string()
        .contains("permutation"));
    assert!(x.reshape(&[5]).unwrap_err().to_string().contains("reshape"));
}

#[test]
fn high_rank_layouts_use_every_unrolled_dim() {
    for device in both_shapes() {
        // Six and eight dims that no collapsing can merge.
        let x = Input::randn(&[2, 3, 2, 3, 2, 2], 13);
        check_on(
            &device,
            "permute rank 6",
            &|xs, _| xs[0].permute(&[5, 3, 1, 0, 2, 4]),
            &[x],
        );
        let y = Input::randn(&[2, 1, 2, 1, 2, 1, 2, 1], 14);
        compare_forward_on(
            &device,
            "broadcast rank 8",
            &|xs, _| xs[0].broadcast_to(&[2, 3, 2, 3, 2, 3, 2, 3]),
            &[y],
            0.0,
            0.0,
        );
    }
}

/// The reference permute and broadcast_to (`cpu::shape`, rows of the last dim copied, filled or
/// walked with a stride) against loops over the coordinates written out, including a broadcast
/// last dim (stride 0), a permuted last dim (strided walk), a size-0 dim and rank 0.
#[test]
fn reference_permute_and_broadcast_match_written_out_loops() {
    use unreid::cpu::shape::{broadcast_to, permute};
    let (a, b, c) = (3, 4, 5);
    let x: Vec<i32> = (0..(a * b * c) as i32).collect();
    let at = |i: usize, j: usize, k: usize| x[(i * b + j) * c + k];
    // out[k][i][j] = x[i][j][k]
    let mut want = Vec::new();
    for k in 0..c {
        for i in 0..a {
            for j in 0..b {
                want.push(at(i, j, k));
            }
        }
    }
    assert_eq!(permute(&x, &[a, b, c], &[2, 0, 1]), want);
    // out[i][k][j] = x[i][j][k]: contiguous rows are not the input's.
    let mut want = Vec::new();
    for i in 0..a {
        for k in 0..c {
            for j in 0..b {
                want.push(at(i, j, k));
            }
        }
    }
    assert_eq!(permute(&x, &[a, b, c], &[0, 2, 1]), want);
    // [3, 1, 5] -> [2, 3, 4, 5] and [3, 4, 1] -> [3, 4, 6].
    let y: Vec<i32> = (0..15).collect();
    let mut want = Vec::new();
    for _ in 0..2 {
        for i in 0..3 {
            for _ in 0..4 {
                want.extend((0..5).map(|k| y[i * 5 + k]));
            }
        }
    }
    assert_eq!(broadcast_to(&y, &[3, 1, 5], &[2, 3, 4, 5]), want);
    let z: Vec<i32> = (0..12).collect();
    let want: Vec<i32> = z.iter().flat_map(|&v| [v; 6]).collect();
    assert_eq!(broadcast_to(&z, &[3, 4, 1], &[3, 4, 6]), want);
    assert_eq!(broadcast_to(&[7], &[], &[2, 2]), vec![7; 4]);
    assert_eq!(broadcast_to(&[7], &[], &[]), vec![7]);
    assert_eq!(
        broadcast_to::<i32>(&[], &[0, 3], &[2, 0, 3]),
        Vec::<i32>::new()
    );
    assert_eq!(permute(&[9], &[], &[]), vec![9]);
}
