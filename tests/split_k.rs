//! Split-K matmul (the reduction cut over workgroups, then `splitk_sum`) against the CPU
//! reference: every kernel (`matmul_sg`, the lavapipe default, `matmul_tiled`, `matmul_reg`)
//! forced on lavapipe, several splits with a remainder chunk, batch 1 and batched/broadcast
//! products, all transposes, odd sizes and tiles at the edges; gradients through split products;
//! the conv weight gradient (its long-reduction GEMM); the automatic choice of the split; and the
//! small tiles for products a 132-SM GPU cannot fill in the default ones; every `matmul_tiled`
//! tiling.

mod common;

use common::matmul::{check_product, randn, to64, TRANSPOSES};
use unreid::autograd::gradcheck::assert_close;
use unreid::ops::conv2d::Conv2dSpec;
use unreid::ops::matmul::{
    launch_plan, split_k, with_compute_units, with_matmul_kernel, with_split_k, with_tiled_side,
    GemmTarget, MatmulDims, MatmulKernel, TILED_SIDES,
};
use unreid::Device;

const SPLIT_FAMILIES: [MatmulKernel; 3] = [
    MatmulKernel::Subgroup,
    MatmulKernel::Tiled,
    MatmulKernel::Reg,
];

#[test]
fn split_products_match_the_cpu_reference() {
    let gpu = common::gpu();
    // K = 1037 splits 2 -> 519 + 518, 3 -> 346 x 2 + 345, 7 -> 149 x 6 + 143: every split has a
    // remainder chunk; 16 chunks of 65 at K = 1037 (the last 62) also straddle TILE_K = 16.
    // matmul_sg's chunks are whole vec4 steps: 520 + 517, 348 x 2 + 341, 152 x 6 + 125, 68 x 15
    // + 17 (K padded to 1040 with zeros). 70 x 97 takes 2 x 4 of its 40 x 32 tiles, both edges
    // partly outside C; 33 x 65 and (1, 1037, 1) single partial tiles.
    let sizes = [
        (1, 1037, 1),
        (7, 1037, 9),
        (33, 300, 65),
        (70, 517, 97),
        (5, 4, 3),
    ];
    for family in SPLIT_FAMILIES {
        for splits in [2, 3, 7, 16] {
            for (i, &size) in sizes.iter().enumerate() {
                for tr in TRANSPOSES {
                    check_product(
                        &gpu,
                        family,
                        Some(splits),
                        (&[], &[]),
                        size,
                        tr,
                        10 * i as u64,
                    );
                }
            }
        }
    }
}

/// Leading dims of A and B.
type Batches<'a> = (&'a [usize], &'a [usize]);

#[test]
fn split_batched_and_broadcast_products() {
    let gpu = common::gpu();
    for family in SPLIT_FAMILIES {
        for splits in [2, 5] {
            let size = (9, 211, 13);
            let cases: [(Batches, (bool, bool)); 4] = [
                ((&[1], &[1]), (false, true)),
                ((&[3], &[3]), (true, false)),
                ((&[], &[3]), (false, false)),
                ((&[3], &[]), (true, true)),
            ];
            for (i, (batches, tr)) in cases.into_iter().enumerate() {
                let seed = 1 + i as u64;
                check_product(&gpu, family, Some(splits), batches, size, tr, seed);
            }
        }
    }
}

/// The forced split reaches the kernel that runs (else the tests above could pass unsplit):
/// every family, chunks as the comments above say.
#[test]
fn forced_splits_are_what_each_kernel_launches() {
    let gpu = common::gpu();
    let target = GemmTarget::of(gpu.as_gpu().unwrap());
    let d = dims(1, 7, 1037, 9);
    for family in SPLIT_FAMILIES {
        for (splits, chunk, sg_chunk) in [(2, 519, 520), (3, 346, 348), (7, 149, 152), (16, 65, 68)]
        {
            let plan =
                with_matmul_kernel(family, || with_split_k(splits, || launch_plan(&target, &d)));
            let want = match plan.family {
                MatmulKernel::Subgroup => sg_chunk,
                _ => chunk,
            };
            assert_eq!(
                (plan.splits, plan.chunk),
                (splits, want),
                "{family:?} split {splits}"
            );
            if target.subgroups {
                assert_eq!(plan.family, family);
            }
        }
    }
    // K = 4 in 2: chunks of 2 for matmul_reg; matmul_sg's one vec4 step cannot split.
    let short = dims(1, 5, 4, 3);
    for family in SPLIT_FAMILIES {
        let plan = with_matmul_kernel(family, || with_split_k(2, || launch_plan(&target, &short)));
        let want = match plan.family {
            MatmulKernel::Subgroup => (1, 0),
            _ => (2, 2),
        };
        assert_eq!((plan.splits, plan.chunk), want, "{family:?} K = 4 split 2");
    }
}

