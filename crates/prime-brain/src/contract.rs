//! The snapshot schema as both sides see it: Fabric's JSON Schema (from the
//! Rust types in [`super::schema`], with the command vocabulary), the same
//! contract as a TypeScript module for the Studio, and the drift between a
//! schema file the Studio holds (`.json` or `.ts`) and Fabric's own.
//!
//! Both renderings come from one JSON Schema value, and drift is found by
//! reducing either file to the same [`Shape`]: every field path with its
//! type, whether it is required, and its limits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::schema::{self, SCHEMA_VERSION};
use super::vocabulary::{ARCHETYPES, COMMANDS};

/// The name of the root interface in TypeScript.
pub const ROOT: &str = "PrimeBrainRawSnapshot";

/// Fabric's JSON Schema of a raw snapshot, the command types included.
pub fn json_schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(schema::Snapshot)).expect("a schema serializes");
    let kinds: Vec<&str> = COMMANDS.iter().map(|c| c.kind).collect();
    schema["$defs"]["DawCommand"]["properties"]["type"]["enum"] = json!(kinds);
    schema["title"] = json!(ROOT);
    schema
}

/// Whether `name` is a field name of the schema (at any depth).
pub fn is_field_name(name: &str) -> bool {
    static NAMES: std::sync::LazyLock<std::collections::HashSet<String>> = std::sync::LazyLock::new(|| {
        fn collect(value: &Value, names: &mut std::collections::HashSet<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::Object(properties)) = map.get("properties") {
                        names.extend(properties.keys().cloned());
                    }
                    map.values().for_each(|v| collect(v, names));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, names)),
                _ => {}
            }
        }
        let mut names = std::collections::HashSet::new();
        collect(&json_schema(), &mut names);
        names
    });
    NAMES.contains(name)
}

/// The limits the JSON Schema carries, as JSDoc tags and back.
const LIMITS: [&str; 8] = [
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
];

/// The contract as a TypeScript module: one interface or type per schema
/// definition, limits as JSDoc tags, plus the command vocabulary.
pub fn typescript() -> String {
    let schema = json_schema();
    let mut out = format!(
        "// Prime Brain raw snapshot schema {SCHEMA_VERSION}, written by `fabric schema --format typescript`.\n\
         // Regenerate it rather than editing it: `fabric sanitize --schema FILE` reports any drift.\n\n\
         export const PRIME_BRAIN_SCHEMA_VERSION = \"{SCHEMA_VERSION}\";\n\n\
         /** Array limits sanitize keeps to (it keeps the newest items beyond them). */\n\
         export const PRIME_BRAIN_LIMITS = {{\n  recentActions: {},\n  bloomTrace: {},\n  issuedCommands: {},\n  conversationTurns: {},\n}} as const;\n\n",
        schema::MAX_RECENT_ACTIONS,
        schema::MAX_BLOOM_TRACE,
        schema::MAX_ISSUED_COMMANDS,
        schema::MAX_CONVERSATION_TURNS,
    );
    out.push_str("/** The DAWCommand vocabulary: each type, and whether it needs a track archetype as `target`. */\n");
    out.push_str("export const DAW_COMMANDS = [\n");
    for command in &COMMANDS {
        let _ = writeln!(
            out,
            "  {{ type: \"{}\", needsTarget: {}, intrusive: {}, channel: \"{}\" }},",
            command.kind,
            command.needs_target,
            command.intrusive,
            command.channel.name()
        );
    }
    out.push_str(
        "] as const;\n\n/** Track archetypes a command's `target` names. */\nexport const TRACK_ARCHETYPES = [",
    );
    out.push_str(&ARCHETYPES.map(|a| format!("\"{a}\"")).join(", "));
    out.push_str("] as const;\n\n");
    render_definition(&mut out, ROOT, &schema);
    if let Some(defs) = schema["$defs"].as_object() {
        for (name, definition) in defs {
            out.push('\n');
            render_definition(&mut out, &ts_name(name), definition);
        }
    }
    out
}

