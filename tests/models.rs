//! Whole models: torchvision's ImageNet MobileNetV2 reproduces torchvision's logits on a real
//! photo; a ResNet-18's parameter gradients match the CPU reference; DSBN; weights round trips.

mod common;

use std::path::{Path, PathBuf};

use unreid::autograd::gradcheck::assert_close;
use unreid::nn::weights::read_tensors;
use unreid::nn::{load_safetensors, Ctx, LoadOptions, MobileNetV2, Module, ReidConfig, ReidNet};
use unreid::{Device, Tensor};

fn shared(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    assert!(
        p.exists(),
        "missing {}: these tests need the shared fixtures folder next to the crate (../shared/{rel})",
        p.display()
    );
    p
}

fn weights() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/mobilenet_v2_imagenet.safetensors");
    assert!(
        p.exists(),
        "missing {} (shipped with the crate)",
        p.display()
    );
    p
}

fn mobilenet(device: &Device) -> MobileNetV2 {
    let mut init = unreid::nn::Init::new(device, 0);
    let net = MobileNetV2::new(&mut init, Some(1000)).unwrap();
    let report = load_safetensors(
        &net,
        &weights(),
        &LoadOptions {
            strict: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{report}"
    );
    assert_eq!(report.loaded.len(), 262);
    net
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

fn max_rel_err(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn mobilenet_v2_reproduces_torchvision_on_the_fixture() {
    let fixture = read_tensors(&shared("fixtures/mobilenet_v2_china.safetensors")).unwrap();
    let (in_shape, input) = &fixture["input"];
    let (_, logits_want) = &fixture["logits"];
    let (_, pooled_want) = &fixture["pooled_features"];
    let device = common::gpu();
    let net = mobilenet(&device);
    let x = Tensor::from_slice(input, in_shape, &device).unwrap();
    let (logits, pooled) = unreid::no_grad(|| net.classify(&x, &Ctx::eval())).unwrap();
    let (logits, pooled) = (logits.to_vec().unwrap(), pooled.to_vec().unwrap());
    let (el, ep) = (
        max_rel_err(&logits, logits_want),
        max_rel_err(&pooled, pooled_want),
    );
    eprintln!("mobilenet_v2 on {device}: logits max rel err {el:.2e}, pooled {ep:.2e}");
    assert!(
        el < 1e-4 && ep < 1e-4,
        "logits rel err {el}, pooled rel err {ep}"
    );
    assert_eq!(argmax(&logits), 698, "top-1 should be 698 (palace)");
}

#[test]
fn mobilenet_v2_classifies_china_jpg_through_our_pipeline() {
    let img = unreid::data::transforms::imagenet_input(&shared("fixtures/china.jpg")).unwrap();
    // The CPU device: this test is about the image pipeline (the GPU model is checked above).
    let device = Device::Cpu;
    let net = mobilenet(&device);
    let x = Tensor::from_slice(&img, &[1, 3, 224, 224], &device).unwrap();
    let (logits, _) = unreid::no_grad(|| net.classify(&x, &Ctx::eval())).unwrap();
    let logits = logits.to_vec().unwrap();
    // Also compare the decoded input with torchvision's (JPEG decoders differ by a few levels).
    let fixture = read_tensors(&shared("fixtures/mobilenet_v2_china.safetensors")).unwrap();
    let want = &fixture["input"].1;
    let mean_abs = img
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() as f64)
        .sum::<f64>()
        / img.len() as f64;
    eprintln!("china.jpg through our pipeline: mean |input - torchvision input| = {mean_abs:.4}, top-1 {}", argmax(&logits));
    assert!(
        mean_abs < 0.05,
        "our preprocessing differs from torchvision's by {mean_abs} on average"
    );
    assert_eq!(argmax(&logits), 698, "top-1 should be 698 (palace)");
}

/// Every parameter gradient of a loss on `net` at `device`, by name.
fn resnet18_grads(device: &Device) -> Vec<(String, Vec<f64>)> {
    let net = ReidNet::new(
        device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride: 1,
            pooling: unreid::nn::Pooling::Gem,
            neck: true,
            dropout: 0.0,
            classes: Some(5),
            seed: 3,
        },
    )
    .unwrap();
    let x = Tensor::randn(&[2, 3, 64, 32], 0.0, 1.0, 11, device).unwrap();
    let out = net.forward(&x, &Ctx::train()).unwrap();
    // Distinct random weights per output so no gradient cancels to rounding noise (with batch 2,
    // BN's normalised values are +-1 and a plain sum would make the neck's gradients vanish).
    let weigh = |t: &Tensor, seed: u64, scale: f32| {
        let w = Tensor::randn(t.shape(), 0.0, 1.0, seed, device).unwrap();
        t.mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .mul_scalar(scale)
            .unwrap()
    };
    let loss = weigh(&out.logits.unwrap(), 12, 1000.0)
        .add(&weigh(&out.pooled, 13, 1.0))
        .unwrap()
        .add(&weigh(&out.bn, 14, 1.0))
        .unwrap();
    loss.backward().unwrap();
    net.trainable()
        .into_iter()
        .map(|(name, p)| {
            (
                name,
                p.get()
                    .grad()
                    .map(|g| g.to_vec_f64().unwrap())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn resnet18_parameter_gradients_match_the_cpu_reference() {
    // Reference: the CPU device in f64. Eighteen layers of batch norm at batch 2 amplify f32
    // rounding: the f32 CPU reference itself lands up to ~3e-3 (of each tensor's largest
    // gradient) from f64, the GPU ~1e-3; a wrong rule would be off by O(1).
    let want = resnet18_grads(&Device::CpuF64);
    let got = resnet18_grads(&common::gpu());
    assert_eq!(want.len(), got.len());
    assert!(want.len() > 60, "{} trainable tensors", want.len());
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        assert!(!w.is_empty(), "{name} got no gradient on the CPU");
        let scale = w.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert!(scale > 0.0, "{name}: all-zero reference gradient");
        assert_close(&format!("resnet18 grad {name}"), g, w, 0.0, 5e-3 * scale);
    }
}
