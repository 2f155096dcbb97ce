//! The host programs imgbuild runs (`unshare`, `chroot`, `cp`, `git`, …), found
//! once on a fixed PATH and run by absolute path, so that neither an
//! image's env (a PATH without sbin) nor the caller's decides which program
//! runs, or whether it is found.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::SandboxError;

/// Where host programs are looked up, whatever the environment says.
pub const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A host program imgbuild runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The host's shell, for the namespace's set-up script.
    Sh,
    Unshare,
    Chroot,
    /// Starts `chroot` with the step's environment and nothing else.
    Env,
    Cp,
    /// For `git:` sources and the revision stamp.
    Git,
    /// Device nodes and FIFOs when unpacking layers as root.
    Mknod,
}

impl Tool {
    const ALL: [Tool; 7] = [
        Tool::Sh,
        Tool::Unshare,
        Tool::Chroot,
        Tool::Env,
        Tool::Cp,
        Tool::Git,
        Tool::Mknod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Sh => "sh",
            Tool::Unshare => "unshare",
            Tool::Chroot => "chroot",
            Tool::Env => "env",
            Tool::Cp => "cp",
            Tool::Git => "git",
            Tool::Mknod => "mknod",
        }
    }

    /// The Debian package that has it.
    fn package(self) -> &'static str {
        match self {
            Tool::Sh => "dash",
            Tool::Unshare => "util-linux",
            Tool::Chroot | Tool::Env | Tool::Cp | Tool::Mknod => "coreutils",
            Tool::Git => "git",
        }
    }
}

/// Each tool's absolute path, looked up on the first call.
fn table() -> &'static [Option<PathBuf>; Tool::ALL.len()] {
    static TABLE: OnceLock<[Option<PathBuf>; Tool::ALL.len()]> = OnceLock::new();
    TABLE.get_or_init(|| Tool::ALL.map(|t| find(t.name())))
}

/// `tool`'s absolute path on [`HOST_PATH`].
pub fn host_tool(tool: Tool) -> Result<&'static Path, SandboxError> {
    table()[tool as usize]
        .as_deref()
        .ok_or_else(|| SandboxError::NoTool {
            tool: tool.name(),
            package: tool.package(),
        })
}

fn find(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(HOST_PATH)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_by_absolute_path_on_the_fixed_path_only() {
        // Whatever this process's PATH says: the table ignores it.
        let sh = host_tool(Tool::Sh).unwrap();
        assert!(sh.is_absolute());
        assert!(
            std::env::split_paths(HOST_PATH).any(|d| sh.parent() == Some(d.as_path())),
            "{}",
            sh.display()
        );
        assert_eq!(find("imgbuild-no-such-tool"), None);
        let e = SandboxError::NoTool {
            tool: "chroot",
            package: "coreutils",
        }
        .to_string();
        assert!(
            e.contains("chroot") && e.contains(HOST_PATH) && e.contains("coreutils"),
            "{e}"
        );
    }
}