/// The TypeScript name of a schema definition.
fn ts_name(definition: &str) -> String {
    match definition {
        "Snapshot" => ROOT.to_string(),
        other => other.to_string(),
    }
}

fn render_definition(out: &mut String, name: &str, definition: &Value) {
    doc_comment(out, "", definition);
    match definition.get("properties").and_then(Value::as_object) {
        Some(properties) => {
            let required = required_names(definition);
            let _ = writeln!(out, "export interface {name} {{");
            for (field, property) in properties {
                doc_comment(out, "  ", property);
                let optional = if required.contains(&field.as_str()) { "" } else { "?" };
                let _ = writeln!(out, "  {field}{optional}: {};", ts_type(property));
            }
            out.push_str("}\n");
        }
        None => {
            let _ = writeln!(out, "export type {name} = {};", ts_type(definition));
        }
    }
}

/// A JSDoc comment with the description and the limits as tags.
fn doc_comment(out: &mut String, indent: &str, node: &Value) {
    let mut lines: Vec<String> = node
        .get("description")
        .and_then(Value::as_str)
        .map(|d| d.lines().map(str::to_string).collect())
        .unwrap_or_default();
    for limit in LIMITS {
        if let Some(value) = node.get(limit) {
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_string);
            lines.push(format!("@{limit} {text}"));
        }
    }
    if node.get("type").is_some_and(|t| has_type(t, "integer")) {
        lines.push("@integer".into());
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}/**");
    for line in lines {
        let _ = writeln!(out, "{indent} * {}", line.replace("*/", "* /"));
    }
    let _ = writeln!(out, "{indent} */");
}

fn has_type(types: &Value, name: &str) -> bool {
    match types {
        Value::String(t) => t == name,
        Value::Array(ts) => ts.iter().any(|t| t == name),
        _ => false,
    }
}

fn required_names(definition: &Value) -> Vec<&str> {
    definition
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A schema node as a TypeScript type.
fn ts_type(node: &Value) -> String {
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        return ts_name(reference.rsplit('/').next().unwrap_or(reference));
    }
    if let Some(options) = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))
        .and_then(Value::as_array)
    {
        return options.iter().map(ts_type).collect::<Vec<_>>().join(" | ");
    }
    if let Some(constant) = node.get("const") {
        return constant.to_string();
    }
    if let Some(values) = node.get("enum").and_then(Value::as_array) {
        return values.iter().map(Value::to_string).collect::<Vec<_>>().join(" | ");
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return "unknown".into(),
    };
    types
        .iter()
        .map(|t| match *t {
            "string" => "string".to_string(),
            "number" | "integer" => "number".to_string(),
            "boolean" => "boolean".to_string(),
            "null" => "null".to_string(),
            "array" => {
                let item = node.get("items").map_or("unknown".into(), ts_type);
                if item.contains(' ') {
                    format!("Array<{item}>")
                } else {
                    format!("{item}[]")
                }
            }
            "object" => match node.get("additionalProperties") {
                Some(Value::Bool(true)) | None => "Record<string, unknown>".to_string(),
                Some(values) => format!("Record<string, {}>", ts_type(values)),
            },
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One field of a schema, as drift sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldShape {
    /// `string`, `number`, `integer`, `boolean`, `array`, `map`, `object`,
    /// `any`, or the sorted literals of an enumeration, each `| null` when nullable.
    pub kind: String,
    /// Whether the field must be present.
    pub required: bool,
    /// Limits by name (`maxItems` → `24`).
    pub limits: BTreeMap<String, String>,
}

/// Every field of a schema by path (`transport.tempo`, `alsChannels[].channel`).
pub type Shape = BTreeMap<String, FieldShape>;

/// The shape of a JSON Schema (with `$ref`s into `$defs`).
pub fn shape_of_json_schema(schema: &Value) -> Shape {
    let mut shape = Shape::new();
    walk_json(schema, schema, "", &mut shape, 0);
    shape
}

fn resolve<'a>(node: &'a Value, root: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or(reference);
            root.get("$defs")
                .or_else(|| root.get("definitions"))
                .and_then(|defs| defs.get(name))
                .unwrap_or(&Value::Null)
        }
        None => node,
    }
}

