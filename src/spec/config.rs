//! `config:`: environment, command, workdir, ports, volumes, labels.
use std::collections::BTreeMap;

use super::ConfigSpec;
use super::ctx::{Ctx, S, expand, expand_each};
use super::raw::RawConfig;
use super::yaml::Pos;

pub(super) fn finish_config(cx: &mut Ctx, c: &RawConfig, vars: &super::vars::Vars) -> ConfigSpec {
    let mut x = |s: &S| expand(cx, s, vars).unwrap_or_default();
    let env: Vec<(S, String)> = c.env.iter().map(|(k, v)| (k.clone(), x(v))).collect();
    let labels: BTreeMap<String, String> = c.labels.iter().map(|(k, v)| (x(k), x(v))).collect();
    let workdir = c.workdir.as_ref().map(|s| (x(s), s.pos));
    let user = c.user.as_ref().map(&mut x);
    let ports: Vec<(String, Pos)> = c.ports.iter().map(|s| (x(s), s.pos)).collect();
    let volumes: Vec<(String, Pos)> = c.volumes.iter().map(|s| (x(s), s.pos)).collect();
    let stop_signal = c.stop_signal.as_ref().map(&mut x);
    let entrypoint = c.entrypoint.as_ref().map(|v| expand_each(cx, v, vars));
    let cmd = c.cmd.as_ref().map(|v| expand_each(cx, v, vars));

    let mut config = ConfigSpec {
        entrypoint,
        cmd,
        user,
        labels,
        stop_signal,
        ..ConfigSpec::default()
    };
    for (k, v) in env {
        if !valid_env_name(&k.v) {
            cx.err(
                k.pos,
                format!("`{}` is not a valid environment variable name", k.v),
                None,
            );
        }
        config.env.insert(k.v, v);
    }
    if let Some((w, pos)) = workdir {
        if !w.starts_with('/') {
            cx.err(
                pos,
                format!("`workdir: {w}` must be an absolute path"),
                None,
            );
        }
        config.workdir = Some(w);
    }
    for (p, pos) in ports {
        match normalise_port(&p) {
            Some(p) => config.ports.push(p),
            None => cx.err(
                pos,
                format!("`{p}` is not a port"),
                Some("write PORT or PORT/PROTO, as 80 or 80/tcp (tcp, udp or sctp)".into()),
            ),
        }
    }
    for (v, pos) in volumes {
        if !v.starts_with('/') {
            cx.err(pos, format!("volume `{v}` must be an absolute path"), None);
        }
        config.volumes.push(v);
    }
    config
}

fn normalise_port(p: &str) -> Option<String> {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let n: u16 = num.parse().ok()?;
    (n > 0 && ["tcp", "udp", "sctp"].contains(&proto)).then(|| format!("{n}/{proto}"))
}

pub(super) fn valid_env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains('=') && !k.contains('\0')
}
