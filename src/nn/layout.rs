//! Parameter names of the PyTorch re-ID toolboxes, mapped to unreid's (torchvision's) names.
//!
//! Recognised layouts (each key is mapped independently; unknown keys are kept as they are and
//! end up reported as unexpected):
//! - `module.` prefixes (DataParallel / DistributedDataParallel) are stripped;
//! - torchvision: `conv1.`, `bn1.`, `layer1..4.` (and the ImageNet `fc.*`, which unreid has not);
//! - the `base` Sequential of SpCL / Cluster Contrast / ISE (yxgeee/SpCL `models/resnet.py`):
//!   `base.0` conv1, `base.1` bn1, `base.4..7` layer1..4 (ReLU and max pool in between);
//! - MMT's (yxgeee/MMT `mmt/models/resnet.py`), whose stem has no ReLU: `base.3..6` = layer1..4;
//! - fast-reid (`backbone.*`, `heads.pool_layer.p` -> `gem.p`, `heads.bottleneck.0.*` /
//!   `heads.bnneck.*` -> `feat_bn.*`, `heads.weight` / `heads.classifier.weight` -> `classifier.weight`);
//! - SpCL's DSBN (`X.BN_S.*` source, `X.BN_T.*` target) -> `X.dsbn.0.*` / `X.dsbn.1.*`
//!   (unreid's domain-specific sets: domain 0 = source, 1 = target);
//! - `num_batches_tracked` buffers are dropped.

use std::collections::BTreeMap;

/// What the mapping recognised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayoutInfo {
    /// The naming scheme: `torchvision`, `SpCL/Cluster Contrast/ISE base.N`, `MMT base.N`,
    /// `fast-reid`, or `unknown`.
    pub scheme: String,
    /// A `module.` prefix was stripped.
    pub data_parallel: bool,
    /// SpCL DSBN keys (`BN_S`/`BN_T`) were mapped to domain sets 0/1.
    pub dsbn: bool,
    /// `num_batches_tracked` buffers dropped.
    pub dropped_counters: usize,
    /// Things a user should know (e.g. MMT's stem differs from unreid's).
    pub notes: Vec<String>,
}

impl std::fmt::Display for LayoutInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.scheme)?;
        if self.data_parallel {
            f.write_str(", `module.` prefix stripped")?;
        }
        if self.dsbn {
            f.write_str(", DSBN BN_S/BN_T -> domain 0/1")?;
        }
        Ok(())
    }
}

fn strip_module(k: &str) -> (&str, bool) {
    let mut k = k;
    let mut stripped = false;
    while let Some(rest) = k.strip_prefix("module.") {
        k = rest;
        stripped = true;
    }
    (k, stripped)
}

/// Maps every name of a checkpoint to unreid's names. Returns the mapped tensors (values moved,
/// not copied) and what was recognised. Two keys that map to the same name keep the first and
/// report the second in the notes.
pub fn map_names<T>(tensors: BTreeMap<String, T>) -> (BTreeMap<String, T>, LayoutInfo) {
    let mut info = LayoutInfo::default();
    let stripped: Vec<(String, T)> = tensors
        .into_iter()
        .filter_map(|(k, v)| {
            if k.ends_with("num_batches_tracked") {
                info.dropped_counters += 1;
                return None;
            }
            let (name, s) = strip_module(&k);
            info.data_parallel |= s;
            Some((name.to_string(), v))
        })
        .collect();

    let has = |p: &str| stripped.iter().any(|(k, _)| k.starts_with(p));
    let fastreid = has("backbone.");
    let base = has("base.0.") || has("base.1.");
    // SpCL keeps ReLU and max pool in the Sequential (base.4..7 = layer1..4); MMT drops the ReLU
    // (base.3..6).
    let spcl = base && has("base.7.");
    let base_map: &[(&str, &str)] = if spcl {
        &[
            ("base.0.", "conv1."),
            ("base.1.", "bn1."),
            ("base.4.", "layer1."),
            ("base.5.", "layer2."),
            ("base.6.", "layer3."),
            ("base.7.", "layer4."),
        ]
    } else {
        &[
            ("base.0.", "conv1."),
            ("base.1.", "bn1."),
            ("base.3.", "layer1."),
            ("base.4.", "layer2."),
            ("base.5.", "layer3."),
            ("base.6.", "layer4."),
        ]
    };
    info.scheme = if fastreid {
        "fast-reid (backbone./heads.)".into()
    } else if spcl {
        "SpCL/Cluster Contrast/ISE (base.N Sequential)".into()
    } else if base {
        info.notes.push(
            "MMT's stem has no ReLU after bn1; unreid's has one, so features differ slightly \
             from MMT's own evaluation"
                .into(),
        );
        "MMT (base.N Sequential, stem without ReLU)".into()
    } else if has("layer1.") || has("conv1.") {
        "torchvision".into()
    } else if has("features.") {
        "torchvision (features.N)".into()
    } else {
        "unknown".into()
    };

    let mut out = BTreeMap::new();
    for (k, v) in stripped {
        let mut name = k.clone();
        if fastreid {
            if let Some(rest) = name.strip_prefix("backbone.") {
                name = rest.to_string();
            } else if name == "heads.pool_layer.p" {
                name = "gem.p".into();
            } else if let Some(rest) = name
                .strip_prefix("heads.bottleneck.0.")
                .or_else(|| name.strip_prefix("heads.bnneck."))
            {
                name = format!("feat_bn.{rest}");
            } else if name == "heads.weight" || name == "heads.classifier.weight" {
                name = "classifier.weight".into();
            }
        } else if base {
            if let Some((from, to)) = base_map.iter().find(|(f, _)| name.starts_with(f)) {
                name = format!("{to}{}", &name[from.len()..]);
            }
        }
        if name.contains(".BN_S.") || name.contains(".BN_T.") {
            info.dsbn = true;
            name = name
                .replace(".BN_S.", ".dsbn.0.")
                .replace(".BN_T.", ".dsbn.1.");
        }
        if out.contains_key(&name) {
            info.notes.push(format!(
                "{k} maps to {name}, which an earlier key already gave"
            ));
            continue;
        }
        out.insert(name, v);
    }
    (out, info)
}

