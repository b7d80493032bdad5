//! Reverse-mode autograd.
//!
//! Each differentiable op, when any input is tracked and recording is on, wraps its output in a
//! `Node` that holds the inputs' nodes and a backward closure (which owns exactly the tensors the
//! rule needs). `backward()` orders the graph reachable from the loss, walks it in reverse, and
//! consumes each closure once, so saved activations are freed as soon as they have been used.
//! Gradients are accumulated into leaves (tensors made with `with_requires_grad`).

pub mod gradcheck;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Error, Result, Tensor};

/// Given the output gradient and which inputs need one, returns one gradient per input.
pub(crate) type BackwardFn =
    Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

pub struct Node {
    id: u64,
    op: &'static str,
    inputs: Vec<Option<Arc<Node>>>,
    backward: Mutex<Option<BackwardFn>>,
    /// Leaves only: the accumulated gradient.
    grad: Mutex<Option<Tensor>>,
    leaf: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static NO_GRAD_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Is the graph being recorded on this thread?
pub fn is_recording() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// Runs `f` without recording a graph (evaluation, EMA updates, memory updates, backward itself).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Recording stays off while this guard lives.
pub struct NoGradGuard(());

impl NoGradGuard {
    pub fn new() -> Self {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
        NoGradGuard(())
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Does an op on `inputs` need to record a node?
pub(crate) fn needs_grad(inputs: &[&Tensor]) -> bool {
    is_recording() && inputs.iter().any(|t| t.requires_grad())
}

/// Attaches `backward` to `out` if any input is tracked; otherwise returns `out` unchanged.
pub(crate) fn record(
    out: Tensor,
    op: &'static str,
    inputs: &[&Tensor],
    backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Tensor {
    if !needs_grad(inputs) {
        return out;
    }
    let node = Node {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        op,
        inputs: inputs.iter().map(|t| t.node().cloned()).collect(),
        backward: Mutex::new(Some(Box::new(backward))),
        grad: Mutex::new(None),
        leaf: false,
    };
    out.with_node(Arc::new(node))
}

impl Tensor {
    /// True when gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.node().is_some()
    }

    /// The same values as a leaf that accumulates gradients (a parameter).
    pub fn with_requires_grad(self) -> Tensor {
        let node = Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op: "leaf",
            inputs: Vec::new(),
            backward: Mutex::new(None),
            grad: Mutex::new(None),
            leaf: true,
        };
        self.detach().with_node(Arc::new(node))
    }

    /// The gradient accumulated into this leaf by `backward()`, if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.node()
            .filter(|n| n.leaf)
            .and_then(|n| n.grad.lock().unwrap().clone())
    }

    /// Forgets this leaf's accumulated gradient.
    pub fn zero_grad(&self) {
        if let Some(n) = self.node() {
            *n.grad.lock().unwrap() = None;
        }
    }

    /// Back-propagates from this scalar into every tracked leaf it depends on.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward() needs a scalar (one element); this tensor has shape {:?}",
                self.shape()
            )));
        }
        let root = self
            .node()
            .ok_or_else(|| {
                Error::Autograd("backward() on a tensor that does not require grad".into())
            })?
            .clone();
        let order = topological_order(&root);
        let _no_grad = NoGradGuard::new();
        let mut grads: HashMap<u64, Tensor> = HashMap::new();
        grads.insert(root.id, Tensor::ones(self.shape(), self.device())?);
        for node in order.iter().rev() {
            let Some(grad) = grads.remove(&node.id) else {
                continue;
            };
            if node.leaf {
                let mut slot = node.grad.lock().unwrap();
                *slot = Some(match slot.take() {
                    Some(prev) => prev.add(&grad)?,
                    None => grad,
                });
                continue;
            }
            let backward = node.backward.lock().unwrap().take().ok_or_else(|| {
                Error::Autograd(format!(
                    "the graph through {} was already back-propagated and its saved tensors freed",
                    node.op
                ))
            })?;
            let needs: Vec<bool> = node.inputs.iter().map(Option::is_some).collect();
            let input_grads = backward(&grad, &needs)?;
            for (input, g) in node.inputs.iter().zip(input_grads) {
                if let (Some(input), Some(g)) = (input, g) {
                    let sum = match grads.remove(&input.id) {
                        Some(prev) => prev.add(&g)?,
                        None => g,
                    };
                    grads.insert(input.id, sum);
                }
            }
        }
        Ok(())
    }
}

/// Nodes reachable from `root`, each after all of its inputs.
fn topological_order(root: &Arc<Node>) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (node, inputs pushed yet?).
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !seen.insert(node.id) {
            continue;
        }
        stack.push((node.clone(), true));
        for input in node.inputs.iter().flatten() {
            if !seen.contains(&input.id) {
                stack.push((input.clone(), false));
            }
        }
    }
    order
}
