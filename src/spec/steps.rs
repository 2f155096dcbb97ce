//! What `run:` steps get besides their commands: `secrets:` and `network:`.
use std::path::Path;

use super::config::valid_env_name;
use super::ctx::{Ctx, S, expand};
use super::raw::RawSecret;
use super::{Network, SecretSource, SecretSpec};

pub(super) fn finish_network(cx: &mut Ctx, raw: Option<&S>, vars: &super::vars::Vars) -> Network {
    match raw.map(|n| (expand(cx, n, vars), n.pos)) {
        None => Network::Host,
        Some((Some(n), _)) if n == "host" => Network::Host,
        Some((Some(n), _)) if n == "none" => Network::None,
        Some((None, _)) => Network::Host,
        Some((Some(n), pos)) => {
            cx.err(
                pos,
                format!("`network: {n}` is not a network mode"),
                Some(
                    "write `network: none` (steps without a network) or `host` (the default)"
                        .into(),
                ),
            );
            Network::Host
        }
    }
}

/// `compression:`: `gzip`, `zstd` or `ALGORITHM:LEVEL`; None when not given
/// (or wrong, which is reported).
pub(super) fn finish_compression(
    cx: &mut Ctx,
    raw: Option<&S>,
    vars: &super::vars::Vars,
) -> Option<crate::layer::LayerCompression> {
    let raw = raw?;
    let text = expand(cx, raw, vars)?;
    match text.parse() {
        Ok(c) => Some(c),
        Err(e) => {
            cx.err(
                raw.pos,
                format!("`compression: {text}`: {e}"),
                Some("write `gzip` (the default), `zstd`, or a level: `zstd:9`, `gzip:9`".into()),
            );
            None
        }
    }
}

/// `secrets:` entries, checked but not read: values are read when steps run
/// (a CI job may define them only for its build).
pub(super) fn finish_secrets(
    cx: &mut Ctx,
    raw: &[RawSecret],
    vars: &super::vars::Vars,
    dir: &Path,
) -> Vec<SecretSpec> {
    let mut out = Vec::new();
    for r in raw {
        let name = &r.name.v;
        let valid = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            cx.err(
                r.name.pos,
                format!("`{name}` is not a valid secret name"),
                Some(
                    "use letters, digits, `.`, `_` and `-`: it is a file name under /run/secrets"
                        .into(),
                ),
            );
            continue;
        }
        let source = match (&r.env, &r.file) {
            (Some(e), None) => match expand(cx, e, vars) {
                Some(v) if valid_env_name(&v) => SecretSource::Env(v),
                Some(v) => {
                    cx.err(
                        e.pos,
                        format!("`{v}` is not an environment variable name"),
                        None,
                    );
                    continue;
                }
                None => continue,
            },
            (None, Some(f)) => match expand(cx, f, vars) {
                Some(v) => {
                    let path = cx.base(f.pos, dir).join(&v);
                    if !cx.inside(f.pos, "secret file", &v, &path) {
                        continue;
                    }
                    SecretSource::File(path)
                }
                None => continue,
            },
            _ => {
                cx.err(
                    r.name.pos,
                    format!("secret `{name}` needs exactly one of `env` and `file`"),
                    Some(format!(
                        "e.g. `{name}: {{env: CI_JOB_TOKEN}}` or `{name}: {{file: secrets/{name}}}`"
                    )),
                );
                continue;
            }
        };
        let rebuild = match r.rebuild.as_ref().map(|b| (b.v.as_str(), b.pos)) {
            None | Some(("false", _)) => false,
            Some(("true", _)) => true,
            Some((other, pos)) => {
                cx.err(
                    pos,
                    format!("`rebuild: {other}` must be true or false"),
                    None,
                );
                false
            }
        };
        out.push(SecretSpec {
            name: name.clone(),
            source,
            rebuild,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_problems, parse_in, tree};

    #[test]
    fn secrets_need_one_source_and_a_file_name() {
        let d = tree();
        let p = parse_in(
            d.path(),
            concat!(
                "images:\n  a:\n    from: scratch\n    secrets:\n",
                "      ok: {env: TOKEN, rebuild: true}\n",
                "      both: {env: A, file: b}\n",
                "      ../up: {file: x}\n",
                "      lazy: {env: A, rebuild: maybe}\n",
                "      typo: {enf: A}\n",
            ),
        )
        .unwrap_err();
        assert_problems(
            &p,
            &[
                "6: secret `both` needs exactly one of `env` and `file`",
                "7: `../up` is not a valid secret name",
                "8: `rebuild: maybe` must be true or false",
                "9: unknown key `enf` in a secret",
            ],
        );
    }
}
