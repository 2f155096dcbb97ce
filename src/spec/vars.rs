//! `${name}` expansion in images.yaml strings, and the vars in force for
//! an image, shared down the `from` chain rather than copied per image.
use std::collections::BTreeMap;
use std::sync::Arc;

/// What `${name}` is looked up in.
pub trait Lookup {
    fn lookup(&self, name: &str) -> Option<&str>;
    /// Every name, for suggestions (only on an error).
    fn names(&self) -> Vec<&str>;
}

impl Lookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }

    fn names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}

/// How many images' own vars are stacked before they are merged into one
/// map: a lookup walks at most this many maps, and a long chain merges
/// once per this many images that define vars.
const MAX_STACK: usize = 16;

/// The vars in force for an image: its own over its parent's, over the
/// file's. An image that defines none shares its parent's (issue 13: each
/// image copied the whole map, images × vars).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    own: BTreeMap<String, String>,
    up: Option<Arc<Vars>>,
    /// How many maps are stacked above the file's (0: this is the file's).
    depth: usize,
}

impl Vars {
    /// The file's vars, at the bottom of every image's.
    pub fn root(vars: BTreeMap<String, String>) -> Arc<Vars> {
        Arc::new(Vars {
            own: vars,
            up: None,
            depth: 0,
        })
    }

    /// `own` over `up`.
    pub fn child(up: &Arc<Vars>, own: BTreeMap<String, String>) -> Arc<Vars> {
        if own.is_empty() {
            return Arc::clone(up);
        }
        if up.depth < MAX_STACK {
            return Arc::new(Vars {
                own,
                up: Some(Arc::clone(up)),
                depth: up.depth + 1,
            });
        }
        // Merge the images' maps (not the file's) into one.
        let mut stack = Vec::new();
        let mut at = up;
        while let Some(next) = &at.up {
            stack.push(&at.own);
            at = next;
        }
        let mut merged = BTreeMap::new();
        for m in stack.into_iter().rev() {
            merged.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        merged.extend(own);
        Arc::new(Vars {
            own: merged,
            up: Some(Arc::clone(at)),
            depth: 1,
        })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.value(name).map(String::as_str)
    }

    fn value(&self, name: &str) -> Option<&String> {
        let mut at = self;
        loop {
            if let Some(v) = at.own.get(name) {
                return Some(v);
            }
            at = at.up.as_deref()?;
        }
    }

    /// Every var, as one map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut out = match &self.up {
            Some(up) => up.to_map(),
            None => BTreeMap::new(),
        };
        out.extend(self.own.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

impl PartialEq for Vars {
    fn eq(&self, other: &Vars) -> bool {
        self.to_map() == other.to_map()
    }
}

impl Eq for Vars {}

impl std::ops::Index<&str> for Vars {
    type Output = String;

    fn index(&self, name: &str) -> &String {
        self.value(name)
            .unwrap_or_else(|| panic!("no var `{name}`"))
    }
}

impl Lookup for Vars {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }

    fn names(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut at = Some(self);
        while let Some(v) = at {
            out.extend(v.own.keys().map(String::as_str));
            at = v.up.as_deref();
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl<L: Lookup + ?Sized> Lookup for Arc<L> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_ref().lookup(name)
    }

    fn names(&self) -> Vec<&str> {
        self.as_ref().names()
    }
}

/// `own` (being defined) over `up`: what a var definition sees.
pub struct Overlay<'a, L: Lookup + ?Sized> {
    pub own: &'a BTreeMap<String, String>,
    pub up: &'a L,
}

impl<L: Lookup + ?Sized> Lookup for Overlay<'_, L> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.own
            .get(name)
            .map(String::as_str)
            .or_else(|| self.up.lookup(name))
    }

    fn names(&self) -> Vec<&str> {
        let mut out = self.up.names();
        out.extend(self.own.keys().map(String::as_str));
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarError {
    Unknown(String),
    Unterminated,
    BadName(String),
}

/// Expands `${name}` from `vars`; `$$` is a literal `$`. A lone `$` not
/// followed by `{` or `$` stays as it is, so shell snippets keep working.
pub fn expand<L: Lookup + ?Sized>(input: &str, vars: &L) -> Result<String, VarError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(VarError::Unterminated)?;
            let name = &tail[..end];
            if !valid_name(name) {
                return Err(VarError::BadName(name.to_string()));
            }
            let value = vars
                .lookup(name)
                .ok_or_else(|| VarError::Unknown(name.to_string()))?;
            out.push_str(value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The names `input` refers to with `${name}`, in order (`$${…}` is not
/// one).
pub fn references(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else { break };
            out.push(&tail[..end]);
            rest = &tail[end + 1..];
        } else {
            rest = after;
        }
    }
    out
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("tz", "Europe/Zurich"), ("v", "5.1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("TZ=${tz}", &vars()).unwrap(), "TZ=Europe/Zurich");
        assert_eq!(expand("a:${v}-${v}", &vars()).unwrap(), "a:5.1-5.1");
        assert_eq!(expand("$${tz} $HOME $", &vars()).unwrap(), "${tz} $HOME $");
    }

    #[test]
    fn stacked_vars_see_the_nearest_definition_across_merges() {
        let map = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let root = Vars::root(map(&[("file", "f".into()), ("over", "file".into())]));
        let mut at = Arc::clone(&root);
        // Deeper than MAX_STACK, so maps are merged on the way; every
        // third image defines nothing and shares its parent's.
        for i in 0..50 {
            let own = if i % 3 == 2 {
                BTreeMap::new()
            } else {
                map(&[(&format!("v{i}"), i.to_string()), ("over", i.to_string())])
            };
            let next = Vars::child(&at, own);
            if i % 3 == 2 {
                assert!(Arc::ptr_eq(&next, &at), "shared, not copied");
            }
            at = next;
        }
        assert!(at.depth <= MAX_STACK);
        assert_eq!(at.get("file"), Some("f"));
        assert_eq!(at.get("over"), Some("49"));
        assert_eq!(at.get("v0"), Some("0"));
        assert_eq!(at.get("v49"), Some("49"));
        assert_eq!(at.get("v47"), None);
        assert_eq!(at.get("v2"), None);
        let flat = at.to_map();
        assert_eq!(flat.len(), 2 + 34);
        assert_eq!(at.names().len(), flat.len());
        assert_eq!(expand("${over}/${file}", at.as_ref()).unwrap(), "49/f");
        // The file's map stays at the bottom, never copied into a merge.
        let mut bottom = at.as_ref();
        while let Some(up) = bottom.up.as_deref() {
            bottom = up;
        }
        assert!(std::ptr::eq(bottom, root.as_ref()));
    }

    #[test]
    fn references_skip_escapes() {
        assert_eq!(references("${a}-$${b}-${c}$"), vec!["a", "c"]);
    }

    #[test]
    fn reports_problems() {
        assert_eq!(
            expand("${nope}", &vars()),
            Err(VarError::Unknown("nope".into()))
        );
        assert_eq!(expand("${tz", &vars()), Err(VarError::Unterminated));
        assert_eq!(
            expand("${a b}", &vars()),
            Err(VarError::BadName("a b".into()))
        );
    }
}