#[test]
fn gradients_through_split_products_match_the_cpu_reference() {
    let gpu = common::gpu();
    let (m, k, n) = (6, 517, 5);
    let run = |device: &Device| -> (Vec<f64>, Vec<f64>) {
        let a = randn(&[m, k], 7, device).with_requires_grad();
        let b = randn(&[k, n], 8, device).with_requires_grad();
        let g = randn(&[m, n], 9, device);
        a.matmul(&b)
            .unwrap()
            .mul(&g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (to64(&a.grad().unwrap()), to64(&b.grad().unwrap()))
    };
    let (ga_want, gb_want) = run(&Device::cpu());
    for family in SPLIT_FAMILIES {
        // The forward product reduces over k = 517 in 4 chunks; the forced split applies to the
        // gradient products too (dA over n = 5 and dB over m = 6: 3 chunks of 2, or for
        // matmul_sg 2 chunks of one vec4 step).
        let (ga, gb) = with_matmul_kernel(family, || with_split_k(4, || run(&gpu)));
        assert_close(&format!("{family:?} dA"), &ga, &ga_want, 1e-4, 1e-4);
        assert_close(&format!("{family:?} dB"), &gb, &gb_want, 1e-4, 1e-4);
    }
}

#[test]
fn conv_weight_gradient_with_split_k_matches_the_cpu_reference() {
    let gpu = common::gpu();
    // Batch 1 and 3, odd spatial sizes: the weight gradient reduces over N x Ho x Wo.
    for (batch, splits) in [(1, 3), (3, 5)] {
        let run = |device: &Device| -> Vec<f64> {
            let x = randn(&[batch, 3, 11, 9], 20, device);
            let w = randn(&[5, 3, 3, 3], 21, device).with_requires_grad();
            let y = x.conv2d(&w, None, Conv2dSpec::new(1, 1)).unwrap();
            let g = randn(y.shape(), 22, device);
            y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            to64(&w.grad().unwrap())
        };
        let want = run(&Device::cpu());
        for family in SPLIT_FAMILIES {
            let got = with_matmul_kernel(family, || with_split_k(splits, || run(&gpu)));
            let what = format!("{family:?} conv dW batch {batch} split {splits}");
            assert_close(&what, &got, &want, 1e-4, 1e-4);
        }
    }
}

/// Every `matmul_tiled` tiling (SIDE 16, 8, 4: tiles of 128, 64, 32) against the CPU reference:
/// tiles at both edges (sizes one past and one short of a tile), a single row and column, K
/// shorter than one staging pass and not a multiple of it, every transpose, batched and
/// broadcast operands, and forced splits with a short last chunk.
#[test]
fn every_tiled_side_matches_the_cpu_reference() {
    let gpu = common::gpu();
    let sizes = [
        (129, 37, 130),
        (1, 19, 1),
        (63, 5, 65),
        (33, 70, 31),
        (17, 300, 129),
    ];
    for side in TILED_SIDES {
        for (i, &(m, k, n)) in sizes.iter().enumerate() {
            for split in [None, Some(3)] {
                for tr in TRANSPOSES {
                    let seed = 700 + 10 * i as u64;
                    with_tiled_side(side, || {
                        check_product(
                            &gpu,
                            MatmulKernel::Tiled,
                            split,
                            (&[], &[]),
                            (m, k, n),
                            tr,
                            seed,
                        )
                    });
                }
            }
        }
        with_tiled_side(side, || {
            check_product(
                &gpu,
                MatmulKernel::Tiled,
                Some(2),
                (&[3], &[]),
                (40, 33, 70),
                (false, true),
                790,
            );
            check_product(
                &gpu,
                MatmulKernel::Tiled,
                None,
                (&[], &[2]),
                (9, 17, 8),
                (true, false),
                791,
            );
        });
    }
}

/// The small (32x32) tiles `launch_plan` takes for products too small to fill a 132-SM GPU in
/// its default tiles, run on lavapipe as that GPU's plan (`with_compute_units(132)`) against the
/// CPU reference: every kernel, the automatic split and forced ones with remainder chunks, all
/// transposes, tiles at both edges (70 = 2 x 32 + 6 columns, 45 rows), a single row (batch 1,
/// M = 1), K = 64 (not splittable), and batched products.
#[test]
fn small_tiles_for_a_132_sm_gpu_match_the_cpu_reference() {
    let gpu = common::gpu();
    let target = GemmTarget {
        compute_units: 132,
        ..GemmTarget::of(gpu.as_gpu().unwrap())
    };
    let sizes = [(64, 1037, 70), (33, 300, 65), (1, 517, 97), (45, 64, 129)];
    for family in SPLIT_FAMILIES {
        for (i, &(m, k, n)) in sizes.iter().enumerate() {
            // Every plan is in 32x32 tiles (matmul_sg's single row keeps its 8-row tile, no fewer
            // tiles), and the automatic split is what split_k gives those tiles.
            let plan = with_matmul_kernel(family, || launch_plan(&target, &dims(1, m, k, n)));
            let tiles = m.div_ceil(32) * n.div_ceil(32);
            let what = format!("{family:?} {m}x{k}x{n}: {plan:?}");
            assert_eq!((plan.groups[0] * plan.groups[1]) as usize, tiles, "{what}");
            let auto = split_k(&dims(1, m, k, n), tiles, 132, usize::MAX / 2, 65_535);
            assert_eq!(plan.splits, auto, "{what}");
            for split in [None, Some(3), Some(7)] {
                for tr in TRANSPOSES {
                    let seed = 50 + 10 * i as u64;
                    with_compute_units(132, || {
                        check_product(&gpu, family, split, (&[], &[]), (m, k, n), tr, seed)
                    });
                }
            }
        }
        for (batches, split) in [((&[3][..], &[3][..]), Some(2)), ((&[], &[2]), None)] {
            with_compute_units(132, || {
                check_product(
                    &gpu,
                    family,
                    split,
                    batches,
                    (40, 600, 37),
                    (false, true),
                    90,
                )
            });
        }
    }
}

fn dims(batch: usize, m: usize, k: usize, n: usize) -> MatmulDims {
    MatmulDims {
        batch,
        m,
        k,
        n,
        trans_a: false,
        trans_b: true,
        a_batched: false,
        b_batched: false,
    }
}

#[test]
fn the_automatic_split_fills_the_compute_units() {
    let big = usize::MAX / 2;
    // ResNet-50 layer1 1x1 dW at batch 64 x 256 x 128: [64 x 131072] x [131072 x 64], one 64x64
    // tile; 132 compute units want 264 workgroups.
    let s = split_k(&dims(1, 64, 131_072, 64), 1, 132, big, 65_535);
    assert_eq!(s, 264);
    assert!(131_072 / s >= 256, "chunks stay long");
    // The stem's dW [64 x 147]: 3 tiles over N = 147 with K = 131072 -> 88 splits, 264 groups.
    assert_eq!(split_k(&dims(1, 64, 131_072, 147), 3, 132, big, 65_535), 88);
    // Enough tiles already: no split.
    assert_eq!(split_k(&dims(1, 512, 4608, 512), 288, 132, big, 65_535), 1);
    // Short reductions are never split.
    assert_eq!(split_k(&dims(1, 64, 500, 64), 1, 132, big, 65_535), 1);
    // K bounds the split (chunks of at least 256), so does the partials' size and the grid's z.
    assert_eq!(split_k(&dims(1, 8, 1024, 8), 1, 132, big, 65_535), 4);
    assert_eq!(
        split_k(&dims(1, 64, 131_072, 64), 1, 132, 64 * 64 * 10, 65_535),
        10
    );
    assert_eq!(split_k(&dims(4, 64, 131_072, 64), 1, 132, big, 40), 10);
}

/// `conv2d::gemms` lists exactly the products a convolution's forward and backward launch
/// (pointwise batched products and im2col products, chunked over the batch under a small binding
/// limit, batch 1 and odd sizes), so a dry run built on it counts what a real step runs.
#[test]
fn the_listed_conv_products_are_the_launched_ones() {
    use unreid::gpu::GpuOptions;
    use unreid::ops::conv2d::gemms;
    use unreid::ops::matmul::log_products;
    let limit = 64 << 10;
    let opts = GpuOptions {
        max_binding_bytes: Some(limit),
        ..Default::default()
    };
    let gpu = Device::gpu_with(&opts).unwrap();
    // (input, weight, spec): a 7x7 stride-2 stem, a 3x3, a pointwise 1x1 (batched products),
    // a 1x1 stride-2 downsampling (im2col); batch 1 and 5.
    let cases = [
        ([5, 3, 21, 13], [8, 3, 7, 7], Conv2dSpec::new(2, 3)),
        ([1, 3, 21, 13], [8, 3, 7, 7], Conv2dSpec::new(2, 3)),
        ([5, 6, 9, 7], [10, 6, 3, 3], Conv2dSpec::new(1, 1)),
        ([5, 12, 9, 7], [20, 12, 1, 1], Conv2dSpec::new(1, 0)),
        ([5, 12, 9, 7], [20, 12, 1, 1], Conv2dSpec::new(2, 0)),
    ];
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        for input_grad in [false, true] {
            let seed = 30 + i as u64;
            let ((), logged) = log_products(|| {
                let x = randn(&xs, seed, &gpu);
                let x = if input_grad {
                    x.with_requires_grad()
                } else {
                    x
                };
                let w = randn(&ws, seed + 1, &gpu).with_requires_grad();
                let y = x.conv2d(&w, None, spec).unwrap();
                y.sum_all().unwrap().backward().unwrap();
            });
            let listed = gemms(&xs, &ws, &spec, limit, input_grad).unwrap();
            let what = format!("conv {xs:?} * {ws:?} {spec:?} input grad {input_grad}");
            if ws[2] > 1 && xs[0] > 1 {
                // im2col columns are kh x kw times the input: the limit chunks them. (Pointwise
                // operands are as large as the activations, which must fit whole.)
                assert!(listed.len() > 3, "{what}: the limit should chunk it");
            }
            // The backward runs each chunk's input gradient, then its weight gradient (a
            // pointwise convolution: all input gradients first); the list does too.
            let listed: Vec<String> = listed.iter().map(|(_, d)| format!("{d:?}")).collect();
            let logged: Vec<String> = logged.iter().map(|d| format!("{d:?}")).collect();
            assert_eq!(listed, logged, "{what}");
        }
    }
}

