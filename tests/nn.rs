//! Layers with state: BN running statistics, domain-specific BN, parameter names and counts,
//! last stride, ReidNet outputs, and safetensors load/save (reports, refusals, atomic writes).

mod common;

use std::collections::HashMap;

use unreid::autograd::gradcheck::assert_close;
use unreid::nn::weights::read_metadata;
use unreid::nn::{
    load_safetensors, save_safetensors, BatchNorm, ClassifierPolicy, Ctx, Init, LoadOptions,
    Module, Pooling, ReidConfig, ReidNet, ResNet, ResNetDepth,
};
use unreid::ops::batchnorm::Activation;
use unreid::{Device, Tensor};

fn v(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// Per-channel mean and unbiased variance of x [n, c] (host).
fn channel_stats(x: &[f64], n: usize, c: usize) -> (Vec<f64>, Vec<f64>) {
    let mean: Vec<f64> = (0..c)
        .map(|j| (0..n).map(|i| x[i * c + j]).sum::<f64>() / n as f64)
        .collect();
    let var = (0..c)
        .map(|j| {
            (0..n)
                .map(|i| (x[i * c + j] - mean[j]).powi(2))
                .sum::<f64>()
                / (n - 1) as f64
        })
        .collect();
    (mean, var)
}

#[test]
fn batch_norm_running_statistics_follow_pytorch() {
    for device in [Device::CpuF64, common::gpu()] {
        let init = Init::new(&device, 0);
        let bn = BatchNorm::new(&init, 3).unwrap();
        let x = Tensor::randn(&[6, 3], 2.0, 3.0, 5, &device).unwrap();
        let y = bn.forward(&x, &Ctx::train()).unwrap();
        let (mean, var) = channel_stats(&v(&x), 6, 3);
        let rm: Vec<f64> = mean.iter().map(|m| 0.1 * m).collect();
        let rv: Vec<f64> = var.iter().map(|s| 0.9 + 0.1 * s).collect();
        assert_close(
            "running_mean",
            &v(&bn.sets[0].running_mean.get()),
            &rm,
            1e-5,
            1e-6,
        );
        assert_close(
            "running_var",
            &v(&bn.sets[0].running_var.get()),
            &rv,
            1e-5,
            1e-6,
        );
        // Training output: zero mean per channel.
        let (ym, _) = channel_stats(&v(&y), 6, 3);
        assert_close("normalised mean", &ym, &[0.0; 3], 0.0, 1e-5);
        // Eval uses the running statistics.
        let e = bn.forward(&x, &Ctx::eval()).unwrap();
        let want: Vec<f64> = v(&x)
            .iter()
            .enumerate()
            .map(|(i, xv)| (xv - rm[i % 3]) / (rv[i % 3] + 1e-5).sqrt())
            .collect();
        assert_close("eval output", &v(&e), &want, 1e-5, 1e-5);
    }
}

#[test]
fn domain_specific_batch_norm_keeps_domains_apart() {
    let device = common::gpu();
    let init = Init::new(&device, 0);
    let mut bn = BatchNorm::new(&init, 4).unwrap();
    bn.sets[0]
        .weight
        .set(Tensor::from_slice(&[1.0, 2.0, 0.5, 1.5], &[4], &device).unwrap());
    bn.make_domain_specific(2);
    assert_eq!(bn.sets.len(), 2);
    // The copy starts equal but is its own parameter.
    assert_eq!(v(&bn.sets[1].weight.get()), vec![1.0, 2.0, 0.5, 1.5]);
    bn.sets[1]
        .bias
        .set(Tensor::from_slice(&[0.5; 4], &[4], &device).unwrap());
    let names: Vec<String> = bn.named().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"dsbn.1.running_var".to_string()),
        "{names:?}"
    );

    let x = Tensor::randn(&[5, 4, 3, 2], 1.0, 2.0, 9, &device).unwrap();
    let y = bn
        .forward(&x, &Ctx::train().parts(&[(0, 2), (1, 3)]))
        .unwrap();
    // Each part equals a plain BN of that part with that domain's parameters.
    for (d, start, count) in [(0, 0, 2), (1, 2, 3)] {
        let s = &bn.sets[d];
        let part = x.narrow(0, start, count).unwrap();
        let (want, mean, var) = part
            .batch_norm_train(&s.weight.get(), &s.bias.get(), 1e-5, Activation::None)
            .unwrap();
        assert_close(
            &format!("domain {d} output"),
            &v(&y.narrow(0, start, count).unwrap()),
            &v(&want),
            1e-5,
            1e-5,
        );
        let m = count * 6;
        let rv: Vec<f64> = v(&var)
            .iter()
            .map(|s| 0.9 + 0.1 * s * m as f64 / (m - 1) as f64)
            .collect();
        let rm: Vec<f64> = v(&mean).iter().map(|s| 0.1 * s).collect();
        assert_close(
            &format!("domain {d} running mean"),
            &v(&s.running_mean.get()),
            &rm,
            1e-5,
            1e-6,
        );
        assert_close(
            &format!("domain {d} running var"),
            &v(&s.running_var.get()),
            &rv,
            1e-5,
            1e-6,
        );
    }
    // Gradients reach each domain's parameters from its own part only: GPU vs the f64 reference.
    let grads = |device: &Device| {
        let init = Init::new(device, 0);
        let mut bn = BatchNorm::new(&init, 4).unwrap();
        bn.make_domain_specific(2);
        let x = Tensor::randn(&[5, 4, 3, 2], 1.0, 2.0, 9, device)
            .unwrap()
            .with_requires_grad();
        let w = Tensor::randn(&[5, 4, 3, 2], 0.0, 1.0, 10, device).unwrap();
        let y = bn
            .forward(&x, &Ctx::train().parts(&[(0, 2), (1, 3)]))
            .unwrap();
        y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let mut out = vec![v(&x.grad().unwrap())];
        for s in &bn.sets {
            out.push(v(&s.weight.get().grad().unwrap()));
            out.push(v(&s.bias.get().grad().unwrap()));
        }
        out
    };
    for (i, (g, r)) in grads(&device)
        .iter()
        .zip(grads(&Device::CpuF64))
        .enumerate()
    {
        assert_close(&format!("dsbn gradient {i}"), g, &r, 1e-4, 1e-5);
    }
    // Evaluating a domain uses that domain's running statistics.
    let e1 = bn.forward(&x, &Ctx::eval().domain(1)).unwrap();
    let s = &bn.sets[1];
    let want = x
        .batch_norm_eval(
            &s.weight.get(),
            &s.bias.get(),
            &s.running_mean.get(),
            &s.running_var.get(),
            1e-5,
            Activation::None,
        )
        .unwrap();
    assert_close("eval domain 1", &v(&e1), &v(&want), 1e-6, 1e-6);
    assert!(bn.forward(&x, &Ctx::eval().domain(2)).is_err());
    assert!(bn
        .forward(&x, &Ctx::train().parts(&[(0, 2), (1, 2)]))
        .is_err());
}

