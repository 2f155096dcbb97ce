//! `layers:` and `from: {rootfs: …}`: sources that exist, destinations inside
//! the image, owners and modes.
use std::path::Path;

use super::ctx::{Ctx, expand};
use super::raw::RawImage;
use super::sources::{Known, Source, lookup};
use super::yaml::Pos;
use super::{IdSpec, LayerSpec, Owner, PathKind};

/// The image's layers: the `rootfs` tarball first, if any, then `layers:`.
pub(super) fn finish_layers(
    cx: &mut Ctx,
    raw: &RawImage,
    vars: &super::vars::Vars,
    dir: &Path,
    known: &Known<'_>,
) -> Vec<LayerSpec> {
    // Each layer's source first: `None` when it names one that is unknown
    // (reported), `Some(None)` when it names none.
    let sources: Vec<Option<Option<&Source>>> = raw
        .layers
        .iter()
        .map(|l| match &l.source {
            None => Some(None),
            Some(name) => lookup(cx, known, name).map(Some),
        })
        .collect();
    let mut x = |s: &super::ctx::S| (expand(cx, s, vars).unwrap_or_default(), s.pos);
    let layers: Vec<(RawLayerExpanded, Pos)> = raw
        .layers
        .iter()
        .zip(sources)
        .filter_map(|(l, source)| Some((l, source?)))
        .map(|(l, source)| {
            (
                RawLayerExpanded {
                    source: source.map(|s| (s, l.source.as_ref().map_or(l.pos, |n| n.pos))),
                    src: l.src.as_ref().map(&mut x),
                    dest: l.dest.as_ref().map(&mut x),
                    owner: l.owner.as_ref().map(&mut x),
                    mode: l.mode.as_ref().map(&mut x),
                    exclude: l.exclude.iter().map(&mut x).collect(),
                },
                l.pos,
            )
        })
        .collect();
    let import = raw.rootfs.as_ref().and_then(|r| {
        let text = expand(cx, r, vars)?;
        let base = cx.base(r.pos, dir);
        let src = base.join(&text);
        if !cx.inside(r.pos, "`rootfs:`", &text, &src) {
            return None;
        }
        // From git (a spec of an earlier commit), what its tree held.
        let is_file = match cx.kinds {
            Some(k) => match k.kind(&src) {
                Some(kind) => Ok(kind == PathKind::File),
                None => Err("not in this revision".to_string()),
            },
            None => std::fs::metadata(&src)
                .map(|m| m.is_file())
                .map_err(|e| io_reason(&e)),
        };
        match is_file {
            Ok(true) => Some(LayerSpec {
                src,
                src_text: text,
                dest: "/".into(),
                owner: None,
                mode: None,
                exclude: Vec::new(),
                import: true,
                source: None,
                pos: r.pos,
            }),
            Ok(_) => {
                cx.err(
                    r.pos,
                    format!("`rootfs: {text}` is not a file"),
                    Some("name a tarball of a root filesystem (.tar, .tar.gz or .tar.zst)".into()),
                );
                None
            }
            Err(e) => {
                cx.err(
                    r.pos,
                    format!("`rootfs: {text}` cannot be read: {e}"),
                    Some(format!("paths are relative to {}", base.display())),
                );
                None
            }
        }
    });
    import
        .into_iter()
        .chain(
            layers
                .into_iter()
                .filter_map(|(l, pos)| finish_layer(cx, l, pos, dir)),
        )
        .collect()
}

/// What a non-regular file is, for messages.
fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

struct RawLayerExpanded<'s> {
    /// The source `src` is inside of, and where `source:` is written.
    source: Option<(&'s Source, Pos)>,
    src: Option<(String, Pos)>,
    dest: Option<(String, Pos)>,
    owner: Option<(String, Pos)>,
    mode: Option<(String, Pos)>,
    exclude: Vec<(String, Pos)>,
}

