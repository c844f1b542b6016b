//! The stage DAG: edges from paths (a dep on an out, or on a directory holding
//! it, or on a file inside an out directory) and from `after`, validated
//! before anything runs.
//!
//! Validation rejects: cycles (naming the stages on them), two stages
//! claiming the same or nested outs, a stage depending on its own out, and
//! path deps that nothing produces and that do not exist.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::manifest::{Dep, Workspace};

/// Stages (by index into `Workspace::stages`) and their dependency edges.
pub struct StageGraph {
    graph: DiGraph<usize, Why>,
}

/// Why an edge exists, to point at it in a diagnostic: the downstream
/// stage's dep or `after` entry, by position.
#[derive(Debug, Clone, Copy)]
enum Why {
    Dep(usize),
    After(usize),
}

impl StageGraph {
    /// Builds and validates the graph of `workspace`.
    pub fn build(workspace: &Workspace) -> Result<StageGraph, Diagnostics> {
        let mut errors = Vec::new();
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..workspace.stages.len()).map(|i| graph.add_node(i)).collect();

        // Every out, by path, with its stage.
        let mut producers: BTreeMap<&str, (usize, &Location)> = BTreeMap::new();
        for (index, stage) in workspace.stages.iter().enumerate() {
            for out in &stage.outs {
                if let Some((other, first)) = producers.get(out.value.as_str()) {
                    // Point at whichever claim comes later in the files.
                    let key = |at: &Location| (at.file.clone(), at.span.start);
                    let (later, earlier) = if key(&out.at) >= key(first) {
                        (&out.at, *first)
                    } else {
                        (*first, &out.at)
                    };
                    let (line, column) = earlier.line_column();
                    errors.push(
                        Diagnostic::new(format!(
                            "out `{}` is claimed by stages `{}` and `{}`",
                            out.value, workspace.stages[*other].name, stage.name
                        ))
                        .at(later.clone(), "claimed again here")
                        .hint(format!(
                            "each path has exactly one producing stage; the first claim is at {}:{line}:{column}",
                            earlier.file.display()
                        )),
                    );
                } else {
                    producers.insert(out.value.as_str(), (index, &out.at));
                }
            }
        }
        for (path, (index, at)) in &producers {
            for ancestor in ancestors(path) {
                if let Some((other, _)) = producers.get(ancestor) {
                    let (a, b) = (&workspace.stages[*other].name, &workspace.stages[*index].name);
                    let message = if other == index {
                        format!("stage `{a}` declares out `{path}` inside its own out `{ancestor}`")
                    } else {
                        format!("out `{path}` of stage `{b}` is nested inside out `{ancestor}` of stage `{a}`")
                    };
                    errors.push(
                        Diagnostic::new(message)
                            .at((*at).clone(), "nested out")
                            .hint("outs may not contain one another; declare only the outer directory or move one"),
                    );
                }
            }
        }

        for (index, stage) in workspace.stages.iter().enumerate() {
            for (position, dep) in stage.deps.iter().enumerate() {
                let found = producers_of(&dep.value, &producers);
                for producer in &found {
                    if *producer == index {
                        errors.push(
                            Diagnostic::new(format!("stage `{}` depends on its own out", stage.name))
                                .at(dep.at.clone(), "this dep overlaps an out of the same stage")
                                .hint("a stage cannot read what it writes; split it in two"),
                        );
                    } else {
                        graph.update_edge(nodes[*producer], nodes[index], Why::Dep(position));
                    }
                }
                if let Dep::Path(path) = &dep.value
                    && found.is_empty()
                    && std::fs::symlink_metadata(path.under(&workspace.root)).is_err()
                {
                    errors.push(
                        Diagnostic::new(format!(
                            "dep `{path}` of stage `{}` does not exist and no stage produces it",
                            stage.name
                        ))
                        .at(dep.at.clone(), "missing")
                        .hint("create the file, fix the path, or add a stage with it in `outs`"),
                    );
                }
            }
            for (position, after) in stage.after.iter().enumerate() {
                if let Some(other) = workspace.stage(&after.value) {
                    let other_index = workspace
                        .stages
                        .iter()
                        .position(|s| s.name == other.name)
                        .unwrap_or(index);
                    if other_index == index {
                        errors.push(
                            Diagnostic::new(format!("stage `{}` lists itself in `after`", stage.name))
                                .at(after.at.clone(), "itself"),
                        );
                    } else {
                        graph.update_edge(nodes[other_index], nodes[index], Why::After(position));
                    }
                }
            }
        }

