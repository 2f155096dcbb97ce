//! The image graph drawn: a tree of text, dot, mermaid or JSON.
use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::spec::{Parent, Spec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Dot,
    Mermaid,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "dot" => Ok(Format::Dot),
            "mermaid" => Ok(Format::Mermaid),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown graph format `{other}`; use text, dot, mermaid or json"
            )),
        }
    }
}

#[derive(Debug, Serialize)]
struct Node<'a> {
    name: &'a str,
    parent: Option<&'a str>,
    children: Vec<&'a str>,
    layers: Vec<String>,
    tags: &'a [String],
}

/// Each image's children, sorted.
pub fn children(spec: &Spec) -> BTreeMap<&str, Vec<&str>> {
    let mut map: BTreeMap<&str, Vec<&str>> = spec
        .images
        .keys()
        .map(|k| (k.as_str(), Vec::new()))
        .collect();
    for (name, image) in &spec.images {
        if let Parent::Image(p) = &image.parent {
            map.entry(p.as_str()).or_default().push(name);
        }
    }
    map
}

/// What a root image starts from: `scratch` or its registry reference.
fn origin(spec: &Spec, name: &str) -> String {
    match &spec.images[name].parent {
        Parent::Registry(r) => r.to_string(),
        _ => "scratch".to_string(),
    }
}

pub fn render(spec: &Spec, format: Format) -> String {
    let kids = children(spec);
    let roots: Vec<&str> = spec
        .images
        .keys()
        .map(String::as_str)
        .filter(|n| spec.parent_of(n).is_none())
        .collect();
    let mut out = String::new();
    match format {
        Format::Text => {
            fn walk(
                out: &mut String,
                kids: &BTreeMap<&str, Vec<&str>>,
                name: &str,
                prefix: &str,
                last: bool,
                root: bool,
            ) {
                let (branch, next) = match (root, last) {
                    (true, _) => ("", String::new()),
                    (false, true) => ("└── ", format!("{prefix}    ")),
                    (false, false) => ("├── ", format!("{prefix}│   ")),
                };
                let _ = writeln!(out, "{prefix}{branch}{name}");
                let list = &kids[name];
                for (i, c) in list.iter().enumerate() {
                    walk(out, kids, c, &next, i + 1 == list.len(), false);
                }
            }
            for r in &roots {
                let _ = writeln!(out, "{}", origin(spec, r));
                walk(&mut out, &kids, r, "", true, false);
            }
        }
        Format::Dot => {
            out.push_str("digraph images {\n  rankdir=LR;\n  node [shape=box];\n");
            for (name, image) in &spec.images {
                let _ = writeln!(
                    out,
                    "  \"{name}\" [label=\"{name}\\n{} layer(s)\"];",
                    image.layers.len()
                );
                match &image.parent {
                    Parent::Image(p) => {
                        let _ = writeln!(out, "  \"{p}\" -> \"{name}\";");
                    }
                    Parent::Registry(r) => {
                        let _ = writeln!(out, "  \"{r}\" -> \"{name}\";");
                    }
                    Parent::Scratch => {}
                }
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            out.push_str("graph LR\n");
            let id = |n: &str| n.replace(['.', '-'], "_");
            for (name, image) in &spec.images {
                match &image.parent {
                    Parent::Image(p) => {
                        let _ = writeln!(out, "  {}[\"{p}\"] --> {}[\"{name}\"]", id(p), id(name));
                    }
                    Parent::Scratch => {
                        let _ = writeln!(out, "  {}[\"{name}\"]", id(name));
                    }
                    Parent::Registry(r) => {
                        let _ = writeln!(
                            out,
                            "  {}[(\"{r}\")] --> {}[\"{name}\"]",
                            id(&r.to_string()).replace([':', '/', '@'], "_"),
                            id(name)
                        );
                    }
                }
            }
        }
        Format::Json => {
            let nodes: Vec<Node> = spec
                .images
                .iter()
                .map(|(name, image)| Node {
                    name,
                    parent: spec.parent_of(name),
                    children: kids[name.as_str()].clone(),
                    layers: image
                        .layers
                        .iter()
                        .map(|l| format!("{} -> {}", l.src_text, l.dest))
                        .collect(),
                    tags: &image.tags,
                })
                .collect();
            out = serde_json::to_string_pretty(&serde_json::json!({ "images": nodes }))
                .expect("JSON serialises");
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn renders_a_tree() {
        let spec = Spec::parse(
            "images:\n  base: {from: scratch}\n  php: {from: base}\n  m51: {from: php}\n  m50: {from: php}\n  other: {from: scratch}\n",
            Path::new("images.yaml"),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            render(&spec, Format::Text),
            "scratch\n└── base\n    └── php\n        ├── m50\n        └── m51\nscratch\n└── other\n"
        );
        assert!(render(&spec, Format::Dot).contains("\"php\" -> \"m51\";"));
        assert!(render(&spec, Format::Mermaid).contains("php[\"php\"] --> m51[\"m51\"]"));
        let json: serde_json::Value = serde_json::from_str(&render(&spec, Format::Json)).unwrap();
        let php = json["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "php")
            .unwrap();
        assert_eq!(php["children"], serde_json::json!(["m50", "m51"]));
    }
}
