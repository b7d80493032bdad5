//! PyTorch checkpoints written by PyTorch itself (`../shared/fixtures/pth/`, see its README):
//! every format and layout loads, each tensor equals its safetensors copy, the features of a
//! ReidNet forward (eval mode) match those PyTorch computed, a pickle naming any other global is
//! refused without running it, and bad files fail with errors naming the problem.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use unreid::nn::pth::CheckpointFormat;
use unreid::nn::weights::{read_metadata, read_tensors, HostTensor};
use unreid::nn::{
    load_weights, read_checkpoint, Ctx, LoadOptions, Module, Pooling, ReidConfig, ReidNet,
    WeightsError,
};
use unreid::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/pth")
        .join(name);
    assert!(
        p.exists(),
        "missing {}: these tests need the shared fixtures folder next to the crate",
        p.display()
    );
    p
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unreid-pth-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Largest |a - b| relative to the largest |b| (features of random nets vary in scale).
fn assert_features(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 2e-4 * scale,
        "{name}: max |diff| {err} for values up to {scale}"
    );
}

fn reference() -> std::collections::BTreeMap<String, HostTensor> {
    read_tensors(&fixture("small_reference.safetensors")).unwrap()
}

/// Every small file gives exactly the reference tensors under torchvision names.
#[test]
fn small_formats_and_layouts_equal_the_reference() {
    let want = reference();
    assert_eq!(want.len(), 15, "stem and layer1.0 of a ResNet-18");
    for (file, format, scheme, container) in [
        (
            "small_legacy.pth",
            CheckpointFormat::TorchLegacy,
            "torchvision",
            None,
        ),
        (
            "small_module_prefix.pth.tar",
            CheckpointFormat::TorchZip,
            "torchvision",
            Some("state_dict"),
        ),
        (
            "small_fastreid.pth",
            CheckpointFormat::TorchZip,
            "fast-reid",
            Some("model"),
        ),
        (
            "small_reference.safetensors",
            CheckpointFormat::Safetensors,
            "torchvision",
            None,
        ),
    ] {
        let c = read_checkpoint(&fixture(file)).unwrap();
        assert_eq!(c.format, format, "{file}");
        assert!(c.layout.scheme.starts_with(scheme), "{file}: {}", c.layout);
        assert_eq!(c.container.as_deref(), container, "{file}");
        assert_eq!(c.layout.data_parallel, file.contains("module"), "{file}");
        let names: Vec<&String> = c.tensors.keys().collect();
        assert_eq!(names, want.keys().collect::<Vec<_>>(), "{file}");
        for (k, (shape, values)) in &want {
            assert_eq!(&c.tensors[k].0, shape, "{file}: {k}");
            assert_eq!(&c.tensors[k].1, values, "{file}: {k} differs");
        }
    }
    let c = read_checkpoint(&fixture("small_module_prefix.pth.tar")).unwrap();
    assert_eq!(c.extras["epoch"], "3");
    let c = read_checkpoint(&fixture("small_fastreid.pth")).unwrap();
    assert_eq!(c.extras["iteration"], "100");
}

/// bfloat16 storages widen exactly: equal to the reference rounded to bfloat16 (round to nearest
/// even), which differs from the f32 reference.
#[test]
fn bfloat16_checkpoint_is_the_reference_rounded() {
    let want = reference();
    let c = read_checkpoint(&fixture("small_bf16.pth")).unwrap();
    assert_eq!(c.source_dtypes, vec!["bfloat16".to_string()]);
    assert_eq!(c.tensors.len(), want.len());
    let mut changed = 0;
    for (k, (shape, values)) in &want {
        let (s, got) = &c.tensors[k];
        assert_eq!(s, shape, "{k}");
        for (g, w) in got.iter().zip(values) {
            assert_eq!(*g, half::bf16::from_f32(*w).to_f32(), "{k}");
            changed += (g != w) as usize;
        }
    }
    assert!(changed > 1000, "the bf16 values must differ from f32 ones");
}

fn torchvision_net(device: &Device, last_stride: usize) -> ReidNet {
    ReidNet::new(
        device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride,
            pooling: Pooling::Avg,
            neck: false,
            dropout: 0.0,
            classes: None,
            seed: 7,
        },
    )
    .unwrap()
}

fn check_torchvision_fp16(device: &Device) {
    let expected =
        read_tensors(&fixture("torchvision_resnet18_fp16_expected.safetensors")).unwrap();
    let (xs, xv) = &expected["input"];
    let x = Tensor::from_slice(xv, xs, device).unwrap();
    for (stride, key) in [(2, "pooled_last_stride_2"), (1, "pooled_last_stride_1")] {
        let net = torchvision_net(device, stride);
        let report = load_weights(
            &net,
            &fixture("torchvision_resnet18_fp16.pth"),
            &LoadOptions::default(),
        )
        .unwrap();
        assert!(report.missing.is_empty(), "{report}");
        assert_eq!(report.unexpected, vec!["fc.bias", "fc.weight"], "{report}");
        assert!(report.layout.contains("float16"), "{}", report.layout);
        let out = net.forward(&x, &Ctx::eval()).unwrap();
        assert_eq!(out.pooled.shape(), &[2, 512]);
        assert_features(key, &out.pooled.to_vec().unwrap(), &expected[key].1);
    }
}

