//! Learning-rate schedules, evaluated per epoch (as the reference re-ID code steps them).

/// The decay part of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    Constant,
    /// `gamma^(number of milestones <= epoch)` (torch MultiStepLR / StepLR).
    Step {
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// Cosine from the base rate down to `min_lr` over `epochs`.
    Cosine {
        epochs: usize,
        min_lr: f64,
    },
}

/// Linear warm-up from `factor * lr` to `lr` over `epochs` (MMT's WarmupMultiStepLR: factor 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Warmup {
    pub epochs: usize,
    pub factor: f64,
}

impl LrSchedule {
    /// StepLR(step_size, gamma) as milestones up to `epochs`.
    pub fn every(step_size: usize, gamma: f64, epochs: usize) -> LrSchedule {
        LrSchedule::Step {
            milestones: (1..)
                .map(|k| k * step_size)
                .take_while(|&m| m < epochs.max(1))
                .collect(),
            gamma,
        }
    }

    /// The learning rate for `epoch` (0-based).
    pub fn lr(&self, base_lr: f64, epoch: usize, warmup: Option<Warmup>) -> f64 {
        let decay = match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Step { milestones, gamma } => {
                gamma.powi(milestones.iter().filter(|&&m| m <= epoch).count() as i32)
            }
            LrSchedule::Cosine { epochs, min_lr } => {
                let t = (epoch as f64 / (*epochs).max(1) as f64).min(1.0);
                let min_factor = min_lr / base_lr;
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        let warm = match warmup {
            Some(w) if epoch < w.epochs => {
                let alpha = epoch as f64 / w.epochs as f64;
                w.factor * (1.0 - alpha) + alpha
            }
            _ => 1.0,
        };
        base_lr * decay * warm
    }
}
