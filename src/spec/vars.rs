//! `${name}` expansion in images.yaml strings.
use std::collections::BTreeMap;

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarError {
    Unknown(String),
    Unterminated,
    BadName(String),
}

/// Expands `${name}` from `vars`; `$$` is a literal `$`. A lone `$` not
/// followed by `{` or `$` stays as it is, so shell snippets keep working.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> Result<String, VarError> {
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
                .get(name)
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
