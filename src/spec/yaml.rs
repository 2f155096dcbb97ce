//! A YAML node tree that keeps the position of every node.
//!
//! serde_yaml can say where a syntax error is, but not where a semantically
//! wrong value sits (an unknown parent, a missing path). Errors in images.yaml
//! must name line and column, so the spec is read from this tree instead.
use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
    /// Which file: 0 is images.yaml, `n` the n-th file it includes
    /// (`Spec::file_at` names it), so a problem in a client file names that
    /// file.
    pub file: u32,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A scalar; `plain` is false when it was quoted or a block scalar, so
    /// `"null"` stays a string while a bare `null` or `~` is null.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if value.is_empty() || value == "~" || value == "null")
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A syntax error, with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Deeper than any images.yaml needs (about 8 levels); a tree nested
/// thousands deep would exhaust the stack when it is dropped.
pub const MAX_DEPTH: usize = 64;

impl SyntaxError {
    /// What usually fixes it: the parser's messages name its state, not
    /// the author's mistake.
    pub fn hint(&self) -> String {
        let m = self.message.as_str();
        if m.contains("tab") {
            "indent with spaces: YAML does not allow tabs in indentation (set the editor to insert spaces)".into()
        } else if m.contains("did not find expected key")
            || m.contains("mapping values are not allowed")
            || m.contains("expected '-' indicator")
            || m.contains("could not find expected ':'")
        {
            "check the indentation here and on the line above: keys of one mapping start in the same column, a value's own keys further right (spaces only); quote a value that holds `: `".into()
        } else if m.contains("recursion limit") || m.contains("nested") {
            format!(
                "images.yaml needs a few levels of nesting, at most {MAX_DEPTH}: close the brackets opened before, or check the indentation"
            )
        } else if m.contains("flow sequence") || m.contains("flow mapping") {
            "close the `[` or `{` opened before, with `,` between items; quote an item that holds `[`, `]`, `{`, `}` or `,`".into()
        } else if m.contains("quoted scalar") {
            "close the quote opened here (write `''` for a `'` inside single quotes, `\\\"` inside double quotes)".into()
        } else {
            "images.yaml is YAML: check the indentation (spaces, not tabs) and the quoting near here".into()
        }
    }
}

/// Parses one YAML document of images.yaml. An empty document is an empty
/// mapping.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    parse_file(source, 0)
}

/// As [`parse`], for the file numbered `file` (see [`Pos::file`]).
pub fn parse_file(source: &str, file: u32) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        file,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(source);
    // Event by event rather than `Parser::load`, which recurses once per
    // level of nesting: a file nested thousands deep stops at MAX_DEPTH
    // instead of exhausting the stack.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
                file,
            },
            message: e.info().to_string(),
        })?;
        let end = ev == Event::StreamEnd;
        builder.on_event(ev, mark);
        if end || builder.error.is_some() {
            break;
        }
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        kind: Kind::Map(Vec::new()),
        pos: Pos {
            line: 1,
            col: 1,
            file,
        },
    }))
}

enum Frame {
    Seq(Node, usize),
    Map(Node, usize, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: HashMap<usize, Node>,
    error: Option<SyntaxError>,
    file: u32,
}

impl Builder {
    fn pos(&self, mark: Marker) -> Pos {
        // yaml-rust2 lines are 1-based and columns 0-based.
        Pos {
            line: mark.line(),
            col: mark.col() + 1,
            file: self.file,
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(seq, _)) => {
                if let Kind::Seq(items) = &mut seq.kind {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, _, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Kind::Map(entries) = &mut map.kind {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let node = Node {
                    kind: Kind::Scalar {
                        value,
                        plain: style == TScalarStyle::Plain,
                    },
                    pos: self.pos(mark),
                };
                self.push_value(node, anchor);
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.error = Some(SyntaxError {
                    pos: self.pos(mark),
                    message: format!("lists and mappings nested more than {MAX_DEPTH} deep"),
                })
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(
                Node {
                    kind: Kind::Seq(Vec::new()),
                    pos: self.pos(mark),
                },
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map(
                Node {
                    kind: Kind::Map(Vec::new()),
                    pos: self.pos(mark),
                },
                anchor,
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(node, anchor)) | Some(Frame::Map(node, anchor, _)) => {
                    self.push_value(node, anchor)
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    let mut node = node.clone();
                    node.pos = self.pos(mark);
                    self.push_value(node, 0);
                }
                None => {
                    self.error = Some(SyntaxError {
                        pos: self.pos(mark),
                        message: "alias to an unknown anchor".into(),
                    })
                }
            },
            Event::DocumentStart if self.root.is_some() => {
                self.error = Some(SyntaxError {
                    pos: self.pos(mark),
                    message: "more than one YAML document; images.yaml holds one".into(),
                })
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("a:\n  b: [x, \"y\"]\n").unwrap();
        let Kind::Map(entries) = &n.kind else {
            panic!()
        };
        let (k, v) = &entries[0];
        assert_eq!(
            k.pos,
            Pos {
                line: 1,
                col: 1,
                file: 0
            }
        );
        let Kind::Map(inner) = &v.kind else { panic!() };
        assert_eq!(
            inner[0].0.pos,
            Pos {
                line: 2,
                col: 3,
                file: 0
            }
        );
        let Kind::Seq(items) = &inner[0].1.kind else {
            panic!()
        };
        assert_eq!(
            items[1].pos,
            Pos {
                line: 2,
                col: 10,
                file: 0
            }
        );
        assert!(matches!(&items[1].kind, Kind::Scalar { plain: false, .. }));
    }

    #[test]
    fn aliases_resolve_and_nulls_are_recognised() {
        let n = parse("a: &x {k: v}\nb: *x\nc: ~\nd: \"~\"\n").unwrap();
        let Kind::Map(e) = &n.kind else { panic!() };
        assert_eq!(e[0].1.kind, e[1].1.kind);
        assert!(e[2].1.is_null());
        assert!(!e[3].1.is_null());
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn syntax_errors_carry_hints_and_depth_is_bounded() {
        let hint = |t: &str| {
            let e = parse(t).unwrap_err();
            (e.pos.line, e.hint())
        };
        let (line, h) = hint("a:\n\tb: 1\n");
        assert_eq!(line, 2);
        assert!(h.starts_with("indent with spaces"), "{h}");
        let (line, h) = hint("images:\n  a:\n    from: scratch\n   tags: []\n");
        assert_eq!(line, 4);
        assert!(h.starts_with("check the indentation"), "{h}");
        let (_, h) = hint("a: 'x\n");
        assert!(h.starts_with("close the quote"), "{h}");
        // Nested 3,000 deep, by brackets or by indentation: refused at
        // MAX_DEPTH instead of exhausting the stack.
        let deep = format!("a: {}1{}\n", "[".repeat(3000), "]".repeat(3000));
        let mut indented = String::new();
        for i in 0..3000 {
            indented.push_str(&" ".repeat(i));
            indented.push_str("k:\n");
        }
        for text in [deep, indented] {
            let e = parse(&text).unwrap_err();
            assert!(
                e.hint().contains("at most 64"),
                "{}: {}",
                e.message,
                e.hint()
            );
        }
    }
}
