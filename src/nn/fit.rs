//! Whether a model's activations fit one GPU storage binding, checked before the first step.
//!
//! wgpu binds a storage buffer whole or as a range, and a binding may not exceed the device's
//! `max_storage_buffer_binding_size` (lavapipe: 128 MiB). Every op binds its input and output
//! tensors, and a tensor is one buffer, so an activation larger than the limit cannot exist on
//! that adapter. Work inside an op is split to fit (`ops::conv2d` chunks im2col columns and
//! padded pointwise operands over the batch), but the activations themselves are not: a model
//! whose layer output exceeds the limit at the requested batch would fail mid-step, so
//! [`ReidNet::check_binding_limit`] says so first, naming the layer and the largest batch that
//! fits at that image size.

use super::{Backbone, ReidNet};
use crate::ops::conv2d::BindingNeeds;
use crate::{Error, Result};

/// Called with each convolution's torchvision name and binding needs; returns its output shape.
pub type ConvVisitor<'a> = dyn FnMut(String, &BindingNeeds) -> Vec<usize> + 'a;

/// One layer's share of the binding limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerFit {
    /// The layer's torchvision name (`features.2.conv.0.0`, `layer1.0.conv3`) or `input`.
    pub layer: String,
    /// Its output shape at the checked batch.
    pub out_shape: Vec<usize>,
    /// Bytes per image of its largest whole-batch buffer (input or output activation).
    pub per_image: u64,
    /// Bytes of the smallest chunk it can split its work into (0: no chunked work).
    pub min_chunk: u64,
}

/// The binding-limit verdict of one model at one batch and image size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingFit {
    /// Every convolution (and the input batch), in forward order.
    pub layers: Vec<LayerFit>,
    /// The largest batch whose every buffer fits the limit at this image size (0: none).
    pub max_batch: usize,
    /// The layer that sets `max_batch` (the largest activation per image; the first of equals).
    pub limiting_layer: String,
}

impl ReidNet {
    /// Binding needs of every convolution for an input batch [batch, 3, height, width], and the
    /// largest batch that fits a storage-binding limit of `limit` bytes. Errors: the image is
    /// too small for the backbone.
    pub fn binding_fit(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        limit: u64,
    ) -> Result<BindingFit> {
        let x = [batch, 3, height, width];
        let mut layers = vec![LayerFit {
            layer: "input".into(),
            out_shape: x.to_vec(),
            per_image: 4 * (3 * height * width) as u64,
            min_chunk: 0,
        }];
        let mut visit = |layer: String, n: &BindingNeeds| {
            layers.push(LayerFit {
                layer,
                out_shape: n.out_shape.clone(),
                per_image: n.per_image,
                min_chunk: n.min_chunk,
            });
            n.out_shape.clone()
        };
        match &self.backbone {
            Backbone::ResNet(r) => r.walk_convs(&x, &mut visit)?,
            Backbone::MobileNetV2(m) => m.walk_convs(&x, &mut visit)?,
        };
        let mut worst = &layers[0];
        for l in &layers {
            if l.per_image > worst.per_image {
                worst = l;
            }
        }
        let chunks_fit = layers.iter().all(|l| l.min_chunk <= limit);
        let max_batch = if chunks_fit {
            (limit / worst.per_image.max(1)) as usize
        } else {
            0
        };
        let limiting_layer = match layers.iter().find(|l| l.min_chunk > limit) {
            Some(l) => l.layer.clone(),
            None => worst.layer.clone(),
        };
        Ok(BindingFit {
            max_batch,
            limiting_layer,
            layers,
        })
    }

