//! Moving data between Rust and ONNX Runtime values.

use ort::value::{DynValue, Tensor};

/// An f32 tensor value of `dims` from row-major `values`.
pub fn f32_value(dims: &[usize], values: Vec<f32>) -> anyhow::Result<DynValue> {
    let shape: Vec<i64> = dims.iter().map(|d| *d as i64).collect();
    Ok(Tensor::from_array((shape, values))?.into_dyn())
}

/// An f64 tensor value of `dims` from row-major `values`.
pub fn f64_value(dims: &[usize], values: Vec<f64>) -> anyhow::Result<DynValue> {
    let shape: Vec<i64> = dims.iter().map(|d| *d as i64).collect();
    Ok(Tensor::from_array((shape, values))?.into_dyn())
}

/// The values of an f32 tensor.
pub fn f32s(value: &DynValue) -> anyhow::Result<Vec<f32>> {
    Ok(value.try_extract_tensor::<f32>()?.1.to_vec())
}