/// torchvision's own state dict (zip, float16): features equal PyTorch's, last stride 2 and 1.
#[test]
fn torchvision_fp16_features_match_pytorch_cpu() {
    check_torchvision_fp16(&Device::Cpu);
}

#[test]
fn torchvision_fp16_features_match_pytorch_gpu() {
    check_torchvision_fp16(&common::gpu());
}

fn check_spcl_dsbn(device: &Device) {
    let expected = read_tensors(&fixture("spcl_resnet18_dsbn_expected.safetensors")).unwrap();
    let ckpt = read_checkpoint(&fixture("spcl_resnet18_dsbn.pth.tar")).unwrap();
    assert_eq!(ckpt.domains(), 2);
    assert_eq!(ckpt.arch().as_deref(), Some("resnet18"));
    assert!(ckpt.layout.scheme.starts_with("SpCL"), "{}", ckpt.layout);
    assert!(ckpt.layout.data_parallel && ckpt.layout.dsbn);
    assert_eq!(ckpt.extras["epoch"], "49");
    let mut net = ReidNet::new(
        device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride: 1,
            pooling: Pooling::Avg,
            neck: true,
            dropout: 0.0,
            classes: Some(10),
            seed: 3,
        },
    )
    .unwrap();
    net.make_domain_specific(2);
    let strict = LoadOptions {
        strict: true,
        ..Default::default()
    };
    let report = ckpt.apply(&net, &strict).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{report}"
    );
    assert_eq!(report.loaded.len(), net.named().len());
    // Source and target sets are distinct tensors of the file, each where it belongs.
    let named = net.named();
    let get = |n: &str| {
        named
            .iter()
            .find(|(k, _)| k == n)
            .unwrap()
            .1
            .get()
            .to_vec()
            .unwrap()
    };
    assert_eq!(
        get("bn1.dsbn.0.weight"),
        ckpt.tensors["bn1.dsbn.0.weight"].1
    );
    assert_ne!(get("bn1.dsbn.0.weight"), get("bn1.dsbn.1.weight"));
    let (xs, xv) = &expected["input"];
    let x = Tensor::from_slice(xv, xs, device).unwrap();
    let out = net.forward(&x, &Ctx::eval().domain(1)).unwrap();
    assert_features(
        "pooled_target_bn",
        &out.pooled.to_vec().unwrap(),
        &expected["pooled_target_bn"].1,
    );
    assert_features(
        "neck_normalised_target_bn",
        &net.extract(&x, 1).unwrap().to_vec().unwrap(),
        &expected["neck_normalised_target_bn"].1,
    );
}

/// SpCL's DataParallel DSBN checkpoint inside {'state_dict', 'epoch', 'best_mAP'}: target-BN
/// features equal PyTorch's.
#[test]
fn spcl_dsbn_features_match_pytorch_cpu() {
    check_spcl_dsbn(&Device::Cpu);
}

