//! A small builder for ONNX graphs: named inputs and outputs, operator nodes
//! with fresh value names, constants and initializers, in one element type
//! (f32 for real models, f64 for gradient checks). Opset 18, IR version 8.

use super::proto::*;

/// The opset the graphs use (Reduce* ops take `axes` as an input).
pub const OPSET: i64 = 18;
/// The IR version written.
pub const IR_VERSION: i64 = 8;

/// A tensor dimension in a graph signature.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size (the batch: `N`).
    Named(&'static str),
}

/// Builds one graph.
pub struct GraphBuilder {
    elem: i32,
    graph: GraphProto,
    counter: usize,
}

/// An integer attribute.
pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: Some(value),
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: i32, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(n) => Dimension {
                                dim_value: Some(*n as i64),
                                dim_param: None,
                            },
                            Dim::Named(name) => Dimension {
                                dim_value: None,
                                dim_param: Some((*name).into()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

impl GraphBuilder {
    /// A graph computing in `elem` (`data_type::FLOAT` or `DOUBLE`).
    pub fn new(elem: i32) -> GraphBuilder {
        GraphBuilder {
            elem,
            graph: GraphProto::default(),
            counter: 0,
        }
    }

    /// The element type.
    pub fn elem(&self) -> i32 {
        self.elem
    }

    /// Declares a graph input of the graph's element type.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.graph.input.push(value_info(name, self.elem, dims));
        name.to_string()
    }

    /// Declares `value` as the graph output `name`.
    pub fn output(&mut self, name: &str, value: &str, dims: &[Dim]) {
        if name != value {
            self.named("Identity", &[value], vec![], name);
        }
        self.graph.output.push(value_info(name, self.elem, dims));
    }

    /// A fresh value name.
    pub fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a node writing a fresh value; returns its name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.named(op, inputs, attributes, &output);
        output
    }

    /// Adds a node writing the value `output`.
    pub fn named(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>, output: &str) {
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: format!("n{}", self.graph.node.len()),
            op_type: op.into(),
            attribute: attributes,
        });
    }

    /// Adds a node with several named outputs (`Split`).
    pub fn multi(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>, outputs: &[String]) {
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.to_vec(),
            name: format!("n{}", self.graph.node.len()),
            op_type: op.into(),
            attribute: attributes,
        });
    }

    fn tensor(&self, name: &str, dims: &[usize], values: &[f64]) -> TensorProto {
        let mut tensor = TensorProto {
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: self.elem,
            name: name.into(),
            ..Default::default()
        };
        if self.elem == data_type::DOUBLE {
            tensor.double_data = values.to_vec();
        } else {
            tensor.float_data = values.iter().map(|v| *v as f32).collect();
        }
        tensor
    }

    /// Adds a named initializer (a constant, or an input's default value).
    pub fn initializer(&mut self, name: &str, dims: &[usize], values: &[f64]) -> String {
        let tensor = self.tensor(name, dims, values);
        self.graph.initializer.push(tensor);
        name.to_string()
    }

    /// A constant tensor with a fresh name.
    pub fn constant(&mut self, dims: &[usize], values: &[f64]) -> String {
        self.counter += 1;
        let name = format!("const_{}", self.counter);
        self.initializer(&name, dims, values)
    }

    /// A scalar constant.
    pub fn scalar(&mut self, value: f64) -> String {
        self.constant(&[], &[value])
    }

    /// A 1-D int64 constant (axes, indices, shapes).
    pub fn int64s(&mut self, values: &[i64]) -> String {
        self.counter += 1;
        let name = format!("ints_{}", self.counter);
        self.graph.initializer.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::INT64,
            int64_data: values.to_vec(),
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    /// `a @ b`
    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.op("MatMul", &[a, b], vec![])
    }

    /// `a + b` (broadcasting)
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }

    /// `a - b`
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b], vec![])
    }

    /// `a * b`
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }

    /// `a / b`
    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.op("Div", &[a, b], vec![])
    }

    /// The transpose of a matrix.
    pub fn transpose(&mut self, a: &str) -> String {
        self.op("Transpose", &[a], vec![ints("perm", &[1, 0])])
    }

    /// Sum over `axes`.
    pub fn reduce_sum(&mut self, a: &str, axes: &[i64], keep: bool) -> String {
        let axes = self.int64s(axes);
        self.op("ReduceSum", &[a, &axes], vec![int("keepdims", i64::from(keep))])
    }

    /// Encodes the graph into a model with metadata properties.
    pub fn finish(self, name: &str, metadata: Vec<(String, String)>) -> ModelProto {
        let mut graph = self.graph;
        graph.name = name.into();
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "prime-fabric".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: String::new(),
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto { key, value })
                .collect(),
        }
    }
}