/// The architecture a set of unreid/torchvision names looks like: `resnet18`, `resnet34`,
/// `resnet50`, `resnet101`, `resnet152`, `mobilenet_v2`, or a description of an unknown ResNet.
/// None when the names are no backbone (e.g. a partial file).
pub fn guess_arch<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut blocks = [0usize; 4];
    let mut bottleneck = false;
    let mut mobilenet = false;
    for n in names {
        if let Some(rest) = n.strip_prefix("layer") {
            let mut parts = rest.split('.');
            let (Some(l), Some(b)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let (Ok(l @ 1..=4), Ok(b)) = (l.parse::<usize>(), b.parse::<usize>()) {
                blocks[l - 1] = blocks[l - 1].max(b + 1);
                bottleneck |= parts.next() == Some("conv3");
            }
        } else if n.starts_with("features.18.") {
            mobilenet = true;
        }
    }
    if mobilenet {
        return Some("mobilenet_v2".into());
    }
    if blocks.contains(&0) {
        return None;
    }
    Some(
        match (bottleneck, blocks) {
            (false, [2, 2, 2, 2]) => "resnet18",
            (false, [3, 4, 6, 3]) => "resnet34",
            (true, [3, 4, 6, 3]) => "resnet50",
            (true, [3, 4, 23, 3]) => "resnet101",
            (true, [3, 8, 36, 3]) => "resnet152",
            _ => {
                return Some(format!(
                    "a ResNet with {blocks:?} {} blocks",
                    if bottleneck { "bottleneck" } else { "basic" }
                ))
            }
        }
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(keys: &[&str]) -> Vec<String> {
        let m: BTreeMap<String, ()> = keys.iter().map(|k| (k.to_string(), ())).collect();
        map_names(m).0.into_keys().collect()
    }

    #[test]
    fn spcl_dsbn_under_data_parallel() {
        let (m, info) = map_names(
            [
                "module.base.0.weight",
                "module.base.1.BN_S.weight",
                "module.base.1.BN_T.running_var",
                "module.base.1.BN_T.num_batches_tracked",
                "module.base.4.0.conv1.weight",
                "module.base.7.1.bn2.BN_T.bias",
                "module.feat_bn.BN_T.weight",
                "module.classifier.weight",
            ]
            .iter()
            .map(|k| (k.to_string(), ()))
            .collect(),
        );
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "bn1.dsbn.0.weight",
                "bn1.dsbn.1.running_var",
                "classifier.weight",
                "conv1.weight",
                "feat_bn.dsbn.1.weight",
                "layer1.0.conv1.weight",
                "layer4.1.bn2.dsbn.1.bias",
            ]
        );
        assert!(info.data_parallel && info.dsbn && info.scheme.starts_with("SpCL"));
        assert_eq!(info.dropped_counters, 1);
    }

    #[test]
    fn mmt_and_fastreid() {
        assert_eq!(
            names(&[
                "base.0.weight",
                "base.3.0.conv1.weight",
                "base.6.2.bn3.bias"
            ]),
            ["conv1.weight", "layer1.0.conv1.weight", "layer4.2.bn3.bias"]
        );
        assert_eq!(
            names(&[
                "backbone.layer1.0.conv1.weight",
                "heads.pool_layer.p",
                "heads.bottleneck.0.running_mean",
                "heads.weight",
                "heads.other"
            ]),
            [
                "classifier.weight",
                "feat_bn.running_mean",
                "gem.p",
                "heads.other",
                "layer1.0.conv1.weight"
            ]
        );
    }

    #[test]
    fn architectures_by_name() {
        let mut r50 = vec!["conv1.weight".to_string()];
        for (l, n) in [3, 4, 6, 3].iter().enumerate() {
            for b in 0..*n {
                r50.push(format!("layer{}.{b}.conv3.weight", l + 1));
            }
        }
        assert_eq!(
            guess_arch(r50.iter().map(String::as_str)).as_deref(),
            Some("resnet50")
        );
        let r18 = [
            "layer1.1.conv2.weight",
            "layer2.1.x",
            "layer3.1.x",
            "layer4.1.x",
        ];
        assert_eq!(guess_arch(r18).as_deref(), Some("resnet18"));
        assert_eq!(guess_arch(["conv1.weight", "layer1.0.conv1.weight"]), None);
    }
}