/// The non-null alternative of a nullable node, and whether it was nullable.
fn strip_null<'a>(node: &'a Value, root: &'a Value) -> (&'a Value, bool) {
    if let Some(options) = node
        .get("anyOf")
        .or_else(|| node.get("oneOf"))
        .and_then(Value::as_array)
    {
        let non_null: Vec<&Value> = options
            .iter()
            .filter(|o| o.get("type") != Some(&json!("null")))
            .collect();
        if non_null.len() == 1 && non_null.len() < options.len() {
            return (resolve(non_null[0], root), true);
        }
    }
    (
        resolve(node, root),
        node.get("type").is_some_and(|t| has_type(t, "null")),
    )
}

fn walk_json(node: &Value, root: &Value, path: &str, shape: &mut Shape, depth: usize) {
    let node = resolve(node, root);
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    if depth > 16 {
        return;
    }
    let required = required_names(node);
    for (name, property) in properties {
        let field_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let (inner, nullable) = strip_null(property, root);
        let mut limits = BTreeMap::new();
        for limit in LIMITS {
            if let Some(value) = property.get(limit).or_else(|| inner.get(limit)) {
                limits.insert(
                    limit.to_string(),
                    value.as_str().map_or_else(|| value.to_string(), str::to_string),
                );
            }
        }
        let kind = json_kind(inner);
        shape.insert(
            field_path.clone(),
            FieldShape {
                kind: if nullable { format!("{kind} | null") } else { kind },
                required: required.contains(&name.as_str()),
                limits,
            },
        );
        walk_json(inner, root, &field_path, shape, depth + 1);
        if let Some(items) = inner.get("items") {
            walk_json(items, root, &format!("{field_path}[]"), shape, depth + 1);
        }
    }
}

/// The kind of a (resolved, non-null) JSON Schema node.
fn json_kind(node: &Value) -> String {
    let literals: Option<Vec<String>> = node
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().map(Value::to_string).collect())
        .or_else(|| {
            node.get("oneOf")
                .and_then(Value::as_array)
                .and_then(|options| options.iter().map(|o| o.get("const").map(Value::to_string)).collect())
        });
    if let Some(mut literals) = literals {
        literals.sort();
        return literals.join(" | ");
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => return "any".into(),
    };
    match types.as_slice() {
        ["object"] if node.get("properties").is_none() => "map".into(),
        [one] => (*one).to_string(),
        _ => "any".into(),
    }
}

/// A problem reading a TypeScript schema file: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}: {problem}")]
pub struct TsError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// The shape of a TypeScript schema: `export interface` and `export type`
/// declarations (literal unions, `T[]`, `Array<T>`, `Record<string, T>`,
/// `| null`, optional `?` fields), limits from JSDoc tags, rooted at
/// `PrimeBrainRawSnapshot`. Other declarations (constants) are skipped.
pub fn shape_of_typescript(text: &str) -> Result<Shape, TsError> {
    let declarations = parse_typescript(text)?;
    if !declarations.contains_key(ROOT) {
        return Err(TsError {
            line: 1,
            problem: format!("no `export interface {ROOT}`"),
        });
    }
    let mut shape = Shape::new();
    walk_ts(&declarations, ROOT, "", &mut shape, 0);
    Ok(shape)
}

/// A parsed declaration: an interface's fields, or a type alias.
enum Declaration {
    Interface(Vec<TsField>),
    Alias(String),
}

struct TsField {
    name: String,
    optional: bool,
    ty: String,
    tags: BTreeMap<String, String>,
}