fn finish_layer(cx: &mut Ctx, l: RawLayerExpanded<'_>, pos: Pos, dir: &Path) -> Option<LayerSpec> {
    let mut ok = true;
    let (src, src_text, src_pos, base, source) = match l.source {
        None => {
            let (text, p) = l.src?;
            // A client file's paths are relative to its own directory.
            let base = cx.base(p, dir);
            let src = base.join(&text);
            if !cx.inside(p, "layer source", &text, &src) {
                return None;
            }
            // A link named as `src` is followed (inside the context, as
            // checked), as Docker's COPY follows one; links inside a tree
            // are copied as links, never followed (see `layer::walk`).
            let src = match src.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() => src.canonicalize().unwrap_or(src),
                _ => src,
            };
            (src, text, p, base, None)
        }
        Some((s, spos)) => {
            let (inner, p) = l.src.unwrap_or_else(|| (String::new(), spos));
            let rel = inner.trim_start_matches("./").trim_end_matches('/');
            if inner.starts_with('/') || rel.split('/').any(|c| c == "..") {
                cx.err(
                    p,
                    format!("`src: {inner}` must stay inside source `{}`", s.spec.name),
                    Some(
                        "with `source:`, `src` is a relative path inside the source's tree".into(),
                    ),
                );
                return None;
            }
            let text = if rel.is_empty() || rel == "." {
                s.spec.name.clone()
            } else {
                format!("{}:{rel}", s.spec.name)
            };
            let src = if rel.is_empty() || rel == "." {
                s.resolved.root.clone()
            } else {
                s.resolved.root.join(rel)
            };
            // A link inside a fetched tree must not lead `src` out of it.
            if let (Ok(real), Ok(root)) = (src.canonicalize(), s.resolved.root.canonicalize())
                && !real.starts_with(&root)
            {
                cx.err(
                    p,
                    format!(
                        "`src: {inner}` leads out of source `{}` through a link",
                        s.spec.name
                    ),
                    Some("name a path whose directories are inside the source's tree".into()),
                );
                return None;
            }
            (
                src,
                text,
                p,
                s.resolved.root.clone(),
                Some(s.spec.name.clone()),
            )
        }
    };
    // A spec read from git: what its tree held, not what is on disk.
    let src_is_file = if let Some(kinds) = cx.kinds {
        match kinds.kind(&src) {
            Some(PathKind::File) => true,
            Some(PathKind::Dir) => false,
            _ => {
                ok = false;
                cx.err(
                    src_pos,
                    format!(
                        "layer source `{src_text}` is not a file or directory in this revision"
                    ),
                    None,
                );
                false
            }
        }
    } else {
        let meta = std::fs::symlink_metadata(&src);
        match &meta {
            Err(e) => {
                ok = false;
                cx.err(
                    src_pos,
                    format!("layer source `{src_text}` cannot be read: {}", io_reason(e)),
                    Some(match &source {
                        None => format!("paths are relative to {}", base.display()),
                        Some(name) => {
                            format!("with `source: {name}`, `src` is relative to the source's tree")
                        }
                    }),
                )
            }
            Ok(m) if !(m.is_dir() || m.is_file()) => {
                ok = false;
                cx.err(
                    src_pos,
                    format!(
                        "layer source `{src_text}` must be a directory or a regular file, not {}",
                        file_kind(m)
                    ),
                    Some("a socket, pipe or device cannot be copied into a layer: name the directory it is in with an `exclude` for it, or a regular file".into()),
                )
            }
            Ok(_) => {}
        }
        meta.as_ref().is_ok_and(|m| m.is_file())
    };
    let dest = match l.dest {
        None => {
            if src_is_file {
                ok = false;
                cx.err(
                    src_pos,
                    format!("layer source `{src_text}` is a file, so the layer needs a `dest`"),
                    Some("e.g. {src: config.php, dest: /var/www/moodle/config.php}".into()),
                );
            }
            "/".to_string()
        }
        Some((d, dpos)) => match normalise_dest(&d) {
            Ok(n) if src_is_file && (n == "/" || d.ends_with('/')) => {
                let file_name = src.file_name().map(|f| f.to_string_lossy().into_owned());
                let base = if n == "/" { String::new() } else { n };
                format!("{base}/{}", file_name.unwrap_or_default())
            }
            Ok(n) => n,
            Err(why) => {
                ok = false;
                cx.err(
                    dpos,
                    format!("`dest: {d}` {why}"),
                    Some("write an absolute path inside the image, like /var/www/moodle".into()),
                );
                String::new()
            }
        },
    };
    let owner = l.owner.and_then(|(o, opos)| match parse_owner(&o) {
        Some(owner) => Some(owner),
        None => {
            ok = false;
            cx.err(
                opos,
                format!("`owner: {o}` is not USER or USER:GROUP"),
                Some("write numeric ids (33:33) or names from the parent image's /etc/passwd and /etc/group (root:www-data)".into()),
            );
            None
        }
    });
    let mode = l.mode.and_then(|(m, mpos)| match parse_mode(&m) {
        Some(mode) => Some(mode),
        None => {
            ok = false;
            cx.err(
                mpos,
                format!("`mode: {m}` is not an octal file mode"),
                Some(
                    "write it in octal and quoted, like \"0644\" or \"0750\" (at most 07777)"
                        .into(),
                ),
            );
            None
        }
    });
    let mut exclude = Vec::new();
    for (pattern, epos) in l.exclude {
        if let Err(e) = globset::Glob::new(&pattern) {
            ok = false;
            cx.err(
                epos,
                format!("`exclude: {pattern}` is not a valid pattern: {}", e.kind()),
                None,
            );
        }
        exclude.push(pattern);
    }
    ok.then_some(LayerSpec {
        src,
        src_text,
        dest,
        owner,
        mode,
        exclude,
        import: false,
        source,
        pos,
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// "/a//b/./c/" → "/a/b/c"; refuses relative paths and `..`.
pub(crate) fn normalise_dest(dest: &str) -> Result<String, &'static str> {
    if !dest.starts_with('/') {
        return Err("must be an absolute path");
    }
    let mut parts = Vec::new();
    for part in dest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("must not contain `..`"),
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parse_id(s: &str) -> Option<IdSpec> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().map(IdSpec::Id);
    }
    let valid = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    valid.then(|| IdSpec::Name(s.to_string()))
}