fn count(m: &dyn Module, trainable_only: bool) -> usize {
    m.named()
        .iter()
        .filter(|(_, p)| !trainable_only || p.trainable())
        .map(|(_, p)| p.shape().iter().product::<usize>())
        .sum()
}

#[test]
fn torchvision_names_and_parameter_counts() {
    let device = Device::Cpu;
    let mut init = Init::new(&device, 1);
    // torchvision's counts without the 1000-way fc: 11,689,512 - 513,000 and 25,557,032 - 2,049,000.
    let r18 = ResNet::new(&mut init, ResNetDepth::R18, 1).unwrap();
    assert_eq!(count(&r18, true), 11_176_512);
    let r50 = ResNet::new(&mut init, ResNetDepth::R50, 1).unwrap();
    assert_eq!(count(&r50, true), 23_508_032);
    let names: Vec<String> = r50.named().into_iter().map(|(n, _)| n).collect();
    for n in [
        "conv1.weight",
        "bn1.running_mean",
        "layer4.0.downsample.1.running_var",
        "layer4.2.bn3.weight",
        "layer1.0.downsample.0.weight",
    ] {
        assert!(names.iter().any(|x| x == n), "missing {n}");
    }
    assert_eq!(
        names.len(),
        53 * 4 + 53,
        "53 convs and 53 BNs (4 tensors each)"
    );
    let r34 = ResNet::new(&mut init, ResNetDepth::R34, 1).unwrap();
    assert_eq!(count(&r34, true), 21_797_672 - 513_000);
    let m = unreid::nn::MobileNetV2::new(&mut init, Some(1000)).unwrap();
    assert_eq!(count(&m, true), 3_504_872);
}

#[test]
fn last_stride_and_reidnet_outputs() {
    let device = common::gpu();
    let x = Tensor::randn(&[2, 3, 64, 32], 0.0, 1.0, 3, &device).unwrap();
    let mut init = Init::new(&device, 2);
    for (stride, hw) in [(1, [4, 2]), (2, [2, 1])] {
        let r = ResNet::new(&mut init, ResNetDepth::R18, stride).unwrap();
        let y = unreid::no_grad(|| r.forward(&x, &Ctx::eval())).unwrap();
        assert_eq!(y.shape(), &[2, 512, hw[0], hw[1]], "last_stride {stride}");
    }
    let net = ReidNet::new(
        &device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride: 1,
            pooling: Pooling::Avg,
            neck: true,
            dropout: 0.5,
            classes: Some(7),
            seed: 4,
        },
    )
    .unwrap();
    let out = net.forward(&x, &Ctx::train().seed(3)).unwrap();
    assert_eq!(out.pooled.shape(), &[2, 512]);
    assert_eq!(out.bn.shape(), &[2, 512]);
    assert_eq!(out.logits.as_ref().unwrap().shape(), &[2, 7]);
    // The neck's bias is frozen (not trainable) at zero; the classifier has no bias.
    let names: Vec<String> = net.trainable().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"feat_bn.weight".into()) && !names.contains(&"feat_bn.bias".into()));
    assert!(
        names.contains(&"classifier.weight".into()) && !names.contains(&"classifier.bias".into())
    );
    // Eval features are unit-norm.
    let f = net.extract(&x, 0).unwrap();
    for row in v(&f).chunks(512) {
        let n: f64 = row.iter().map(|a| a * a).sum::<f64>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }
}