fn parse_typescript(text: &str) -> Result<BTreeMap<String, Declaration>, TsError> {
    let mut declarations = BTreeMap::new();
    let mut tags = BTreeMap::new();
    let mut in_comment = false;
    let mut open: Option<(String, Vec<TsField>)> = None;
    // Lines as written, with union continuations (`  | "b"`, as formatters
    // split long unions) joined to the line they continue.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        match lines.last_mut() {
            Some((_, previous)) if trimmed.starts_with('|') && !previous.starts_with("/*") => {
                previous.push(' ');
                previous.push_str(trimmed);
            }
            _ => lines.push((index + 1, trimmed.to_string())),
        }
    }
    for (line_number, line) in lines {
        let line = line.as_str();
        if in_comment || line.starts_with("/**") || line.starts_with("/*") {
            let body = line.trim_start_matches("/**").trim_start_matches("/*");
            in_comment = !body.contains("*/");
            let body = body
                .split("*/")
                .next()
                .unwrap_or("")
                .trim()
                .trim_start_matches('*')
                .trim();
            if let Some(tag) = body.strip_prefix('@') {
                let (name, value) = tag.split_once(' ').unwrap_or((tag, ""));
                tags.insert(name.to_string(), value.trim().to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let error = |problem: String| TsError {
            line: line_number,
            problem,
        };
        if let Some((name, fields)) = &mut open {
            if line == "}" || line == "};" {
                declarations.insert(name.clone(), Declaration::Interface(std::mem::take(fields)));
                open = None;
                tags.clear();
                continue;
            }
            // Comments (`// …`, `/* … */`) and `readonly` do not change the shape.
            let uncommented = strip_block_comments(line);
            let line = uncommented.as_str();
            let code = match line.find("//") {
                Some(at) if !line[..at].contains(['"', '\'']) => line[..at].trim_end(),
                _ => line.trim_end(),
            };
            let code = code.strip_prefix("readonly ").unwrap_or(code);
            if code.is_empty() {
                continue;
            }
            let field = code.trim_end_matches([';', ',']);
            let (head, ty) = field
                .split_once(':')
                .ok_or_else(|| error(format!("expected `name: type;` in interface `{name}`, found `{line}`")))?;
            let (field_name, optional) = match head.trim().strip_suffix('?') {
                Some(stripped) => (stripped.trim(), true),
                None => (head.trim(), false),
            };
            let field_name = field_name.trim_matches(['"', '\'']);
            if field_name.is_empty() || !field_name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                return Err(error(format!("`{field_name}` is not a field name")));
            }
            fields.push(TsField {
                name: field_name.to_string(),
                optional,
                ty: ty.trim().to_string(),
                tags: std::mem::take(&mut tags),
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("export interface ") {
            let name = rest.trim_end_matches('{').trim();
            if !rest.trim_end().ends_with('{') || name.contains(' ') {
                return Err(error(format!("expected `export interface Name {{`, found `{line}`")));
            }
            open = Some((name.to_string(), Vec::new()));
        } else if let Some(rest) = line.strip_prefix("export type ") {
            let (name, ty) = rest
                .split_once('=')
                .ok_or_else(|| error(format!("expected `export type Name = ...;`, found `{line}`")))?;
            declarations.insert(
                name.trim().to_string(),
                Declaration::Alias(ty.trim().trim_end_matches(';').trim().to_string()),
            );
        }
        tags.clear();
    }
    if let Some((name, _)) = open {
        return Err(TsError {
            line: text.lines().count(),
            problem: format!("interface `{name}` is not closed"),
        });
    }
    Ok(declarations)
}

/// A line without its `/* … */` comments.
fn strip_block_comments(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start..].find("*/") {
            Some(end) => rest = &rest[start + end + 2..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The `export const NAME = …;` declarations of a TypeScript module, by
/// name, with comments, whitespace and trailing commas dropped (the
/// constants the Studio reads: limits, the command vocabulary, the
/// archetypes).
pub fn constants(text: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut rest = text;
    while let Some(at) = rest.find("export const ") {
        rest = &rest[at + "export const ".len()..];
        let Some((name, tail)) = rest.split_once('=') else {
            break;
        };
        let name = name.split(':').next().unwrap_or(name).trim().to_string();
        let mut depth = 0i32;
        let mut end = tail.len();
        for (i, c) in tail.char_indices() {
            match c {
                '[' | '{' | '(' => depth += 1,
                ']' | '}' | ')' => depth -= 1,
                ';' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let value: String = tail[..end]
            .lines()
            .map(|l| strip_block_comments(l).split("//").next().unwrap_or("").to_string())
            .collect::<String>()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .replace(",]", "]")
            .replace(",}", "}")
            .replace('\'', "\"");
        found.insert(name, value);
        rest = &tail[end..];
    }
    found
}

/// Splits a union at top-level `|`.
fn union_parts(ty: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in ty.chars() {
        match c {
            '<' | '(' | '[' | '{' => depth += 1,
            '>' | ')' | ']' | '}' => depth -= 1,
            '|' if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_string());
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The kind of a TypeScript type, and the declaration its items or fields
/// come from (for walking deeper).
fn ts_kind(
    declarations: &BTreeMap<String, Declaration>,
    ty: &str,
    integer: bool,
    depth: usize,
) -> (String, Option<String>) {
    let parts = union_parts(ty);
    let nullable = parts.iter().any(|p| p == "null" || p == "undefined");
    let parts: Vec<&String> = parts.iter().filter(|p| *p != "null" && *p != "undefined").collect();
    let (kind, next) = if parts.len() > 1 || parts.first().is_some_and(|p| is_literal(p)) {
        if parts.iter().all(|p| is_literal(p)) {
            let mut literals: Vec<String> = parts.iter().map(|p| literal_json(p)).collect();
            literals.sort();
            (literals.join(" | "), None)
        } else {
            ("any".to_string(), None)
        }
    } else {
        let single = parts.first().map_or("unknown", |p| p.as_str());
        match single {
            "string" => ("string".into(), None),
            "number" if integer => ("integer".into(), None),
            "number" => ("number".into(), None),
            "boolean" => ("boolean".into(), None),
            "unknown" | "any" => ("any".into(), None),
            _ if single.ends_with("[]") => ("array".into(), Some(single.trim_end_matches("[]").to_string())),
            _ if single.starts_with("Array<") && single.ends_with('>') => (
                "array".into(),
                Some(single["Array<".len()..single.len() - 1].to_string()),
            ),
            _ if single.starts_with("Record<") => ("map".into(), None),
            name => match declarations.get(name) {
                Some(Declaration::Interface(_)) => ("object".into(), Some(name.to_string())),
                Some(Declaration::Alias(alias)) if depth < 16 => {
                    let (kind, next) = ts_kind(declarations, alias, integer, depth + 1);
                    (kind.trim_end_matches(" | null").to_string(), next)
                }
                _ => (format!("unknown type `{name}`"), None),
            },
        }
    };
    let kind = if nullable { format!("{kind} | null") } else { kind };
    (kind, next)
}

fn is_literal(text: &str) -> bool {
    text.starts_with('"') || text.starts_with('\'') || text.parse::<f64>().is_ok() || text == "true" || text == "false"
}

/// A TypeScript literal as JSON text (`'passive'` → `"passive"`).
fn literal_json(text: &str) -> String {
    match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) => Value::String(inner.to_string()).to_string(),
        None => text.to_string(),
    }
}

fn walk_ts(declarations: &BTreeMap<String, Declaration>, name: &str, path: &str, shape: &mut Shape, depth: usize) {
    let Some(Declaration::Interface(fields)) = declarations.get(name) else {
        return;
    };
    if depth > 16 {
        return;
    }
    for field in fields {
        let field_path = if path.is_empty() {
            field.name.clone()
        } else {
            format!("{path}.{}", field.name)
        };
        let (kind, next) = ts_kind(declarations, &field.ty, field.tags.contains_key("integer"), 0);
        let limits = field
            .tags
            .iter()
            .filter(|(tag, _)| LIMITS.contains(&tag.as_str()))
            .map(|(tag, value)| (tag.clone(), value.clone()))
            .collect();
        let is_array = kind.starts_with("array");
        shape.insert(
            field_path.clone(),
            FieldShape {
                kind,
                required: !field.optional,
                limits,
            },
        );
        if let Some(next) = next {
            let inner_path = if is_array {
                format!("{field_path}[]")
            } else {
                field_path
            };
            // An array of an alias resolves through it.
            let next = match declarations.get(&next) {
                Some(Declaration::Alias(alias)) => alias.clone(),
                _ => next,
            };
            walk_ts(declarations, &next, &inner_path, shape, depth + 1);
        }
    }
}

/// How a schema file differs from Fabric's: one readable line per
/// difference, empty when they agree.
pub fn drift(theirs: &Shape, ours: &Shape) -> Vec<String> {
    let mut report = Vec::new();
    for (path, field) in theirs {
        match ours.get(path) {
            None => report.push(format!("added: `{path}` ({}) is not in Fabric's schema", field.kind)),
            Some(own) => {
                if own.kind != field.kind {
                    report.push(retyped(path, &field.kind, &own.kind));
                }
                if own.required != field.required {
                    let word = |required: bool| if required { "required" } else { "optional" };
                    report.push(format!(
                        "changed: `{path}` is {} here, {} in Fabric's schema",
                        word(field.required),
                        word(own.required)
                    ));
                }
                for limit in LIMITS {
                    let (mine, yours) = (own.limits.get(limit), field.limits.get(limit));
                    if mine != yours {
                        let show = |v: Option<&String>| v.map_or("none".to_string(), Clone::clone);
                        report.push(format!(
                            "limit: `{path}` {limit} is {} here, {} in Fabric's schema",
                            show(yours),
                            show(mine)
                        ));
                    }
                }
            }
        }
    }
    for (path, field) in ours {
        if !theirs.contains_key(path) {
            report.push(format!(
                "removed: `{path}` ({}) of Fabric's schema is missing",
                field.kind
            ));
        }
    }
    report
}

/// How a field's kind differs: for two enumerations, what one adds and
/// lacks; otherwise both kinds.
fn retyped(path: &str, theirs: &str, ours: &str) -> String {
    let literals = |kind: &str| -> Option<BTreeSet<String>> {
        let parts: BTreeSet<String> = kind.split(" | ").map(str::to_string).collect();
        parts
            .iter()
            .all(|p| p.starts_with('"') || p.parse::<f64>().is_ok() || p == "null")
            .then_some(parts)
    };
    if let (Some(theirs), Some(ours)) = (literals(theirs), literals(ours)) {
        let list = |set: Vec<&String>| set.into_iter().cloned().collect::<Vec<_>>().join(", ");
        let adds = list(theirs.difference(&ours).collect());
        let lacks = list(ours.difference(&theirs).collect());
        let mut parts = Vec::new();
        if !adds.is_empty() {
            parts.push(format!("adds {adds}"));
        }
        if !lacks.is_empty() {
            parts.push(format!("lacks {lacks}"));
        }
        return format!("retyped: `{path}` {} (against Fabric's schema)", parts.join("; "));
    }
    format!("retyped: `{path}` is {theirs} here, {ours} in Fabric's schema")
}

/// Reads a Studio schema file (`.json` JSON Schema or `.ts`) and reports
/// how it differs from Fabric's own; Err when the file cannot be read.
pub fn drift_of_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut report = Vec::new();
    let theirs = match path.extension().and_then(|e| e.to_str()) {
        Some("ts") => {
            let given = constants(&text);
            for (name, value) in constants(&typescript()) {
                match given.get(&name) {
                    None => report.push(format!("removed: constant `{name}` of Fabric's schema is missing")),
                    Some(theirs) if *theirs != value => {
                        let shown = |v: &str| {
                            if v.len() <= 120 {
                                format!(" `{v}`")
                            } else {
                                String::new()
                            }
                        };
                        report.push(format!(
                            "changed: constant `{name}` is{} here,{} in Fabric's schema",
                            shown(theirs),
                            shown(&value)
                        ));
                    }
                    _ => {}
                }
            }
            shape_of_typescript(&text).map_err(|e| format!("{}:{e}", path.display()))?
        }
        Some("json") => {
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
            shape_of_json_schema(&value)
        }
        _ => return Err(format!("{}: a schema file is `.ts` or `.json`", path.display())),
    };
    report.extend(drift(&theirs, &shape_of_json_schema(&json_schema())));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typescript_and_the_json_schema_have_the_same_shape() {
        let ours = shape_of_json_schema(&json_schema());
        let ts = shape_of_typescript(&typescript()).unwrap();
        assert_eq!(drift(&ts, &ours), Vec::<String>::new());
        assert!(ours["bloomTrace"].limits["maxItems"] == "24");
        assert_eq!(ours["audioMetrics.bufferSize"].kind.split(" | ").count(), 9);
        assert!(!ours["capturedAt"].required && ours["snapshotId"].required);
        assert!(ours.contains_key("alsChannels[].channel"));
    }

    #[test]
    fn drift_names_each_added_removed_retyped_and_changed_limit() {
        let edited = typescript()
            .replace(
                "  sampleRate?: number | null;",
                "  sampleRate?: number | null;\n  roomSize?: number;",
            )
            .replace("  tempo: number;", "  tempo: string;")
            .replace(" * @maxItems 24", " * @maxItems 30")
            .replace("  guidance?: Guidance | null;\n", "");
        let report = drift(
            &shape_of_typescript(&edited).unwrap(),
            &shape_of_json_schema(&json_schema()),
        );
        let expect = [
            "added: `audioMetrics.roomSize`",
            "retyped: `transport.tempo` is string here, number in Fabric's schema",
            "limit: `bloomTrace` maxItems is 30 here, 24 in Fabric's schema",
            "removed: `guidance` (",
            "removed: `guidance.text`",
        ];
        for line in expect {
            assert!(report.iter().any(|r| r.starts_with(line)), "{line}\n{report:#?}");
        }
        assert_eq!(report.len(), 7, "{report:#?}");
    }

    #[test]
    fn comments_readonly_and_split_unions_do_not_count_as_drift() {
        let formatted = typescript()
            .replace("  tempo: number;", "  readonly tempo: number; // bpm")
            .replace(
                "export type Mode = \"passive\" | \"active\" | \"learning\" | \"optimizing\";",
                "export type Mode =\n  | \"passive\"\n  | \"active\"\n  | \"learning\"\n  | \"optimizing\";",
            );
        assert!(formatted.contains("readonly tempo") && formatted.contains("  | \"learning\""));
        let report = drift(
            &shape_of_typescript(&formatted).unwrap(),
            &shape_of_json_schema(&json_schema()),
        );
        assert_eq!(report, Vec::<String>::new());
    }

    #[test]
    fn constants_and_enumerations_drift_readably() {
        let ours = constants(&typescript());
        assert_eq!(ours["PRIME_BRAIN_SCHEMA_VERSION"], "\"v1\"");
        assert!(ours["PRIME_BRAIN_LIMITS"].contains("bloomTrace:24"), "{ours:?}");
        assert!(ours["DAW_COMMANDS"].contains("mix.eqCut"), "{ours:?}");
        let edited = typescript()
            .replace("  bloomTrace: 24,", "  bloomTrace: 32,")
            .replace("  mode: Mode;", "  mode: Mode; /* the mode */");
        assert_ne!(constants(&edited)["PRIME_BRAIN_LIMITS"], ours["PRIME_BRAIN_LIMITS"]);
        let report = drift(
            &shape_of_typescript(&edited).unwrap(),
            &shape_of_json_schema(&json_schema()),
        );
        assert_eq!(report, Vec::<String>::new(), "an inline comment is not a type");
        assert_eq!(
            retyped(
                "mode",
                "\"active\" | \"loud\" | \"passive\"",
                "\"active\" | \"learning\" | \"passive\""
            ),
            "retyped: `mode` adds \"loud\"; lacks \"learning\" (against Fabric's schema)"
        );
    }

    #[test]
    fn a_typescript_file_it_cannot_read_is_an_error_with_its_line() {
        let error = shape_of_typescript("export interface PrimeBrainRawSnapshot {\n  mode passive;\n}\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(shape_of_typescript("export interface Other {\n}\n").is_err());
    }
}