fn parse_owner(s: &str) -> Option<Owner> {
    match s.split_once(':') {
        Some((u, g)) => Some(Owner {
            user: parse_id(u)?,
            group: Some(parse_id(g)?),
        }),
        None => Some(Owner {
            user: parse_id(s)?,
            group: None,
        }),
    }
}

fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_and_mode_and_owner_parsing() {
        assert_eq!(normalise_dest("/a//b/./c/").unwrap(), "/a/b/c");
        assert!(normalise_dest("a/b").is_err());
        assert!(normalise_dest("/a/../b").is_err());
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("04755"), Some(0o4755));
        assert_eq!(parse_mode("rwx"), None);
        assert_eq!(parse_mode("17777"), None);
        assert_eq!(parse_owner("33:33").unwrap().group, Some(IdSpec::Id(33)));
        assert!(parse_owner("a b").is_none());
    }

    #[test]
    fn a_socket_as_src_is_refused_with_a_hint() {
        use super::super::testutil::{parse_in, tree};
        let d = tree();
        let _listener = std::os::unix::net::UnixListener::bind(d.path().join("app.sock")).unwrap();
        let p = parse_in(
            d.path(),
            "images:\n  a:\n    from: scratch\n    layers:\n      - {src: app.sock, dest: /x}\n",
        )
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0].message,
            "layer source `app.sock` must be a directory or a regular file, not a socket"
        );
        assert!(
            p[0].hint
                .as_deref()
                .unwrap()
                .starts_with("a socket, pipe or device")
        );
    }

    /// Issue 13: every path the file names stays in the build context:
    /// a tarball, a keyring and a client file too, through links as well.
    #[test]
    fn every_kind_of_path_stays_in_the_context() {
        use super::super::testutil::{assert_problems, parse_in, tree};
        use super::super::{LoadOptions, Spec, SpecError};
        let outer = tree();
        let project = outer.path().join("project");
        std::fs::create_dir_all(project.join("clients")).unwrap();
        std::fs::write(outer.path().join("root.tar"), b"").unwrap();
        std::fs::write(outer.path().join("keyring.gpg"), b"").unwrap();
        std::fs::create_dir_all(outer.path().join("elsewhere")).unwrap();
        std::fs::write(outer.path().join("elsewhere/client.yaml"), "vars: {}\n").unwrap();
        std::os::unix::fs::symlink(outer.path().join("elsewhere"), project.join("clients/acme"))
            .unwrap();
        let text = concat!(
            "images:\n",
            "  a:\n    from: {rootfs: ../root.tar}\n",
            "  b:\n    from: scratch\n    debian: {suite: stable, packages: [tzdata], keyring: ../keyring.gpg}\n",
            "clients:\n  files: clients/*/client.yaml\n  template: {from: scratch}\n",
        );
        let p = parse_in(&project, text).unwrap_err();
        assert_problems(
            &p,
            &[
                &format!(
                    "3: `rootfs:` `../root.tar` is outside the build context {}",
                    project.display()
                ),
                &format!(
                    "6: keyring `../keyring.gpg` is outside the build context {}",
                    project.display()
                ),
            ],
        );
        let client = p
            .iter()
            .find(|p| p.file.is_some())
            .unwrap_or_else(|| panic!("{p:?}"));
        assert!(
            client
                .message
                .starts_with("client file `clients/acme/client.yaml` is outside the build context")
                && client.message.contains("through a link"),
            "{client:?}"
        );
        assert!(client.hint.as_deref().unwrap().contains("--context DIR"));
        // The parent directory as the context takes all three.
        let opts = LoadOptions {
            context: Some(outer.path()),
            ..LoadOptions::default()
        };
        match Spec::parse_with(text, Path::new("images.yaml"), &project, &opts) {
            Ok(spec) => assert_eq!(spec.images.len(), 3),
            Err(SpecError::Invalid { problems, .. }) => panic!("{problems:?}"),
            Err(e) => panic!("{e}"),
        }
    }
}