        let stage_graph = StageGraph { graph };
        if errors.is_empty() {
            errors.extend(stage_graph.cycles(workspace));
        }
        if errors.is_empty() {
            Ok(stage_graph)
        } else {
            Err(Diagnostics(errors))
        }
    }

    fn cycles(&self, workspace: &Workspace) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        for component in tarjan_scc(&self.graph) {
            if component.len() < 2 {
                continue;
            }
            let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
            let start = *members.iter().min_by_key(|n| self.graph[**n]).expect("non-empty");
            let cycle = self.path_back(start, &members);
            let names: Vec<&str> = cycle
                .iter()
                .map(|n| workspace.stages[self.graph[*n]].name.as_str())
                .collect();
            let mut all: Vec<&str> = members
                .iter()
                .map(|n| workspace.stages[self.graph[*n]].name.as_str())
                .collect();
            all.sort();
            let closing = self.graph.find_edge(cycle[cycle.len() - 1], cycle[0]).map(|e| {
                let stage = &workspace.stages[self.graph[cycle[0]]];
                match self.graph[e] {
                    Why::Dep(position) => stage.deps[position].at.clone(),
                    Why::After(position) => stage.after[position].at.clone(),
                }
            });
            let mut diagnostic = Diagnostic::new(format!(
                "dependency cycle between stages {}: {} → {}",
                all.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                names.join(" → "),
                names[0]
            ))
            .hint("a stage cannot depend, directly or indirectly, on its own outputs; remove one of the deps or `after` entries on this cycle");
            if let Some(at) = closing {
                diagnostic = diagnostic.at(at, "this dependency closes the cycle");
            }
            errors.push(diagnostic);
        }
        errors
    }

    /// The shortest path from `start` back to itself inside `members`.
    fn path_back(&self, start: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<NodeIndex> {
        let mut previous: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut next: Vec<NodeIndex> = self.graph.neighbors(node).filter(|n| members.contains(n)).collect();
            next.sort_by_key(|n| self.graph[*n]);
            for neighbor in next {
                if neighbor == start {
                    let mut path = vec![node];
                    while let Some(&before) = previous.get(path.last().expect("non-empty")) {
                        path.push(before);
                    }
                    path.reverse();
                    return path;
                }
                if let std::collections::btree_map::Entry::Vacant(slot) = previous.entry(neighbor) {
                    slot.insert(node);
                    queue.push_back(neighbor);
                }
            }
        }
        vec![start]
    }

    /// Stages that `stage` depends on directly.
    pub fn upstream(&self, stage: usize) -> Vec<usize> {
        let mut found: Vec<usize> = self
            .graph
            .edges_directed(NodeIndex::new(stage), petgraph::Direction::Incoming)
            .map(|e| self.graph[e.source()])
            .collect();
        found.sort();
        found
    }

    /// Stages that depend on `stage` directly.
    pub fn downstream(&self, stage: usize) -> Vec<usize> {
        let mut found: Vec<usize> = self
            .graph
            .neighbors(NodeIndex::new(stage))
            .map(|n| self.graph[n])
            .collect();
        found.sort();
        found
    }

    /// `targets` plus everything they need (or, with `downstream`, everything
    /// that needs them).
    pub fn closure(&self, targets: &[usize], downstream: bool) -> BTreeSet<usize> {
        let mut seen: BTreeSet<usize> = targets.iter().copied().collect();
        let mut stack: Vec<usize> = targets.to_vec();
        while let Some(stage) = stack.pop() {
            let next = if downstream {
                self.downstream(stage)
            } else {
                self.upstream(stage)
            };
            for other in next {
                if seen.insert(other) {
                    stack.push(other);
                }
            }
        }
        seen
    }

    /// The stages of `subset` in a deterministic topological order (by name
    /// among the ready ones).
    pub fn order(&self, subset: &BTreeSet<usize>) -> Vec<usize> {
        let mut waiting: BTreeMap<usize, usize> = subset
            .iter()
            .map(|&s| (s, self.upstream(s).into_iter().filter(|u| subset.contains(u)).count()))
            .collect();
        let mut ready: BTreeSet<usize> = waiting.iter().filter(|(_, n)| **n == 0).map(|(s, _)| *s).collect();
        let mut order = Vec::with_capacity(subset.len());
        while let Some(stage) = ready.pop_first() {
            order.push(stage);
            for next in self.downstream(stage) {
                if let Some(count) = waiting.get_mut(&next) {
                    *count -= 1;
                    if *count == 0 {
                        ready.insert(next);
                    }
                }
            }
        }
        order
    }
}

/// The stages whose outs a dep covers, sorted.
fn producers_of(dep: &Dep, producers: &BTreeMap<&str, (usize, &Location)>) -> Vec<usize> {
    let mut found = BTreeSet::new();
    match dep {
        Dep::Path(path) => {
            let path = path.as_str();
            for ancestor in ancestors(path).chain(std::iter::once(path)) {
                if let Some((stage, _)) = producers.get(ancestor) {
                    found.insert(*stage);
                }
            }
            // Outs inside the dep sort right after it (among other paths it prefixes).
            for (out, (stage, _)) in producers.range::<&str, _>(path..) {
                match out.strip_prefix(path) {
                    Some(rest) if rest.starts_with('/') => {
                        found.insert(*stage);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }
        Dep::Glob { matcher, .. } => {
            for (out, (stage, _)) in producers {
                if matcher.is_match(out) {
                    found.insert(*stage);
                }
            }
        }
    }
    found.into_iter().collect()
}

/// The proper ancestors of a path (`a/b/c` → `a`, `a/b`).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(|(i, _)| &path[..i])
}
