//! Matmul kernels against the CPU reference: all three kernels (`Subgroup`: matmul_sg, the
//! lavapipe default, with zero padding of operands that are not whole vec4s; `Reg`: matmul_reg,
//! the any-adapter fallback; `Tiled`: matmul_tiled, the workgroup-memory kernel for real GPUs),
//! odd and tile-straddling sizes, batches with and without a broadcast 2-D operand, all four
//! transpose combinations, K = 1; then numeric gradient checks.

mod common;

use common::matmul::{check_product, TRANSPOSES};
use unreid::autograd::gradcheck::{check_op, Input};
use unreid::ops::matmul::MatmulDims;
use unreid::ops::matmul::{matmul_entry, with_matmul_kernel, MatmulKernel};
use unreid::{Device, Tensor};

const FAMILIES: [MatmulKernel; 3] = [
    MatmulKernel::Subgroup,
    MatmulKernel::Reg,
    MatmulKernel::Tiled,
];

/// Sizes (m, k, n): tiny, odd, straddling every tile (32, 48 and 64 rows/columns), K = 1, and
/// shapes the vec4 kernel takes in all four layouts (m, k, n multiples of 4) or only some.
const SIZES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (3, 5, 7),
    (5, 1, 9),
    (33, 65, 17),
    (127, 129, 63),
    (52, 36, 40),
    (20, 12, 37),
    (100, 68, 72),
    (4, 4, 8),
];

#[test]
fn unbatched_all_layouts_every_kernel() {
    let gpu = common::gpu();
    for family in FAMILIES {
        for (i, &size) in SIZES.iter().enumerate() {
            for tr in TRANSPOSES {
                check_product(&gpu, family, None, (&[], &[]), size, tr, 10 * i as u64);
            }
        }
    }
}

#[test]
fn batched_and_broadcast_every_kernel() {
    let gpu = common::gpu();
    // Odd; vec4-aligned (52x36x40, no padding for the subgroup kernel); N not a multiple of 4.
    let sizes = [(3, 5, 7), (52, 36, 40), (20, 12, 37)];
    for family in FAMILIES {
        for (i, &size) in sizes.iter().enumerate() {
            for tr in TRANSPOSES {
                let seed = 100 + 10 * i as u64;
                check_product(&gpu, family, None, (&[1], &[1]), size, tr, seed);
                check_product(&gpu, family, None, (&[3], &[3]), size, tr, seed);
                check_product(&gpu, family, None, (&[], &[3]), size, tr, seed);
                check_product(&gpu, family, None, (&[3], &[]), size, tr, seed);
            }
        }
        // Two batch dims.
        check_product(
            &gpu,
            family,
            None,
            (&[2, 2], &[2, 2]),
            (33, 65, 17),
            (false, true),
            7,
        );
        check_product(
            &gpu,
            family,
            None,
            (&[2, 2], &[]),
            (33, 64, 16),
            (true, false),
            8,
        );
    }
}

/// Each family runs the entry point it names (else the tests above could pass on one kernel
/// three times), and on a CPU adapter with subgroups the default is the subgroup kernel.
#[test]
fn families_run_their_kernels() {
    let gpu = common::gpu();
    let g = gpu.as_gpu().unwrap();
    let entry = |family, (m, k, n), trans_a, trans_b| {
        let d = MatmulDims {
            batch: 1,
            m,
            k,
            n,
            trans_a,
            trans_b,
            a_batched: false,
            b_batched: false,
        };
        with_matmul_kernel(family, || matmul_entry(g, &d))
    };
    let subgroups = g.subgroup_min_size().is_some_and(|s| s >= 8);
    for size in [(52, 36, 40), (20, 13, 37)] {
        for (ta, tb) in TRANSPOSES {
            let sg = entry(MatmulKernel::Subgroup, size, ta, tb);
            assert_eq!(sg, if subgroups { "matmul_sg" } else { "matmul_reg" });
            assert_eq!(entry(MatmulKernel::Reg, size, ta, tb), "matmul_reg");
            assert_eq!(entry(MatmulKernel::Tiled, size, ta, tb), "matmul_tiled");
        }
    }
    if !subgroups {
        eprintln!("adapter without subgroups of >= 8 lanes: matmul_sg cannot run here");
    } else if g.summary().is_cpu() && std::env::var("UNREID_MATMUL").is_err() {
        assert_eq!(
            entry(MatmulKernel::Auto, (64, 64, 64), false, false),
            "matmul_sg"
        );
    }
}

#[test]
fn gradients_every_kernel() {
    let gpu = common::gpu();
    // (a shape, b shape): plain, vec4-friendly (so the subgroup kernel runs forward and
    // backward), batched, and 2-D operands broadcast over a batch (their gradient sums it).
    let cases: [(&[usize], &[usize]); 5] = [
        (&[3, 5], &[5, 2]),
        (&[4, 8], &[8, 4]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[4, 4], &[3, 4, 8]),
        (&[2, 4, 8], &[8, 4]),
    ];
    for family in FAMILIES {
        for (i, (a, b)) in cases.iter().enumerate() {
            for (ta, tb) in TRANSPOSES {
                // Inputs are stored transposed where asked, so every case is a valid product.
                let swap = |s: &[usize], tr: bool| {
                    let mut s = s.to_vec();
                    let r = s.len();
                    if tr {
                        s.swap(r - 2, r - 1);
                    }
                    s
                };
                let inputs = [
                    Input::randn(&swap(a, ta), 1000 + i as u64),
                    Input::randn(&swap(b, tb), 2000 + i as u64),
                ];
                let f = move |x: &[Tensor], _: &Device| x[0].matmul_t(&x[1], ta, tb);
                let name = format!("{family:?} matmul_t({a:?}, {b:?}, {ta}, {tb})");
                with_matmul_kernel(family, || check_op(&name, &f, &inputs, &gpu, 1e-4, 1e-4))
                    .unwrap();
            }
        }
        let f = |x: &[Tensor], _: &Device| x[0].matmul(&x[1]);
        let inputs = [Input::randn(&[3, 4, 4], 7), Input::randn(&[4, 8], 8)];
        with_matmul_kernel(family, || check_op("matmul", &f, &inputs, &gpu, 1e-4, 1e-4)).unwrap();
    }
}

/// Both matmul shaders parse and validate with naga (the subgroup one with subgroup operations).
#[test]
fn matmul_shaders_validate() {
    for name in ["matmul", "matmul_subgroup"] {
        let src = unreid::gpu::SHADERS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is not registered"))
            .1;
        let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {e}"));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}