/// The audit case, counted without running it: every product of one ResNet-50 (last
/// stride 1) training step at batch 64 x 3x256x128 under a 2 GiB binding limit, as NVIDIA
/// Vulkan and DX12 report, on a 132-SM GPU (an H100). The convolutions' products come from
/// `conv2d::gemms` (checked above against the launched ones); the head's (the 751-class
/// classifier and the triplet distances, forward and backward) are logged from a real run of the
/// head on the adapter here. Each goes through `launch_plan` for that target, with the tiled
/// kernel (what a discrete GPU takes) and the subgroup kernel (what adapters with subgroups may
/// be forced to take; `matmul_reg` where it cannot pad), and its kernel must fit WebGPU's
/// baseline limits (workgroup storage and invocations with the plan's tile constants). Every
/// convolution product launches at least 2 workgroups per compute unit (264).
///
/// The head's six products (under 0.1% of the step's multiply-adds) are too small for 128x128 or
/// 64x64 (or 64x32) tiles to fill the GPU, so the plan takes 32x32 tiles and splits K in chunks of
/// at least 256; each then launches 264 or more workgroups, or the most those rules allow:
/// ceil(M/32) x ceil(N/32) tiles x (K / 256 splits, 1 when K < 512). Before -> after, in the
/// order the head launches them:
/// - classifier forward, 64 x 2048 x 751: 96 (tiled) / 192 (subgroup) -> 288: 48 tiles x 6
///   splits.
/// - distances forward, 64 x 2048 x 64: 8 (tiled) / 16 (subgroup) -> 32: 4 tiles x 8 splits, K =
///   2048 allows no more chunks of 256.
/// - distances backward, twice 64 x 64 x 2048: 32 (tiled) / 64 (subgroup) -> 128: K = 64
///   cannot be split; 128 is every 32x32 tile of the 64 x 2048 output.
/// - classifier input gradient, 64 x 751 x 2048: 64 (tiled) / 128 (subgroup) -> 256: 128 tiles
///   x 2 splits; K = 751 holds two chunks of 256, not three.
/// - classifier weight gradient, 751 x 64 x 2048: 384 (tiled) / 1024 (subgroup), unchanged (its
///   default tiles fill the GPU).
///
/// Smaller tiles (16x16: 16 invocations, half a warp) would fill the SMs with idle lanes, and
/// shorter chunks would write more partial products than they save; all six take about a
/// microsecond of an H100 either way.
#[test]
fn every_resnet50_b64_product_fills_a_132_sm_gpu() {
    use unreid::loss::{batch_hard, cross_entropy, euclidean_distance, softmax_triplet};
    use unreid::nn::{Init, ResNet, ResNetDepth};
    use unreid::ops::conv2d::gemms;
    use unreid::ops::matmul::log_products;

    let (batch, units) = (64, 132);
    let binding = 2u64 << 30;
    let net = ResNet::new(&mut Init::new(&Device::cpu(), 0), ResNetDepth::R50, 1).unwrap();
    let mut products: Vec<(String, MatmulDims)> = Vec::new();
    let mut failed = None;
    net.walk_convs(&[batch, 3, 256, 128], &mut |name, needs| {
        let input_grad = name != "conv1";
        match gemms(
            &needs.input,
            &needs.weight,
            &needs.spec,
            binding,
            input_grad,
        ) {
            Ok(list) => {
                for (what, d) in list {
                    products.push((format!("{name} {what}"), d));
                }
            }
            Err(e) => failed = Some(format!("{name}: {e}")),
        }
        needs.out_shape.clone()
    })
    .unwrap();
    assert_eq!(failed, None);
    // 53 convolutions, each in one chunk under 2 GiB: forward, input grad (all but the stem),
    // weight grad.
    assert_eq!(products.len(), 3 * 53 - 1, "{products:?}");

    let gpu = common::gpu();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i / 4).collect();
    let ((), head) = log_products(|| {
        let pooled = randn(&[batch, 2048], 40, &gpu).with_requires_grad();
        let w = randn(&[751, 2048], 41, &gpu).with_requires_grad();
        let ce = cross_entropy(&pooled.linear(&w, None).unwrap(), &labels, 0.1).unwrap();
        let dist = euclidean_distance(&pooled, &pooled).unwrap();
        let tri = softmax_triplet(&batch_hard(&dist, &labels).unwrap()).unwrap();
        ce.add(&tri).unwrap().backward().unwrap();
    });
    assert_eq!(head.len(), 6, "{head:?}");
    products.extend(head.into_iter().map(|d| ("head".to_string(), d)));
    let macs = |d: &MatmulDims| (d.batch * d.m * d.k * d.n) as f64;
    let total: f64 = products.iter().map(|(_, d)| macs(d)).sum();
    let head: f64 = products
        .iter()
        .filter(|(n, _)| n == "head")
        .map(|(_, d)| macs(d))
        .sum();
    eprintln!(
        "{:.1} G multiply-adds, the head {:.4}%",
        total / 1e9,
        100.0 * head / total
    );
    assert!(head < 1e-3 * total);

    let target = GemmTarget {
        cpu_adapter: false,
        subgroups: true,
        compute_units: units,
        max_workgroups: 65_535,
        max_binding_bytes: binding,
    };
    for family in [MatmulKernel::Tiled, MatmulKernel::Subgroup] {
        let mut short = Vec::new();
        let mut head_counts = Vec::new();
        for (name, d) in &products {
            let plan = with_matmul_kernel(family, || launch_plan(&target, d));
            // matmul_sg pads its operands with a grid of one row per workgroup, so K over 65,535
            // (the stem's weight gradient, 524,288) takes matmul_reg, split the same way.
            let fallback = family == MatmulKernel::Subgroup && plan.family == MatmulKernel::Reg;
            assert!(plan.family == family || fallback, "{family:?} {d:?}");
            eprintln!(
                "{:?} {name}: {}x{}x{} batch {} -> {:?} x {} splits = {} workgroups",
                plan.family,
                d.m,
                d.k,
                d.n,
                d.batch,
                plan.groups,
                plan.splits,
                plan.workgroups()
            );
            let needs = common::needs(
                plan.kernel.shader,
                plan.kernel.entry,
                plan.kernel.constants(),
            );
            let baseline = wgpu::Limits::default();
            assert!(
                needs.workgroup_bytes <= baseline.max_compute_workgroup_storage_size
                    && needs.invocations <= baseline.max_compute_invocations_per_workgroup,
                "{:?} {needs:?}",
                plan.kernel
            );
            if plan.workgroups() < 2 * units as u64 {
                short.push(format!("{name} {d:?}: {} workgroups", plan.workgroups()));
                assert_eq!(
                    name,
                    "head",
                    "{family:?} {d:?}: {} workgroups",
                    plan.workgroups()
                );
                // The most the rules allow: every 32x32 tile, K in chunks of at least 256.
                let splits = if d.k < 512 { 1 } else { d.k / 256 };
                let best = (d.m.div_ceil(32) * d.n.div_ceil(32) * d.batch * splits) as u64;
                assert_eq!(plan.workgroups(), best, "{family:?} {d:?}");
            }
            if name == "head" {
                head_counts.push(plan.workgroups());
            }
        }
        eprintln!("{family:?}: under {} workgroups: {short:#?}", 2 * units);
        // In the order the head launches them (see above).
        let dw = if family == MatmulKernel::Tiled {
            384
        } else {
            1024
        };
        assert_eq!(head_counts, [288, 32, 256, dw, 128, 128], "{family:?}");
    }
}
