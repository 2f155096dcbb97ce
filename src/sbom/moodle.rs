//! Moodle's `version.php` files: a plugin names itself
//! (`$plugin->component`, `->version`, `->release`); core's gives the
//! Moodle release (`$release`, with `$branch` beside it).
use super::layers::VersionPhp;

/// What a `version.php` says, when it is a plugin's or core's.
pub fn version_php(text: &str) -> Option<VersionPhp> {
    let component = assigned(text, "$plugin->component");
    if component.is_some() {
        return Some(VersionPhp {
            component,
            version: assigned(text, "$plugin->version"),
            release: assigned(text, "$plugin->release"),
            core: false,
        });
    }
    let release = assigned(text, "$release")?;
    assigned(text, "$branch")?;
    Some(VersionPhp {
        component: None,
        version: assigned(text, "$version"),
        release: Some(release),
        core: true,
    })
}

/// The value assigned to `lhs` on a line of its own: a quoted string or a
/// number, without comments.
fn assigned(text: &str, lhs: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(lhs)?.trim_start();
        let rest = rest.strip_prefix('=')?.trim_start();
        match rest.chars().next()? {
            q @ ('\'' | '"') => {
                let body = &rest[1..];
                Some(body[..body.find(q)?].to_string())
            }
            _ => {
                let v: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                    .collect();
                (!v.is_empty()).then_some(v)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_and_core_name_themselves() {
        let p = version_php(
            "<?php\ndefined('MOODLE_INTERNAL') || die();\n$plugin->version   = 2024100700; // YYYYMMDDXX\n$plugin->requires  = 2024041600;\n$plugin->component = 'theme_acme';\n$plugin->release = \"1.4.2\";\n",
        )
        .unwrap();
        assert_eq!(p.component.as_deref(), Some("theme_acme"));
        assert_eq!(p.version.as_deref(), Some("2024100700"));
        assert_eq!(p.release.as_deref(), Some("1.4.2"));
        let core = version_php(
            "<?php\n$version  = 2024100700.04;\n$release  = '4.5.4 (Build: 20250414)';\n$branch   = '405';\n",
        )
        .unwrap();
        assert!(core.core);
        assert_eq!(core.release.as_deref(), Some("4.5.4 (Build: 20250414)"));
        assert_eq!(core.version.as_deref(), Some("2024100700.04"));
        assert_eq!(
            version_php("<?php\n$release = 'x';\n"),
            None,
            "no branch: not core"
        );
        assert_eq!(version_php("<?php\n// nothing\n"), None);
    }
}
