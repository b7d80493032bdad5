//! In-place memory-bank row updates (see shaders/memory.wgsl); no autograd.

use std::sync::Arc;

pub use crate::cpu::memory::MemoryUpdate;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{same_device, Params};
use crate::tensor::{Data, HostFloat};
use crate::{cpu, Device, Tensor};

/// Updates rows `rows[i]` of `memory` ([N, D]) with row i of `features` ([B, D]) and returns the
/// updated memory. On the GPU the memory's own buffer is rewritten in place (it is the one
/// large state a training step must not copy), so call it after `backward()` has consumed any
/// graph that read the memory; on CPU devices a new tensor is returned.
pub fn update_memory_rows(
    memory: &Tensor,
    features: &Tensor,
    rows: &[usize],
    momentum: f32,
    mode: MemoryUpdate,
) -> Result<Tensor> {
    same_device("update_memory_rows", &[memory, features])?;
    let (n, dim) = (memory.shape()[0], memory.shape()[1]);
    if memory.rank() != 2 || features.rank() != 2 || features.shape() != [rows.len(), dim] {
        return shape_err(
            "update_memory_rows",
            format!(
                "memory {:?}, features {:?}, {} rows",
                memory.shape(),
                features.shape(),
                rows.len()
            ),
        );
    }
    if let Some(bad) = rows.iter().find(|&&r| r >= n) {
        return shape_err(
            "update_memory_rows",
            format!("row {bad} is outside the memory's {n} rows"),
        );
    }
    if rows.is_empty() {
        return Ok(memory.clone());
    }
    match memory.device() {
        Device::Gpu(g) => {
            // Group the batch by row, keeping batch order within each row.
            let mut order: Vec<usize> = (0..rows.len()).collect();
            order.sort_by_key(|&i| (rows[i], i));
            let mut starts = vec![0i32];
            let mut distinct = Vec::new();
            for (k, &i) in order.iter().enumerate() {
                if k == 0 || rows[order[k - 1]] != rows[i] {
                    if k > 0 {
                        starts.push(k as i32);
                    }
                    distinct.push(rows[i] as i32);
                }
            }
            starts.push(order.len() as i32);
            let samples: Vec<i32> = order.iter().map(|&i| i as i32).collect();
            let d = memory.device();
            let (starts_t, samples_t, rows_t) = (
                Tensor::from_i32(&starts, &[starts.len()], d)?,
                Tensor::from_i32(&samples, &[samples.len()], d)?,
                Tensor::from_i32(&distinct, &[distinct.len()], d)?,
            );
            let params = Params::new()
                .usize(dim)
                .usize(distinct.len())
                .f32(momentum)
                .u32(0);
            let kernel = Kernel::new("memory", "update_rows").with("MODE", mode as u32);
            let bufs = [
                memory.gpu_buffer().unwrap(),
                features.gpu_buffer().unwrap(),
                starts_t.gpu_buffer().unwrap(),
                samples_t.gpu_buffer().unwrap(),
                rows_t.gpu_buffer().unwrap(),
            ];
            g.dispatch(
                &kernel,
                params.bytes(),
                &bufs,
                grid_1d(distinct.len() as u32, 1),
            )?;
            Ok(memory.detach())
        }
        _ => {
            let data = match (memory.host_float().unwrap(), features.host_float().unwrap()) {
                (HostFloat::F32(m), HostFloat::F32(f)) => {
                    let mut m = m.to_vec();
                    cpu::memory::update_rows(&mut m, f, dim, rows, momentum as f64, mode);
                    Data::F32(Arc::new(m))
                }
                (HostFloat::F64(m), HostFloat::F64(f)) => {
                    let mut m = m.to_vec();
                    cpu::memory::update_rows(&mut m, f, dim, rows, momentum as f64, mode);
                    Data::F64(Arc::new(m))
                }
                _ => unreachable!("one device, one precision"),
            };
            Ok(Tensor::from_parts(
                vec![n, dim],
                crate::DType::F32,
                memory.device().clone(),
                data,
            ))
        }
    }
}
