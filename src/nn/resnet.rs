//! ResNet-18/34/50 in torchvision's layout and parameter names (v1.5: the stride sits on the 3x3
//! conv of a bottleneck), without the ImageNet `fc` head, and with a `last_stride` option:
//! 1 keeps layer4 at the resolution of layer3 (the re-ID convention: 256x128 -> 16x8).

use super::fit::ConvVisitor;
use super::{BatchNorm, Conv2d, Ctx, Init, Module, Param};
use crate::ops::batchnorm::Activation;
use crate::ops::conv2d::Conv2dSpec;
use crate::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetDepth {
    R18,
    R34,
    R50,
}

impl ResNetDepth {
    fn blocks(self) -> [usize; 4] {
        match self {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R34 | ResNetDepth::R50 => [3, 4, 6, 3],
        }
    }
    fn bottleneck(self) -> bool {
        self == ResNetDepth::R50
    }
}

struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    /// Bottleneck only.
    conv3: Option<(Conv2d, BatchNorm)>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn new(
        init: &mut Init,
        cin: usize,
        width: usize,
        stride: usize,
        bottleneck: bool,
    ) -> Result<Block> {
        let cout = if bottleneck { width * 4 } else { width };
        let downsample = if stride != 1 || cin != cout {
            Some((
                Conv2d::new(init, cin, cout, 1, Conv2dSpec::new(stride, 0))?,
                BatchNorm::new(init, cout)?,
            ))
        } else {
            None
        };
        Ok(if bottleneck {
            Block {
                conv1: Conv2d::new(init, cin, width, 1, Conv2dSpec::new(1, 0))?,
                bn1: BatchNorm::new(init, width)?,
                conv2: Conv2d::new(init, width, width, 3, Conv2dSpec::new(stride, 1))?,
                bn2: BatchNorm::new(init, width)?,
                conv3: Some((
                    Conv2d::new(init, width, cout, 1, Conv2dSpec::new(1, 0))?,
                    BatchNorm::new(init, cout)?,
                )),
                downsample,
            }
        } else {
            Block {
                conv1: Conv2d::new(init, cin, width, 3, Conv2dSpec::new(stride, 1))?,
                bn1: BatchNorm::new(init, width)?,
                conv2: Conv2d::new(init, width, width, 3, Conv2dSpec::new(1, 1))?,
                bn2: BatchNorm::new(init, width)?,
                conv3: None,
                downsample,
            }
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        // BN + ReLU fused where a ReLU follows the BN directly (the residual sum's stays apart).
        let y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, ctx, Activation::Relu)?;
        let y = match &self.conv3 {
            Some((c3, b3)) => {
                let y = self
                    .bn2
                    .forward_act(&self.conv2.forward(&y)?, ctx, Activation::Relu)?;
                b3.forward(&c3.forward(&y)?, ctx)?
            }
            None => self.bn2.forward(&self.conv2.forward(&y)?, ctx)?,
        };
        let identity = match &self.downsample {
            Some((c, b)) => b.forward(&c.forward(x)?, ctx)?,
            None => x.clone(),
        };
        y.add(&identity)?.relu()
    }
}

impl Block {
    /// Calls `f` with each convolution's name (under `prefix`) and binding needs on input `x`;
    /// returns the block's output shape.
    fn walk_convs(&self, prefix: &str, x: &[usize], f: &mut ConvVisitor) -> Result<Vec<usize>> {
        let y1 = f(format!("{prefix}conv1"), &self.conv1.binding_needs(x)?);
        let mut y = f(format!("{prefix}conv2"), &self.conv2.binding_needs(&y1)?);
        if let Some((c3, _)) = &self.conv3 {
            y = f(format!("{prefix}conv3"), &c3.binding_needs(&y)?);
        }
        if let Some((c, _)) = &self.downsample {
            f(format!("{prefix}downsample.0"), &c.binding_needs(x)?);
        }
        Ok(y)
    }
}

