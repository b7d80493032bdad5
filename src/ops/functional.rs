//! Layer functions composed from the core ops (no kernels of their own): linear, flatten and
//! seeded dropout. (L2 normalisation is `Tensor::l2_normalize` in ops/losses.rs.)

use crate::error::{shape_err, Result};
use crate::{random, Tensor};

impl Tensor {
    /// `x W^T + b` for x [N, in], weight [out, in], bias [out].
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        if self.rank() != 2 || weight.rank() != 2 || self.shape()[1] != weight.shape()[1] {
            return shape_err(
                "linear",
                format!(
                    "input {:?} does not fit weight {:?} ([out, in])",
                    self.shape(),
                    weight.shape()
                ),
            );
        }
        let y = self.matmul_t(weight, false, true)?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    /// [N, ...] -> [N, prod(...)].
    pub fn flatten(&self) -> Result<Tensor> {
        if self.rank() == 0 {
            return shape_err("flatten", "needs at least one axis");
        }
        let n = self.shape()[0];
        self.reshape(&[n, self.numel().checked_div(n).unwrap_or(0)])
    }

    /// Inverted dropout with drop probability `p`: the mask is element `i` of stream `seed` (the
    /// counter-based generator in `random`), so it is the same on every device.
    pub fn dropout(&self, p: f64, seed: u64) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return shape_err("dropout", format!("drop probability {p} is not in [0, 1)"));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f64> = (0..self.numel() as u64)
            .map(|i| {
                if random::uniform(seed, i) < p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        self.mul(&Tensor::from_f64(&mask, self.shape(), self.device())?)
    }
}