#[test]
fn safetensors_round_trip_report_and_refusals() {
    let dir = std::env::temp_dir().join(format!("unreid-nn-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let device = Device::Cpu;
    let a = ReidNet::new(
        &device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride: 1,
            pooling: Pooling::Gem,
            neck: true,
            dropout: 0.0,
            classes: Some(10),
            seed: 1,
        },
    )
    .unwrap();
    let path = dir.join("a.safetensors");
    let meta = HashMap::from([("note".to_string(), "test".to_string())]);
    save_safetensors(&a, &path, meta).unwrap();
    assert_eq!(read_metadata(&path).unwrap()["note"], "test");
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp")));

    // Same architecture, other seed: loads everything back exactly.
    let b = ReidNet::new(
        &device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride: 1,
            pooling: Pooling::Gem,
            neck: true,
            dropout: 0.0,
            classes: Some(10),
            seed: 2,
        },
    )
    .unwrap();
    let report = load_safetensors(&b, &path, &LoadOptions::default()).unwrap();
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{report}"
    );
    for ((n, pa), (_, pb)) in a.named().iter().zip(b.named()) {
        assert_eq!(
            pa.get().to_vec().unwrap(),
            pb.get().to_vec().unwrap(),
            "{n}"
        );
    }

    // Another classifier size: refused by default, naming key and both shapes ...
    let c = ReidNet::new(
        &device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride: 1,
            pooling: Pooling::Gem,
            neck: true,
            dropout: 0.0,
            classes: Some(4),
            seed: 3,
        },
    )
    .unwrap();
    let before = c.named()[0].1.get().to_vec().unwrap();
    let err = load_safetensors(&c, &path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("classifier.weight") && err.contains("[10, 512]") && err.contains("[4, 512]"),
        "{err}"
    );
    assert_eq!(
        c.named()[0].1.get().to_vec().unwrap(),
        before,
        "a refused load changes nothing"
    );
    // ... skipped or re-initialised on request.
    let skip = LoadOptions {
        classifier: ClassifierPolicy::Skip,
        ..Default::default()
    };
    let report = load_safetensors(&c, &path, &skip).unwrap();
    assert_eq!(report.skipped, vec!["classifier.weight".to_string()]);
    let reinit = LoadOptions {
        classifier: ClassifierPolicy::Reinit,
        ..Default::default()
    };
    load_safetensors(&c, &path, &reinit).unwrap();
    let w = c
        .classifier
        .as_ref()
        .unwrap()
        .weight
        .get()
        .to_vec()
        .unwrap();
    assert!(w.iter().all(|x| x.abs() < 0.01) && w.iter().any(|&x| x != 0.0));

    // A backbone-only model: the head's keys are unexpected; a model with a head the file lacks
    // reports them missing (strict refuses).
    let bare = ReidNet::new(
        &device,
        &ReidConfig {
            arch: "resnet18".into(),
            last_stride: 1,
            pooling: Pooling::Avg,
            neck: false,
            dropout: 0.0,
            classes: None,
            seed: 4,
        },
    )
    .unwrap();
    let report = load_safetensors(&bare, &path, &LoadOptions::default()).unwrap();
    assert!(report.missing.is_empty());
    assert!(
        report
            .unexpected
            .contains(&"feat_bn.running_var".to_string())
            && report.unexpected.contains(&"gem.p".to_string())
    );
    let path2 = dir.join("bare.safetensors");
    save_safetensors(&bare, &path2, HashMap::new()).unwrap();
    let report = load_safetensors(&b, &path2, &LoadOptions::default()).unwrap();
    assert!(
        report.missing.contains(&"feat_bn.weight".to_string()),
        "{report}"
    );
    let strict = LoadOptions {
        strict: true,
        ..Default::default()
    };
    assert!(load_safetensors(&b, &path2, &strict)
        .unwrap_err()
        .to_string()
        .contains("missing"));

    // A backbone layer of the wrong shape is refused whatever the classifier policy.
    let r34 = ReidNet::new(
        &device,
        &ReidConfig {
            arch: "resnet50".into(),
            last_stride: 1,
            pooling: Pooling::Avg,
            neck: false,
            dropout: 0.0,
            classes: None,
            seed: 5,
        },
    )
    .unwrap();
    let err = load_safetensors(&r34, &path, &skip)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer1.0.conv1.weight"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