impl Module for Block {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        self.conv1.visit(&format!("{prefix}conv1."), f);
        self.bn1.visit(&format!("{prefix}bn1."), f);
        self.conv2.visit(&format!("{prefix}conv2."), f);
        self.bn2.visit(&format!("{prefix}bn2."), f);
        if let Some((c, b)) = &self.conv3 {
            c.visit(&format!("{prefix}conv3."), f);
            b.visit(&format!("{prefix}bn3."), f);
        }
        if let Some((c, b)) = &self.downsample {
            c.visit(&format!("{prefix}downsample.0."), f);
            b.visit(&format!("{prefix}downsample.1."), f);
        }
    }
    fn visit_bn_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(&mut self.bn1);
        f(&mut self.bn2);
        if let Some((_, b)) = &mut self.conv3 {
            f(b);
        }
        if let Some((_, b)) = &mut self.downsample {
            f(b);
        }
    }
}

/// A ResNet backbone: stem, max pool, layer1..layer4; `forward` returns the layer4 feature map.
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    layers: Vec<Vec<Block>>,
    pub depth: ResNetDepth,
    pub out_channels: usize,
}

impl ResNet {
    pub fn new(init: &mut Init, depth: ResNetDepth, last_stride: usize) -> Result<ResNet> {
        let conv1 = Conv2d::new(init, 3, 64, 7, Conv2dSpec::new(2, 3))?;
        let bn1 = BatchNorm::new(init, 64)?;
        let expansion = if depth.bottleneck() { 4 } else { 1 };
        let mut cin = 64;
        let mut layers = Vec::new();
        for (i, &n) in depth.blocks().iter().enumerate() {
            let width = 64 << i;
            let stride = match i {
                0 => 1,
                3 => last_stride,
                _ => 2,
            };
            let mut blocks = Vec::new();
            for j in 0..n {
                blocks.push(Block::new(
                    init,
                    cin,
                    width,
                    if j == 0 { stride } else { 1 },
                    depth.bottleneck(),
                )?);
                cin = width * expansion;
            }
            layers.push(blocks);
        }
        Ok(ResNet {
            conv1,
            bn1,
            layers,
            depth,
            out_channels: cin,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let mut y = self
            .bn1
            .forward_act(&self.conv1.forward(x)?, ctx, Activation::Relu)?
            .max_pool2d(3, 2, 1)?;
        for layer in &self.layers {
            for block in layer {
                y = block.forward(&y, ctx)?;
            }
        }
        Ok(y)
    }
}

impl ResNet {
    /// Calls `f` with every convolution's torchvision name and binding needs for an input of
    /// shape `x` [N, 3, H, W] (`nn::ReidNet::check_binding_limit`); returns layer4's output shape.
    pub fn walk_convs(&self, x: &[usize], f: &mut ConvVisitor) -> Result<Vec<usize>> {
        let mut y = f("conv1".into(), &self.conv1.binding_needs(x)?);
        // max_pool2d(3, 2, 1)
        y[2] = (y[2] + 2 - 3) / 2 + 1;
        y[3] = (y[3] + 2 - 3) / 2 + 1;
        for (i, layer) in self.layers.iter().enumerate() {
            for (j, block) in layer.iter().enumerate() {
                y = block.walk_convs(&format!("layer{}.{j}.", i + 1), &y, f)?;
            }
        }
        Ok(y)
    }
}

impl Module for ResNet {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        self.conv1.visit(&format!("{prefix}conv1."), f);
        self.bn1.visit(&format!("{prefix}bn1."), f);
        for (i, layer) in self.layers.iter().enumerate() {
            for (j, block) in layer.iter().enumerate() {
                block.visit(&format!("{prefix}layer{}.{j}.", i + 1), f);
            }
        }
    }
    fn visit_bn_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(&mut self.bn1);
        for layer in &mut self.layers {
            for block in layer {
                block.visit_bn_mut(f);
            }
        }
    }
}
