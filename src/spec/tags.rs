//! `tags:`: `tag` or `repository:tag`, checked as a registry would.

use super::ctx::{Ctx, S, expand};

pub(super) fn finish_tags(cx: &mut Ctx, tags: &[S], vars: &super::vars::Vars) -> Vec<String> {
    let expanded: Vec<(String, super::yaml::Pos)> = tags
        .iter()
        .map(|s| (expand(cx, s, vars).unwrap_or_default(), s.pos))
        .collect();
    let mut out = Vec::new();
    for (t, pos) in expanded {
        match check_tag(&t) {
            Ok(()) => out.push(t),
            Err(why) => cx.err(
                pos,
                format!("`{t}` is not a valid tag: {why}"),
                Some("write `tag` or `repository:tag`, e.g. client-acme:5.1.4".into()),
            ),
        }
    }
    out
}

fn check_tag(t: &str) -> Result<(), &'static str> {
    let (repo, tag) = match t.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => (Some(r), tag),
        _ => (None, t),
    };
    if let Some(repo) = repo {
        let ok = !repo.is_empty()
            && repo.split('/').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            });
        if !ok {
            return Err("the repository part takes lowercase letters, digits, . _ - and /");
        }
    }
    let mut chars = tag.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && tag.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err("a tag is 1 to 128 of letters, digits, . _ - and does not start with . or -")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_take_an_optional_repository() {
        assert_eq!(check_tag("client-acme:5.1.4"), Ok(()));
        assert!(check_tag("Client:x").is_err());
        assert!(check_tag("localhost:5000/x").is_err());
    }
}