/// A pickle calling builtins.print is refused, naming the global, and prints nothing.
#[test]
fn evil_pickle_is_refused_without_running() {
    match read_checkpoint(&fixture("evil.pth")) {
        Err(WeightsError::ForbiddenGlobal { global, .. }) => assert_eq!(global, "builtins.print"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("evil.pth was accepted"),
    }
    let dir = temp_dir("evil");
    let out = dir.join("evil.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_unreid"))
        .args(["convert", fixture("evil.pth").to_str().unwrap()])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("builtins.print"), "{stderr}");
    assert!(
        !stdout.contains("ran code") && !stderr.contains("ran code"),
        "{stdout}{stderr}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Truncated PyTorch files (zip and legacy) and junk are errors that say so; never a panic.
#[test]
fn truncated_and_foreign_files_are_errors() {
    let dir = temp_dir("trunc");
    for file in ["small_legacy.pth", "small_fastreid.pth"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        for cut in [2, 20, 300, 1500, bytes.len() / 2, bytes.len() - 9] {
            let p = dir.join(format!("cut-{cut}-{file}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let err = read_checkpoint(&p)
                .err()
                .unwrap_or_else(|| panic!("{file} cut at {cut} bytes was accepted"));
            let msg = err.to_string();
            assert!(msg.contains(p.to_str().unwrap()), "{msg}");
            if cut > 300 {
                assert!(msg.contains("truncated"), "{file} cut at {cut}: {msg}");
            }
        }
    }
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"this is not a checkpoint at all").unwrap();
    let msg = read_checkpoint(&junk).err().unwrap().to_string();
    assert!(
        msg.contains("neither safetensors nor a PyTorch checkpoint"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A ResNet-18 checkpoint given to a ResNet-50 says what it looks like; a partial checkpoint is
/// refused unless missing tensors are allowed, and then every one is reported.
#[test]
fn wrong_architecture_and_missing_tensors() {
    let r50 = ReidNet::new(&Device::Cpu, &ReidConfig::arch("resnet50")).unwrap();
    let before = r50.named()[0].1.get().to_vec().unwrap();
    let msg = load_weights(
        &r50,
        &fixture("spcl_resnet18_dsbn.pth.tar"),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("looks like a resnet18") && msg.contains("the model is a resnet50"),
        "{msg}"
    );
    assert_eq!(r50.named()[0].1.get().to_vec().unwrap(), before);

    let r18 = torchvision_net(&Device::Cpu, 1);
    let small = fixture("small_legacy.pth");
    let err = load_weights(&r18, &small, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, WeightsError::Missing { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("backbone") && msg.contains("layer1.1.conv1.weight"),
        "{msg}"
    );
    let allow = LoadOptions {
        allow_missing: true,
        ..Default::default()
    };
    let report = load_weights(&r18, &small, &allow).unwrap();
    assert_eq!(report.loaded.len(), 15);
    assert_eq!(report.missing.len(), r18.named().len() - 15);
    assert!(report
        .missing
        .contains(&"layer4.1.bn2.running_var".to_string()));
    assert_eq!(report.warnings().len(), report.missing.len());
    let w = &r18.named()[0].1.get().to_vec().unwrap();
    assert_eq!(w, &reference()["conv1.weight"].1);
}

fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, n) in ["0001_c1s1_000001_01.png", "0002_c2s1_000001_01.png"]
        .iter()
        .enumerate()
    {
        image::RgbImage::from_fn(32, 64, |x, y| {
            image::Rgb([(x * 7 + i as u32 * 50) as u8, (y * 3) as u8, (x * y) as u8])
        })
        .save(dir.join(n))
        .unwrap();
    }
}

fn extract(weights: &Path, images: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_unreid"))
        .args(["extract", "--arch", "resnet18", "--weights"])
        .arg(weights)
        .arg("--images")
        .arg(images)
        .args([
            "--height", "64", "--width", "32", "--device", "cpu", "--out",
        ])
        .arg(out)
        .args(extra)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    (
        run.status.success(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

/// `unreid convert` writes the mapped tensors with provenance; the converted file loads in
/// `unreid extract` and gives the same features as the .pth.tar itself. `extract` refuses a
/// partial file unless --allow-missing, which prints one `warning:` line per missing tensor.
#[test]
fn convert_then_extract_end_to_end() {
    let dir = temp_dir("convert");
    let src = fixture("spcl_resnet18_dsbn.pth.tar");
    let converted = dir.join("spcl.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_unreid"))
        .arg("convert")
        .arg(&src)
        .arg(&converted)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let meta = read_metadata(&converted).unwrap();
    assert_eq!(meta["converted_from"], "spcl_resnet18_dsbn.pth.tar");
    assert_eq!(meta["arch"], "resnet18");
    assert!(meta["source_layout"].contains("DSBN"), "{meta:?}");
    assert!(
        meta["source_entries"].contains("\"epoch\":\"49\""),
        "{meta:?}"
    );
    let a = read_checkpoint(&src).unwrap();
    let b = read_tensors(&converted).unwrap();
    assert_eq!(a.tensors, b);
    // A second convert onto the same output needs --overwrite.
    let again = Command::new(env!("CARGO_BIN_EXE_unreid"))
        .arg("convert")
        .arg(&src)
        .arg(&converted)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let images = dir.join("imgs");
    write_images(&images);
    let (ok, log) = extract(&converted, &images, &dir.join("f1.safetensors"), &[]);
    assert!(ok, "{log}");
    let (ok, log) = extract(&src, &images, &dir.join("f2.safetensors"), &[]);
    assert!(ok, "{log}");
    assert!(log.contains("SpCL"), "{log}");
    let f1 = read_tensors(&dir.join("f1.safetensors")).unwrap();
    let f2 = read_tensors(&dir.join("f2.safetensors")).unwrap();
    assert_eq!(f1["features"].0, vec![2, 512]);
    assert_eq!(f1["features"], f2["features"]);

    let small = fixture("small_module_prefix.pth.tar");
    let (ok, log) = extract(&small, &images, &dir.join("f3.safetensors"), &[]);
    assert!(
        !ok && log.contains("backbone tensors missing") && log.contains("--allow-missing"),
        "{log}"
    );
    let (ok, log) = extract(
        &small,
        &images,
        &dir.join("f3.safetensors"),
        &["--allow-missing"],
    );
    assert!(ok, "{log}");
    assert!(
        log.lines()
            .any(|l| l == "warning: missing tensor layer4.1.bn2.running_var (left as initialised)"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
