//! `Tensor`: a shape, contiguous row-major storage on a `Device`, and (when tracked) an autograd node.
//!
//! Tensors are immutable values: ops return new tensors, and `clone()` is cheap (shared storage).
//! Float tensors hold f32 on the GPU and the CPU device, f64 on the f64 reference device; integer
//! tensors (labels, indices) hold i32 everywhere.

use std::sync::Arc;

use crate::autograd::Node;
use crate::error::{shape_err, Error, Result};
use crate::gpu::GpuBuffer;
use crate::{random, Device};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// f32 (f64 on `Device::CpuF64`).
    F32,
    /// i32 labels and indices.
    I32,
}

#[derive(Clone)]
pub(crate) enum Data {
    Gpu(Arc<GpuBuffer>),
    F32(Arc<Vec<f32>>),
    F64(Arc<Vec<f64>>),
    I32(Arc<Vec<i32>>),
}

/// Host float data of either precision, borrowed from a CPU tensor.
pub(crate) enum HostFloat<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

struct Inner {
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
    data: Data,
    node: Option<Arc<Node>>,
}

#[derive(Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub(crate) fn from_parts(
        shape: Vec<usize>,
        dtype: DType,
        device: Device,
        data: Data,
    ) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape,
                dtype,
                device,
                data,
                node: None,
            }),
        }
    }

    /// A float tensor on `device` from the reference computation's host result (`F32` or `F64`).
    pub(crate) fn from_host_f32(shape: Vec<usize>, device: &Device, v: Vec<f32>) -> Tensor {
        Tensor::from_parts(shape, DType::F32, device.clone(), Data::F32(Arc::new(v)))
    }
    pub(crate) fn from_host_f64(shape: Vec<usize>, device: &Device, v: Vec<f64>) -> Tensor {
        Tensor::from_parts(shape, DType::F32, device.clone(), Data::F64(Arc::new(v)))
    }
    pub(crate) fn from_gpu(
        shape: Vec<usize>,
        dtype: DType,
        device: &Device,
        buffer: GpuBuffer,
    ) -> Tensor {
        Tensor::from_parts(shape, dtype, device.clone(), Data::Gpu(Arc::new(buffer)))
    }

    pub(crate) fn with_node(&self, node: Arc<Node>) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape: self.inner.shape.clone(),
                dtype: self.inner.dtype,
                device: self.inner.device.clone(),
                data: self.inner.data.clone(),
                node: Some(node),
            }),
        }
    }

    /// Whether this handle is the only holder of its storage: no clone of this tensor and no
    /// other tensor (a view, a detached copy, a saved activation) shares its buffer. An op may then
    /// overwrite the storage in place (buffer donation, as JAX's `donate_argnums`) and no other
    /// tensor sees a value change, so tensors stay immutable values to every observer.
    pub(crate) fn owns_storage_alone(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
            && match &self.inner.data {
                Data::Gpu(b) => Arc::strong_count(b) == 1,
                Data::F32(v) => Arc::strong_count(v) == 1,
                Data::F64(v) => Arc::strong_count(v) == 1,
                Data::I32(v) => Arc::strong_count(v) == 1,
            }
    }

    /// The id of this tensor's GPU buffer (unique in the process while the buffer lives), None
    /// on the CPU devices. Tensors with one id share storage; tests use it to check that an
    /// in-place update kept a parameter in its buffer.
    pub fn storage_id(&self) -> Option<u64> {
        self.gpu_buffer().map(GpuBuffer::id)
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.inner.node.as_ref()
    }
    pub(crate) fn data(&self) -> &Data {
        &self.inner.data
    }

    fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
        if len != numel(shape) {
            return shape_err(op, format!("{len} values do not fill shape {shape:?}"));
        }
        Ok(())
    }

    /// A float tensor from host values.
    pub fn from_slice(values: &[f32], shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_slice", values.len(), shape)?;
        let shape = shape.to_vec();
        Ok(match device {
            Device::Gpu(g) => {
                let buffer = g.upload(bytemuck::cast_slice(values), "tensor upload")?;
                Tensor::from_gpu(shape, DType::F32, device, buffer)
            }
            Device::Cpu => Tensor::from_host_f32(shape, device, values.to_vec()),
            Device::CpuF64 => {
                Tensor::from_host_f64(shape, device, values.iter().map(|&v| v as f64).collect())
            }
        })
    }

    /// A float tensor from f64 host values (rounded to f32 except on `CpuF64`).
    pub fn from_f64(values: &[f64], shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_f64", values.len(), shape)?;
        match device {
            Device::CpuF64 => Ok(Tensor::from_host_f64(
                shape.to_vec(),
                device,
                values.to_vec(),
            )),
            _ => Tensor::from_slice(
                &values.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                shape,
                device,
            ),
        }
    }

    /// An integer tensor (labels, indices) from host values.
    pub fn from_i32(values: &[i32], shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_i32", values.len(), shape)?;
        let shape = shape.to_vec();
        Ok(match device {
            Device::Gpu(g) => {
                let buffer = g.upload(bytemuck::cast_slice(values), "tensor upload")?;
                Tensor::from_gpu(shape, DType::I32, device, buffer)
            }
            _ => Tensor::from_parts(
                shape,
                DType::I32,
                device.clone(),
                Data::I32(Arc::new(values.to_vec())),
            ),
        })
    }

    pub fn full(shape: &[usize], value: f32, device: &Device) -> Result<Tensor> {
        match device {
            Device::Gpu(g) => {
                let buffer = g.alloc((numel(shape) * 4) as u64, "full")?;
                g.fill_u32(&buffer, value.to_bits())?;
                Ok(Tensor::from_gpu(shape.to_vec(), DType::F32, device, buffer))
            }
            Device::Cpu => Ok(Tensor::from_host_f32(
                shape.to_vec(),
                device,
                vec![value; numel(shape)],
            )),
            Device::CpuF64 => Ok(Tensor::from_host_f64(
                shape.to_vec(),
                device,
                vec![value as f64; numel(shape)],
            )),
        }
    }

    pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, device)
    }

    pub fn ones(shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full(shape, 1.0, device)
    }

    /// Standard-normal values, `std * N(0,1) + mean`, reproducible by `seed` on every device.
    pub fn randn(
        shape: &[usize],
        mean: f64,
        std: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor> {
        let v: Vec<f64> = (0..numel(shape) as u64)
            .map(|i| mean + std * random::normal(seed, i))
            .collect();
        Tensor::from_f64(&v, shape, device)
    }

    /// Uniform values in [low, high), reproducible by `seed` on every device.
    pub fn rand_uniform(
        shape: &[usize],
        low: f64,
        high: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor> {
        let v: Vec<f64> = (0..numel(shape) as u64)
            .map(|i| low + (high - low) * random::uniform(seed, i))
            .collect();
        Tensor::from_f64(&v, shape, device)
    }

    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }
    pub fn rank(&self) -> usize {
        self.inner.shape.len()
    }
    pub fn numel(&self) -> usize {
        numel(&self.inner.shape)
    }
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// Size of `axis`, which may be negative (counted from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = self.axis("dim", axis)?;
        Ok(self.inner.shape[a])
    }

    /// Resolves a possibly negative axis against this tensor's rank.
    pub fn axis(&self, op: &'static str, axis: isize) -> Result<usize> {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank.max(1) {
            return shape_err(
                op,
                format!("axis {axis} is out of range for shape {:?}", self.shape()),
            );
        }
        Ok(a as usize)
    }

    pub(crate) fn gpu_buffer(&self) -> Option<&GpuBuffer> {
        match &self.inner.data {
            Data::Gpu(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn host_float(&self) -> Option<HostFloat<'_>> {
        match &self.inner.data {
            Data::F32(v) => Some(HostFloat::F32(v)),
            Data::F64(v) => Some(HostFloat::F64(v)),
            _ => None,
        }
    }

    pub(crate) fn host_i32(&self) -> Option<&[i32]> {
        match &self.inner.data {
            Data::I32(v) => Some(v),
            _ => None,
        }
    }

    pub(crate) fn expect_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype() != dtype {
            return Err(Error::DType {
                op,
                expected: dtype,
                got: self.dtype(),
            });
        }
        Ok(())
    }

    /// Reads a float tensor back to the host as f32 (a sync point on the GPU).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.expect_dtype("to_vec", DType::F32)?;
        match &self.inner.data {
            Data::Gpu(b) => {
                let bytes = b.gpu().read(b, (self.numel() * 4) as u64)?;
                Ok(bytemuck::pod_collect_to_vec(&bytes))
            }
            Data::F32(v) => Ok(v.to_vec()),
            Data::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            Data::I32(_) => unreachable!("dtype checked"),
        }
    }

    /// Reads a float tensor back to the host as f64 (exact on `CpuF64`).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        match &self.inner.data {
            Data::F64(v) => Ok(v.to_vec()),
            _ => Ok(self.to_vec()?.into_iter().map(f64::from).collect()),
        }
    }

    /// Reads an integer tensor back to the host.
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        self.expect_dtype("to_vec_i32", DType::I32)?;
        match &self.inner.data {
            Data::Gpu(b) => {
                let bytes = b.gpu().read(b, (self.numel() * 4) as u64)?;
                Ok(bytemuck::pod_collect_to_vec(&bytes))
            }
            Data::I32(v) => Ok(v.to_vec()),
            _ => unreachable!("dtype checked"),
        }
    }

    /// The single value of a one-element float tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return shape_err(
                "item",
                format!("needs exactly one element, shape is {:?}", self.shape()),
            );
        }
        Ok(self.to_vec()?[0])
    }

    /// The same values with no autograd history.
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(
            self.inner.shape.clone(),
            self.inner.dtype,
            self.inner.device.clone(),
            self.inner.data.clone(),
        )
    }

    /// The same storage under another shape of equal size (no copy, no autograd history).
    pub(crate) fn view_as(&self, shape: Vec<usize>) -> Tensor {
        debug_assert_eq!(numel(&shape), self.numel());
        Tensor::from_parts(
            shape,
            self.inner.dtype,
            self.inner.device.clone(),
            self.inner.data.clone(),
        )
    }

    /// Copies this tensor to another device.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        match self.dtype() {
            DType::F32 => Tensor::from_f64(&self.to_vec_f64()?, self.shape(), device),
            DType::I32 => Tensor::from_i32(&self.to_vec_i32()?, self.shape(), device),
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, {}{})",
            self.shape(),
            self.dtype(),
            self.device(),
            if self.requires_grad() {
                ", requires_grad"
            } else {
                ""
            }
        )
    }
}
