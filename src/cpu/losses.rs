//! Reference kernels behind the losses.

use super::Float;

/// Per-class mean over the last axis of x [batch, rows]; `class_of_row[r]` names row r's class.
pub fn segment_mean<T: Float>(
    x: &[T],
    batch: usize,
    rows: usize,
    class_of_row: &[i32],
    classes: usize,
) -> Vec<T> {
    let mut sums = vec![T::zero(); batch * classes];
    let mut counts = vec![0usize; classes];
    for &c in class_of_row {
        counts[c as usize] += 1;
    }
    for b in 0..batch {
        for (r, &c) in class_of_row.iter().enumerate() {
            let s = &mut sums[b * classes + c as usize];
            *s = *s + x[b * rows + r];
        }
    }
    for (i, s) in sums.iter_mut().enumerate() {
        let n = counts[i % classes];
        if n > 0 {
            *s = *s / T::from_usize(n).unwrap();
        }
    }
    sums
}