    /// Checks, before any step runs, that a batch of `batch` images of `height` x `width` fits
    /// a storage-binding limit of `limit` bytes (`Gpu::max_binding_bytes`). Errors: the first
    /// layer whose output (or smallest work chunk) exceeds the limit, with its shape and size,
    /// and the largest batch that fits at this image size.
    pub fn check_binding_limit(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        limit: u64,
    ) -> Result<()> {
        let fit = self.binding_fit(batch, height, width, limit)?;
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let arch = &self.config().arch;
        if let Some(l) = fit.layers.iter().find(|l| l.min_chunk > limit) {
            return Err(Error::Shape {
                op: "binding limit",
                message: format!(
                    "{arch} layer {}: one image at {height}x{width} needs a {:.1} MiB buffer but \
                     the adapter binds at most {:.1} MiB, so no batch fits at this image size",
                    l.layer,
                    mib(l.min_chunk),
                    mib(limit)
                ),
            });
        }
        if batch <= fit.max_batch {
            return Ok(());
        }
        let l = fit
            .layers
            .iter()
            .find(|l| batch as u64 * l.per_image > limit)
            .expect("a batch above max_batch has a layer over the limit");
        let fits = if fit.max_batch == 0 {
            "not even one image fits at this image size".to_string()
        } else {
            format!(
                "the largest batch that fits at {height}x{width} is {} (limited by {})",
                fit.max_batch, fit.limiting_layer
            )
        };
        Err(Error::Shape {
            op: "binding limit",
            message: format!(
                "{arch} at batch {batch} x 3x{height}x{width}: layer {} holds a {:?} activation of \
                 {:.1} MiB in one buffer, over the adapter's storage-binding limit of {:.1} MiB \
                 (an activation is one tensor and cannot be split); {fits}",
                l.layer,
                l.out_shape,
                mib(batch as u64 * l.per_image),
                mib(limit)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::nn::{ReidConfig, ReidNet};
    use crate::Device;

    const LAVAPIPE: u64 = 128 << 20;

    fn net(arch: &str) -> ReidNet {
        let cfg = ReidConfig {
            arch: arch.into(),
            last_stride: if arch == "resnet50" { 1 } else { 2 },
            ..Default::default()
        };
        ReidNet::new(&Device::Cpu, &cfg).unwrap()
    }

    #[test]
    fn mobilenet_v2_b64_256x128_exceeds_lavapipe_and_says_where() {
        // features.2.conv.0: 1x1 16 -> 96 at 128x64 = 96 * 8192 * 4 bytes = 3 MiB per image;
        // 128 MiB / 3 MiB = 42.67 -> 42 images.
        let m = net("mobilenet_v2");
        let fit = m.binding_fit(64, 256, 128, LAVAPIPE).unwrap();
        assert_eq!(fit.max_batch, 42);
        assert_eq!(fit.limiting_layer, "features.2.conv.0.0");
        let e = m
            .check_binding_limit(64, 256, 128, LAVAPIPE)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("features.2.conv.0.0") && e.contains("[64, 96, 128, 64]"),
            "{e}"
        );
        assert!(
            e.contains("largest batch that fits at 256x128 is 42"),
            "{e}"
        );
        m.check_binding_limit(42, 256, 128, LAVAPIPE).unwrap();
    }

    #[test]
    fn resnet50_b64_256x128_fits_lavapipe_exactly() {
        // The stem output [64, 64, 128, 64] and layer1's [64, 256, 64, 32] are 2^27 bytes each:
        // exactly the 128 MiB limit, so batch 64 fits and 65 does not.
        let r = net("resnet50");
        let fit = r.binding_fit(64, 256, 128, LAVAPIPE).unwrap();
        assert_eq!(fit.max_batch, 64);
        assert_eq!(fit.limiting_layer, "conv1");
        r.check_binding_limit(64, 256, 128, LAVAPIPE).unwrap();
        let e = r
            .check_binding_limit(65, 256, 128, LAVAPIPE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer conv1") && e.contains("is 64"), "{e}");
    }

    #[test]
    fn an_image_whose_chunk_cannot_fit_names_the_layer() {
        // The stem's im2col columns for one 3x64x32 image: K = 147 (148 padded) x P = 512.
        let r = net("resnet18");
        let e = r
            .check_binding_limit(1, 64, 32, 148 * 512 * 4 - 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer conv1") && e.contains("no batch fits"),
            "{e}"
        );
    }

    #[test]
    fn walk_names_match_the_parameter_names() {
        for arch in ["resnet50", "mobilenet_v2"] {
            let m = net(arch);
            let fit = m.binding_fit(2, 64, 32, LAVAPIPE).unwrap();
            let names: Vec<String> = crate::nn::Module::named(&m)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            for l in &fit.layers[1..] {
                let w = format!("{}.weight", l.layer);
                assert!(names.contains(&w), "{arch}: {w} is not a parameter");
            }
        }
    }
}
