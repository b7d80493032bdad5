//! MobileNetV2 (width 1.0) in torchvision's layout and parameter names: `features.0` ..
//! `features.18` and the ImageNet head `classifier.1` (dropout 0.2 at `classifier.0`).

use super::fit::ConvVisitor;
use super::{BatchNorm, Conv2d, Ctx, Init, Linear, Module, Param};
use crate::ops::batchnorm::Activation;
use crate::ops::conv2d::Conv2dSpec;
use crate::{Result, Tensor};

/// Conv + BN + optional ReLU6 (torchvision's Conv2dNormActivation: `.0` conv, `.1` bn).
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    relu6: bool,
}

impl ConvBn {
    fn new(
        init: &mut Init,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        relu6: bool,
    ) -> Result<ConvBn> {
        Ok(ConvBn {
            conv: Conv2d::new(
                init,
                cin,
                cout,
                k,
                Conv2dSpec::new(stride, (k - 1) / 2).groups(groups),
            )?,
            bn: BatchNorm::new(init, cout)?,
            relu6,
        })
    }
    fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let act = if self.relu6 {
            Activation::Relu6
        } else {
            Activation::None
        };
        self.bn.forward_act(&self.conv.forward(x)?, ctx, act)
    }
}

impl Module for ConvBn {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        self.conv.visit(&format!("{prefix}0."), f);
        self.bn.visit(&format!("{prefix}1."), f);
    }
    fn visit_bn_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(&mut self.bn)
    }
}

/// One `features.i` entry: the stem/last ConvBn, or an inverted residual (`conv.0` .. `conv.3`).
enum Feature {
    Plain(ConvBn),
    Inverted { layers: Vec<ConvBn>, residual: bool },
}

pub struct MobileNetV2 {
    features: Vec<Feature>,
    pub classifier: Option<Linear>,
    pub out_channels: usize,
}

impl MobileNetV2 {
    /// `classes`: Some(1000) for the ImageNet head, None for a backbone.
    pub fn new(init: &mut Init, classes: Option<usize>) -> Result<MobileNetV2> {
        let settings = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ];
        let mut features = vec![Feature::Plain(ConvBn::new(init, 3, 32, 3, 2, 1, true)?)];
        let mut cin = 32;
        for (t, c, n, s) in settings {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let hidden = cin * t;
                let mut layers = Vec::new();
                if t != 1 {
                    layers.push(ConvBn::new(init, cin, hidden, 1, 1, 1, true)?);
                }
                layers.push(ConvBn::new(init, hidden, hidden, 3, stride, hidden, true)?);
                layers.push(ConvBn::new(init, hidden, c, 1, 1, 1, false)?);
                features.push(Feature::Inverted {
                    layers,
                    residual: stride == 1 && cin == c,
                });
                cin = c;
            }
        }
        features.push(Feature::Plain(ConvBn::new(init, cin, 1280, 1, 1, 1, true)?));
        let classifier = classes
            .map(|k| Linear::new(init, 1280, k, true))
            .transpose()?;
        Ok(MobileNetV2 {
            features,
            classifier,
            out_channels: 1280,
        })
    }

    /// The final feature map [N, 1280, H/32, W/32].
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let mut y = x.clone();
        for f in &self.features {
            y = match f {
                Feature::Plain(c) => c.forward(&y, ctx)?,
                Feature::Inverted { layers, residual } => {
                    let mut h = y.clone();
                    for l in layers {
                        h = l.forward(&h, ctx)?;
                    }
                    if *residual {
                        y.add(&h)?
                    } else {
                        h
                    }
                }
            };
        }
        Ok(y)
    }

    /// ImageNet logits and the pooled features (eval: dropout is the identity).
    pub fn classify(&self, x: &Tensor, ctx: &Ctx) -> Result<(Tensor, Tensor)> {
        let pooled = self.forward(x, ctx)?.global_avg_pool()?;
        let head = self
            .classifier
            .as_ref()
            .ok_or_else(|| crate::Error::Shape {
                op: "mobilenet_v2",
                message: "built without a classifier".into(),
            })?;
        let h = if ctx.training {
            pooled.dropout(0.2, ctx.seed)?
        } else {
            pooled.clone()
        };
        Ok((head.forward(&h)?, pooled))
    }
}

impl MobileNetV2 {
    /// Calls `f` with every convolution's torchvision name (`features.2.conv.0.0`, ..) and binding
    /// needs for an input of shape `x` [N, 3, H, W] (`nn::ReidNet::check_binding_limit`); returns
    /// the final feature map's shape.
    pub fn walk_convs(&self, x: &[usize], f: &mut ConvVisitor) -> Result<Vec<usize>> {
        let mut y = x.to_vec();
        for (i, feat) in self.features.iter().enumerate() {
            y = match feat {
                Feature::Plain(c) => f(format!("features.{i}.0"), &c.conv.binding_needs(&y)?),
                Feature::Inverted { layers, .. } => {
                    let n = layers.len();
                    let mut h = y.clone();
                    for (j, l) in layers.iter().enumerate() {
                        // As `visit`: the last layer's conv is `conv.{n-1}`, the others `conv.{j}.0`.
                        let name = if j + 1 == n {
                            format!("features.{i}.conv.{j}")
                        } else {
                            format!("features.{i}.conv.{j}.0")
                        };
                        h = f(name, &l.conv.binding_needs(&h)?);
                    }
                    h
                }
            };
        }
        Ok(y)
    }
}

impl Module for MobileNetV2 {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        for (i, feat) in self.features.iter().enumerate() {
            match feat {
                Feature::Plain(c) => c.visit(&format!("{prefix}features.{i}."), f),
                Feature::Inverted { layers, .. } => {
                    // With expansion: conv.0 (1x1), conv.1 (dw), conv.2 (1x1 conv), conv.3 (bn);
                    // without: conv.0 (dw), conv.1 (conv), conv.2 (bn).
                    let n = layers.len();
                    for (j, l) in layers[..n - 1].iter().enumerate() {
                        l.visit(&format!("{prefix}features.{i}.conv.{j}."), f);
                    }
                    let last = &layers[n - 1];
                    last.conv
                        .visit(&format!("{prefix}features.{i}.conv.{}.", n - 1), f);
                    last.bn.visit(&format!("{prefix}features.{i}.conv.{n}."), f);
                }
            }
        }
        if let Some(c) = &self.classifier {
            c.visit(&format!("{prefix}classifier.1."), f);
        }
    }
    fn visit_bn_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        for feat in &mut self.features {
            match feat {
                Feature::Plain(c) => c.visit_bn_mut(f),
                Feature::Inverted { layers, .. } => {
                    layers.iter_mut().for_each(|l| l.visit_bn_mut(f))
                }
            }
        }
    }
}
