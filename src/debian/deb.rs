//! Reading a binary package (`.deb`, deb(5)): its control files, its
//! data.tar as a decompressed stream, and the file list dpkg would record.
//!
//! A `.deb` is an `ar` archive whose members are, in this order,
//! `debian-binary` (`2.0\n`), `control.tar[.gz|.xz|.zst]` and
//! `data.tar[.gz|.xz|.zst|.lzma|.bz2]`. Members are streamed from the file
//! at their offset, never loaded whole: a data.tar can be hundreds of MB.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER_LEN: u64 = 60;
/// debian-binary is a few bytes; a cap keeps a hostile size from being read.
const DEBIAN_BINARY_MAX: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a .deb: not an ar archive (no `!<arch>` magic)", path.display())]
    NotAr { path: PathBuf },
    #[error("{}: bad ar member header at byte {offset}: {why}", path.display())]
    BadHeader {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error(
        "{}: truncated: {what} needs {size} bytes at byte {offset}, but the file has only {file_len}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("{}: debian-binary says {found:?}: only format 2.x is supported", path.display())]
    BadVersion { path: PathBuf, found: String },
    #[error("{}: not a .deb: no `{member}` member", path.display())]
    MissingMember { path: PathBuf, member: &'static str },
    #[error("{}: not a .deb: member `{found}` where `{expected}` should be", path.display())]
    UnexpectedMember {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{}: member `{member}`: unsupported compression{}", path.display(), note.map(|n| format!(" ({n})")).unwrap_or_default())]
    UnsupportedCompression {
        path: PathBuf,
        member: String,
        note: Option<&'static str>,
    },
    #[error("{}: reading `{member}`: {source}", path.display())]
    Read {
        path: PathBuf,
        member: String,
        source: io::Error,
    },
    #[error("{}: `{member}`: {why}", path.display())]
    BadControl {
        path: PathBuf,
        member: String,
        why: String,
    },
}

/// How a tar member is compressed, from its name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    /// The legacy `.lzma` (LZMA-alone) format dpkg still reads.
    Lzma,
    Zstd,
}

/// An ar member: where its data lies in the file.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    offset: u64,
    size: u64,
    compression: Compression,
}

/// An opened, validated `.deb`: the ar structure was checked, the tar
/// members are read only when asked for.
#[derive(Debug, Clone)]
pub struct Deb {
    path: PathBuf,
    control: Member,
    data: Member,
}

/// What control.tar holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFiles {
    /// The `control` file: the package's deb822 stanza.
    pub control: String,
    /// Every other regular file at control.tar's top (`preinst`, `postinst`,
    /// `prerm`, `postrm`, `conffiles`, `triggers`, `md5sums`, `shlibs`,
    /// `symbols`, `templates`, `config`, ...), keyed by name. dpkg keeps all
    /// of them in /var/lib/dpkg/info, so none is filtered out here.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// The control files of the `.deb` at `path`.
pub fn control(path: impl AsRef<Path>) -> Result<ControlFiles, DebError> {
    Deb::open(path)?.control()
}

/// The decompressed data.tar of the `.deb` at `path`, streamed from the file.
pub fn data_tar(path: impl AsRef<Path>) -> Result<Box<dyn Read + Send>, DebError> {
    Deb::open(path)?.data_tar()
}

/// The paths of data.tar as dpkg lists them in `info/PKG.list`.
pub fn file_list(path: impl AsRef<Path>) -> Result<Vec<String>, DebError> {
    Deb::open(path)?.file_list()
}

impl Deb {
    /// Opens and validates the ar structure: magic, `debian-binary` 2.x,
    /// member order (deb(5): members named `_*` between them are skipped,
    /// anything after data.tar is ignored) and that both tar members are
    /// whole and in a compression this reader knows.
    pub fn open(path: impl AsRef<Path>) -> Result<Deb, DebError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| DebError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut r = BufReader::new(file);

        let mut magic = [0u8; 8];
        if read_full(&mut r, &mut magic).map_err(io_err)? < magic.len() || &magic != AR_MAGIC {
            return Err(DebError::NotAr { path });
        }
        let mut ar = ArReader {
            path: &path,
            r,
            next: AR_MAGIC.len() as u64,
            file_len,
        };

        let first = ar.next_member()?.ok_or_else(|| DebError::MissingMember {
            path: path.clone(),
            member: "debian-binary",
        })?;
        if first.name != "debian-binary" {
            return Err(DebError::UnexpectedMember {
                path,
                found: first.name,
                expected: "debian-binary",
            });
        }
        if first.size > DEBIAN_BINARY_MAX {
            return Err(DebError::BadVersion {
                path,
                found: format!("({} bytes)", first.size),
            });
        }
        let version = ar.read_member(&first)?;
        let version = String::from_utf8_lossy(&version);
        let line = version.lines().next().unwrap_or("");
        // Later minor versions may add lines; dpkg reads only the first.
        let ok = line
            .strip_prefix("2.")
            .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Err(DebError::BadVersion {
                path,
                found: version.into_owned(),
            });
        }

        let control = ar.tar_member("control.tar")?;
        let data = ar.tar_member("data.tar")?;
        Ok(Deb {
            path,
            control,
            data,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The control member's name: `control.tar.xz`.
    pub fn control_member(&self) -> &str {
        &self.control.name
    }

    /// The data member's name: `data.tar.xz`.
    pub fn data_member(&self) -> &str {
        &self.data.name
    }

    pub fn data_compression(&self) -> Compression {
        self.data.compression
    }

    /// The decompressed control.tar. Read errors name the `.deb` and member.
    pub fn control_tar(&self) -> Result<Box<dyn Read + Send>, DebError> {
        self.stream(&self.control, true)
    }

    /// The decompressed data.tar, streamed from the file. Read errors
    /// (corrupt compression, the file shrinking under us) name the `.deb`
    /// and member.
    pub fn data_tar(&self) -> Result<Box<dyn Read + Send>, DebError> {
        self.stream(&self.data, true)
    }

    /// The control files (see [`ControlFiles`]).
    pub fn control(&self) -> Result<ControlFiles, DebError> {
        let m = &self.control;
        let read_err = |source| DebError::Read {
            path: self.path.clone(),
            member: m.name.clone(),
            source,
        };
        let mut archive = tar::Archive::new(self.stream(m, false)?);
        let mut control = None;
        let mut files = BTreeMap::new();
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw);
            let name = name.trim_start_matches("./");
            // Only top-level files are control files.
            if name.is_empty() || name.contains('/') {
                continue;
            }
            let name = name.to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read_err)?;
            if name == "control" {
                control = Some(String::from_utf8(bytes).map_err(|_| DebError::BadControl {
                    path: self.path.clone(),
                    member: m.name.clone(),
                    why: "its `control` file is not UTF-8".into(),
                })?);
            } else {
                files.insert(name, bytes);
            }
        }
        let control = control.ok_or_else(|| DebError::BadControl {
            path: self.path.clone(),
            member: m.name.clone(),
            why: "has no `control` file".into(),
        })?;
        Ok(ControlFiles { control, files })
    }

    /// data.tar's paths as dpkg writes them to `info/PKG.list`: `/.` for
    /// the root, `/usr/bin` for `./usr/bin/`, in archive order.
    pub fn file_list(&self) -> Result<Vec<String>, DebError> {
        let m = &self.data;
        let read_err = |source| DebError::Read {
            path: self.path.clone(),
            member: m.name.clone(),
            source,
        };
        let mut archive = tar::Archive::new(self.stream(m, false)?);
        let mut list = Vec::new();
        for entry in archive.entries().map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let raw = entry.path_bytes();
            let name = std::str::from_utf8(&raw).map_err(|_| {
                read_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "path {:?} is not UTF-8",
                        String::from_utf8_lossy(&raw).into_owned()
                    ),
                ))
            })?;
            list.push(dpkg_list_path(name));
        }
        Ok(list)
    }

    /// A member's decompressed stream; `context` prefixes read errors with
    /// the path and member for callers that get a bare `io::Error`.
    fn stream(&self, m: &Member, context: bool) -> Result<Box<dyn Read + Send>, DebError> {
        let io_err = |source| DebError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file =
            BufReader::with_capacity(128 * 1024, File::open(&self.path).map_err(io_err)?);
        file.seek(SeekFrom::Start(m.offset)).map_err(io_err)?;
        let raw = Exact {
            inner: file.take(m.size),
        };
        let decoder_err = |e: liblzma::stream::Error| DebError::Read {
            path: self.path.clone(),
            member: m.name.clone(),
            source: io::Error::other(e),
        };
        let decoded: Box<dyn Read + Send> = match m.compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            Compression::Xz => {
                // Concatenated streams are valid .xz (parallel compressors).
                let s = liblzma::stream::Stream::new_stream_decoder(
                    u64::MAX,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(decoder_err)?;
                Box::new(liblzma::bufread::XzDecoder::new_stream(raw, s))
            }
            Compression::Lzma => {
                let s = liblzma::stream::Stream::new_lzma_decoder(u64::MAX).map_err(decoder_err)?;
                Box::new(liblzma::bufread::XzDecoder::new_stream(raw, s))
            }
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(
                |source| DebError::Read {
                    path: self.path.clone(),
                    member: m.name.clone(),
                    source,
                },
            )?),
        };
        if !context {
            return Ok(decoded);
        }
        Ok(Box::new(Context {
            inner: decoded,
            prefix: format!("{}: reading `{}`", self.path.display(), m.name),
        }))
    }
}

/// A tar entry name as dpkg lists it: `./` → `/.`, `./usr/bin/` → `/usr/bin`.
fn dpkg_list_path(name: &str) -> String {
    let mut s = name;
    while let Some(rest) = s.strip_prefix("./").or_else(|| s.strip_prefix('/')) {
        s = rest;
    }
    let s = s.trim_end_matches('/');
    if s.is_empty() || s == "." {
        "/.".to_string()
    } else {
        format!("/{s}")
    }
}

/// Sequential reader of ar member headers.
struct ArReader<'a> {
    path: &'a Path,
    r: BufReader<File>,
    /// Offset of the next member header.
    next: u64,
    file_len: u64,
}

impl ArReader<'_> {
    fn io_err(&self, source: io::Error) -> DebError {
        DebError::Io {
            path: self.path.to_path_buf(),
            source,
        }
    }

    /// The next member, `None` at the archive's end; checks that its data
    /// lies wholly within the file.
    fn next_member(&mut self) -> Result<Option<Member>, DebError> {
        let at = self.next;
        if at >= self.file_len {
            return Ok(None);
        }
        if at + HEADER_LEN > self.file_len {
            return Err(DebError::Truncated {
                path: self.path.to_path_buf(),
                what: "an ar member header".into(),
                offset: at,
                size: HEADER_LEN,
                file_len: self.file_len,
            });
        }
        self.r
            .seek(SeekFrom::Start(at))
            .map_err(|e| self.io_err(e))?;
        let mut h = [0u8; HEADER_LEN as usize];
        self.r.read_exact(&mut h).map_err(|e| self.io_err(e))?;
        let bad = |why: String| DebError::BadHeader {
            path: self.path.to_path_buf(),
            offset: at,
            why,
        };
        if &h[58..60] != b"`\n" {
            return Err(bad("no \"`\\n\" terminator".into()));
        }
        let name = std::str::from_utf8(&h[0..16])
            .map_err(|_| bad("name is not ASCII".into()))?
            .trim_end_matches(' ');
        // GNU ar ends names with `/`; deb(5) allows it.
        let name = name.strip_suffix('/').unwrap_or(name).to_string();
        let size_field = std::str::from_utf8(&h[48..58])
            .unwrap_or("")
            .trim_end_matches(' ');
        let size: u64 = size_field
            .parse()
            .map_err(|_| bad(format!("size {size_field:?} is not a number")))?;
        let offset = at + HEADER_LEN;
        if offset + size > self.file_len {
            return Err(DebError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("member `{name}`"),
                offset,
                size,
                file_len: self.file_len,
            });
        }
        // Member data is padded to an even length.
        self.next = offset + size + (size & 1);
        Ok(Some(Member {
            name,
            offset,
            size,
            compression: Compression::None,
        }))
    }

    fn read_member(&mut self, m: &Member) -> Result<Vec<u8>, DebError> {
        self.r
            .seek(SeekFrom::Start(m.offset))
            .map_err(|e| self.io_err(e))?;
        let mut buf = vec![0; m.size as usize];
        self.r.read_exact(&mut buf).map_err(|e| self.io_err(e))?;
        Ok(buf)
    }

    /// The next member not named `_*`, which must be `stem` with a known
    /// compression suffix.
    fn tar_member(&mut self, stem: &'static str) -> Result<Member, DebError> {
        let mut m = loop {
            let m = self.next_member()?.ok_or_else(|| DebError::MissingMember {
                path: self.path.to_path_buf(),
                member: stem,
            })?;
            if !m.name.starts_with('_') {
                break m;
            }
        };
        let Some(suffix) = m.name.strip_prefix(stem) else {
            return Err(DebError::UnexpectedMember {
                path: self.path.to_path_buf(),
                found: m.name,
                expected: stem,
            });
        };
        let unsupported = |note| DebError::UnsupportedCompression {
            path: self.path.to_path_buf(),
            member: m.name.clone(),
            note,
        };
        m.compression = match suffix {
            "" => Compression::None,
            ".gz" => Compression::Gzip,
            ".xz" => Compression::Xz,
            ".lzma" => Compression::Lzma,
            ".zst" => Compression::Zstd,
            ".bz2" => return Err(unsupported(Some("bzip2 is not supported"))),
            s if s.starts_with('.') => return Err(unsupported(None)),
            _ => {
                return Err(DebError::UnexpectedMember {
                    path: self.path.to_path_buf(),
                    found: m.name,
                    expected: stem,
                });
            }
        };
        Ok(m)
    }
}

/// Reads as much as `buf` holds or up to EOF; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A member's bytes: a `Take` that fails, rather than ends quietly, when
/// the file ends before the member does (it shrank after `open`).
struct Exact {
    inner: io::Take<BufReader<File>>,
}

impl Exact {
    fn check(&mut self) -> io::Result<()> {
        if self.inner.fill_buf()?.is_empty() && self.inner.limit() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends {} bytes before the member does",
                    self.inner.limit()
                ),
            ));
        }
        Ok(())
    }
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(buf.len());
            buf[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Exact {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
    }
}

/// Prefixes read errors with which `.deb` and member they came from.
struct Context {
    inner: Box<dyn Read + Send>,
    prefix: String,
}

impl Read for Context {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.prefix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::process::Command;

    const CONTROL: &str = "Package: imgbuild-test\n\
Version: 1.0-1\n\
Architecture: all\n\
Maintainer: Test <test@example.org>\n\
Description: a package for imgbuild's .deb reader\n \
 It has a script, a conffile, a symlink and a long path.\n";
    const POSTINST: &[u8] = b"#!/bin/sh\nset -e\necho configured\n";
    const LONG_DIR: &str = "usr/share/imgbuild-test/a-directory-name-long-enough-that/the-whole-path-no-longer-fits/in-the-hundred-bytes-of-a-ustar-name";

    fn mode(p: &Path, m: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    fn write(root: &Path, rel: &str, bytes: &[u8], m: u32) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        mode(&p, m);
    }

    /// Builds a small package with the real dpkg-deb, `-Z{compression}`.
    fn build_deb(dir: &Path, compression: &str) -> PathBuf {
        let root = dir.join(format!("tree-{compression}"));
        write(&root, "DEBIAN/control", CONTROL.as_bytes(), 0o644);
        write(&root, "DEBIAN/postinst", POSTINST, 0o755);
        write(
            &root,
            "DEBIAN/conffiles",
            b"/etc/imgbuild-test.conf\n",
            0o644,
        );
        write(&root, "etc/imgbuild-test.conf", b"key = value\n", 0o644);
        write(&root, "usr/bin/foo", b"#!/bin/sh\necho foo\n", 0o755);
        symlink("foo", root.join("usr/bin/bar")).unwrap();
        write(
            &root,
            "usr/share/doc/imgbuild-test/README",
            b"read me\n",
            0o644,
        );
        write(&root, &format!("{LONG_DIR}/file"), b"deep\n", 0o644);
        fs::create_dir_all(root.join("var/lib/imgbuild-test")).unwrap();
        mode(&root.join("var/lib/imgbuild-test"), 0o700);
        // dpkg-deb insists on sane directory modes whatever the umask.
        for d in [
            "",
            "DEBIAN",
            "etc",
            "usr",
            "usr/bin",
            "usr/share",
            "var",
            "var/lib",
        ] {
            mode(&root.join(d), 0o755);
        }
        let out = dir.join(format!("imgbuild-test-{compression}.deb"));
        let st = Command::new("dpkg-deb")
            .arg("--build")
            .arg("--root-owner-group")
            .arg(format!("-Z{compression}"))
            .arg(&root)
            .arg(&out)
            .output()
            .expect("dpkg-deb is needed for these tests");
        assert!(
            st.status.success(),
            "dpkg-deb --build: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        out
    }

    /// `dpkg-deb -c` output turned into .list form (no names with spaces here).
    fn dpkg_contents(deb: &Path) -> Vec<String> {
        let out = Command::new("dpkg-deb")
            .arg("-c")
            .arg(deb)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let name = l.split_whitespace().nth(5).unwrap();
                dpkg_list_path(name)
            })
            .collect()
    }

    #[test]
    fn list_paths_as_dpkg_does() {
        assert_eq!(dpkg_list_path("./"), "/.");
        assert_eq!(dpkg_list_path("."), "/.");
        assert_eq!(dpkg_list_path("./usr/bin/"), "/usr/bin");
        assert_eq!(dpkg_list_path("./usr/bin/foo"), "/usr/bin/foo");
        assert_eq!(dpkg_list_path("usr/lib/"), "/usr/lib");
    }

    #[test]
    fn reads_debs_dpkg_deb_builds() {
        let dir = tempfile::tempdir().unwrap();
        for (z, member) in [
            ("xz", "data.tar.xz"),
            ("zstd", "data.tar.zst"),
            ("gzip", "data.tar.gz"),
            ("none", "data.tar"),
        ] {
            let path = build_deb(dir.path(), z);
            let deb = Deb::open(&path).unwrap();
            assert_eq!(deb.data_member(), member, "-Z{z}");

            let c = control(&path).unwrap();
            let shown = Command::new("dpkg-deb")
                .arg("--info")
                .arg(&path)
                .arg("control")
                .output()
                .unwrap();
            assert_eq!(c.control.as_bytes(), &shown.stdout[..], "-Z{z}");
            assert_eq!(c.control, CONTROL);
            let names: Vec<&str> = c.files.keys().map(String::as_str).collect();
            assert_eq!(names, ["conffiles", "postinst"], "-Z{z}");
            assert_eq!(c.files["postinst"], POSTINST);
            assert_eq!(c.files["conffiles"], b"/etc/imgbuild-test.conf\n");

            let mut seen = BTreeMap::new();
            let mut archive = tar::Archive::new(data_tar(&path).unwrap());
            for e in archive.entries().unwrap() {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let h = e.header();
                let kind = h.entry_type();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                assert_eq!(h.uid().unwrap(), 0, "{name}");
                let m = h.mode().unwrap() & 0o7777;
                let mut body = String::new();
                if kind.is_file() {
                    e.read_to_string(&mut body).unwrap();
                }
                seen.insert(name, (kind, m, link, body));
            }
            let foo = &seen["./usr/bin/foo"];
            assert!(foo.0.is_file());
            assert_eq!((foo.1, foo.3.as_str()), (0o755, "#!/bin/sh\necho foo\n"));
            let bar = &seen["./usr/bin/bar"];
            assert!(bar.0.is_symlink());
            assert_eq!(bar.2.as_deref(), Some("foo"));
            assert_eq!(seen["./usr/share/doc/imgbuild-test/README"].1, 0o644);
            let var = &seen["./var/lib/imgbuild-test/"];
            assert!(var.0.is_dir());
            assert_eq!(var.1, 0o700);
            assert_eq!(seen[&format!("./{LONG_DIR}/file")].3, "deep\n");

            let list = file_list(&path).unwrap();
            assert_eq!(list, dpkg_contents(&path), "-Z{z}");
            assert_eq!(list[0], "/.");
            assert!(list.contains(&"/usr/bin/bar".to_string()));
            assert!(list.contains(&format!("/{LONG_DIR}")));
        }
    }

    #[test]
    fn truncated_and_non_ar_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = build_deb(dir.path(), "xz");
        let bytes = fs::read(&good).unwrap();

        let cut = dir.path().join("cut.deb");
        fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let e = Deb::open(&cut).unwrap_err();
        assert!(
            matches!(&e, DebError::Truncated { what, .. } if what == "member `data.tar.xz`"),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("cut.deb") && msg.contains("truncated"),
            "{msg}"
        );

        // Cut inside the second member's header.
        fs::write(&cut, &bytes[..8 + 60 + 4 + 30]).unwrap();
        let e = Deb::open(&cut).unwrap_err();
        assert!(matches!(e, DebError::Truncated { .. }), "{e}");

        // The file shrinks after open: the stream fails, naming the file.
        fs::copy(&good, &cut).unwrap();
        let deb = Deb::open(&cut).unwrap();
        File::options()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(bytes.len() as u64 - 100)
            .unwrap();
        let mut sink = Vec::new();
        let e = deb.data_tar().unwrap().read_to_end(&mut sink).unwrap_err();
        assert!(e.to_string().contains("cut.deb"), "{e}");
        assert!(matches!(deb.file_list(), Err(DebError::Read { .. })));

        let text = dir.path().join("text.deb");
        fs::write(&text, "hello, not an archive\n").unwrap();
        let e = control(&text).unwrap_err();
        assert!(matches!(e, DebError::NotAr { .. }), "{e}");
        assert!(e.to_string().contains("text.deb: not a .deb"), "{e}");
        fs::write(&text, "").unwrap();
        assert!(matches!(Deb::open(&text), Err(DebError::NotAr { .. })));
        assert!(matches!(
            Deb::open(dir.path().join("absent.deb")),
            Err(DebError::Io { .. })
        ));
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *bytes).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// An ar archive of `members`, names written as given.
    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            out.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn member_names_order_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let control_tar = tar_of(&[("./control", b"Package: x\n"), ("./md5sums", b"")]);
        let data_tar = tar_of(&[("./etc/x", b"odd\n"), ("./etc/y", b"y")]);
        let p = dir.path().join("t.deb");
        let open = |members: &[(&str, &[u8])]| {
            fs::write(&p, ar(members)).unwrap();
            Deb::open(&p)
        };

        // GNU-style `name/`, `_` members skipped, trailing members ignored.
        let deb = open(&[
            ("debian-binary/", b"2.0\n"),
            ("_sig/", b"x"),
            ("control.tar/", &control_tar),
            ("data.tar/", &data_tar),
            ("extra", b"ignored"),
        ])
        .unwrap();
        assert_eq!(deb.control().unwrap().control, "Package: x\n");
        assert_eq!(deb.file_list().unwrap(), ["/etc/x", "/etc/y"]);

        let e = open(&[
            ("debian-binary", b"3.0\n"),
            ("control.tar", &control_tar),
            ("data.tar", &data_tar),
        ])
        .unwrap_err();
        assert!(matches!(e, DebError::BadVersion { .. }), "{e}");
        assert!(e.to_string().contains("\"3.0\\n\""), "{e}");

        let e = open(&[("debian-binary", b"2.0\n"), ("control.tar", &control_tar)]).unwrap_err();
        assert!(
            matches!(
                e,
                DebError::MissingMember {
                    member: "data.tar",
                    ..
                }
            ),
            "{e}"
        );

        let e = open(&[
            ("debian-binary", b"2.0\n"),
            ("data.tar", &data_tar),
            ("control.tar", &control_tar),
        ])
        .unwrap_err();
        assert!(
            matches!(&e, DebError::UnexpectedMember { found, expected: "control.tar", .. } if found == "data.tar"),
            "{e}"
        );

        let e = open(&[("control.tar", &control_tar)]).unwrap_err();
        assert!(
            matches!(
                e,
                DebError::UnexpectedMember {
                    expected: "debian-binary",
                    ..
                }
            ),
            "{e}"
        );

        let e = open(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control_tar),
            ("data.tar.lz4", b"x"),
        ])
        .unwrap_err();
        assert!(matches!(e, DebError::UnsupportedCompression { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("`data.tar.lz4`: unsupported compression"),
            "{e}"
        );

        let e = open(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control_tar),
            ("data.tar.bz2", b"x"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("bzip2"), "{e}");

        let no_control = tar_of(&[("./postinst", b"#!/bin/sh\n")]);
        let e = open(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &no_control),
            ("data.tar", &data_tar),
        ])
        .unwrap()
        .control()
        .unwrap_err();
        assert!(e.to_string().contains("has no `control` file"), "{e}");
    }

    /// A real Debian package, fetched with apt-get.
    #[test]
    fn reads_a_real_debian_package() {
        if Command::new("apt-get").arg("--version").output().is_err() {
            // CI's hosts are Debian: there, the real .deb must be read.
            assert!(
                std::env::var_os("CI").is_none(),
                "apt-get is missing on this CI host; the real .deb check needs it"
            );
            println!("note: apt-get is missing; skipping the real .deb check");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("apt-get")
            .args(["download", "hostname"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apt-get download hostname: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("apt-get download left no .deb");

        let deb = Deb::open(&path).unwrap();
        let c = deb.control().unwrap();
        assert!(
            c.control.starts_with("Package: hostname\n"),
            "{}",
            c.control
        );
        assert!(c.files.contains_key("md5sums"));
        let version = c
            .control
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap()
            .to_string();

        let list = deb.file_list().unwrap();
        assert_eq!(list, dpkg_contents(&path));
        assert!(list.iter().any(|p| p.ends_with("bin/hostname")), "{list:?}");
        // Every file md5sums names is in data.tar.
        let listed: BTreeSet<&str> = list.iter().map(String::as_str).collect();
        for line in String::from_utf8_lossy(&c.files["md5sums"]).lines() {
            let file = line.split_once("  ").unwrap().1;
            assert!(listed.contains(format!("/{file}").as_str()), "{file}");
        }
        // Where this same version is installed, dpkg's own list agrees.
        let installed = Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "hostname"])
            .output();
        if let Ok(q) = installed
            && q.status.success()
            && q.stdout == version.as_bytes()
            && let Ok(dpkg_list) = fs::read_to_string("/var/lib/dpkg/info/hostname.list")
        {
            assert_eq!(list, dpkg_list.lines().collect::<Vec<_>>());
        }
    }

    /// `.deb`s come from mirrors and the cache: no bytes make the reader
    /// panic; each opens and reads or gives its typed error.
    mod props {
        use super::*;
        use crate::mutate;
        use proptest::prelude::*;
        use std::io::Write as _;

        fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            for (name, bytes, mode) in files {
                let mut h = tar::Header::new_gnu();
                if name.ends_with('/') {
                    h.set_entry_type(tar::EntryType::Directory);
                }
                h.set_size(bytes.len() as u64);
                h.set_mode(*mode);
                h.set_mtime(1_700_000_000);
                b.append_data(&mut h, name, *bytes).unwrap();
            }
            b.into_inner().unwrap()
        }

        fn ar_member(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
            write!(
                out,
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`",
                0,
                0,
                0,
                100644,
                bytes.len()
            )
            .unwrap();
            out.push(b'\n');
            out.extend_from_slice(bytes);
            if bytes.len() % 2 == 1 {
                out.push(b'\n');
            }
        }

        fn gzip(bytes: &[u8]) -> Vec<u8> {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        }

        /// A small valid `.deb`, its tars compressed as `suffix` says.
        fn sample_as(suffix: &str) -> Vec<u8> {
            let control = tar_of(&[
                ("./", b"", 0o755),
                ("./control", CONTROL.as_bytes(), 0o644),
                ("./postinst", POSTINST, 0o755),
            ]);
            let data = tar_of(&[
                ("./", b"", 0o755),
                ("./usr/", b"", 0o755),
                ("./usr/bin/", b"", 0o755),
                ("./usr/bin/foo", b"#!/bin/sh\necho foo\n", 0o755),
            ]);
            let compress = |b: &[u8]| match suffix {
                ".gz" => gzip(b),
                ".xz" => {
                    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
                    e.write_all(b).unwrap();
                    e.finish().unwrap()
                }
                ".zst" => zstd::encode_all(b, 1).unwrap(),
                _ => b.to_vec(),
            };
            let (control, data) = (compress(&control), compress(&data));
            let mut out = AR_MAGIC.to_vec();
            ar_member(&mut out, "debian-binary", b"2.0\n");
            ar_member(&mut out, &format!("control.tar{suffix}"), &control);
            ar_member(&mut out, &format!("data.tar{suffix}"), &data);
            out
        }

        fn sample(gz: bool) -> Vec<u8> {
            sample_as(if gz { ".gz" } else { "" })
        }

        /// Everything the build reads of a `.deb`.
        fn read_all(bytes: &[u8]) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fuzz.deb");
            fs::write(&path, bytes).unwrap();
            let Ok(deb) = Deb::open(&path).map_err(|e| e.to_string()) else {
                return;
            };
            let _ = (
                deb.control_member(),
                deb.data_member(),
                deb.data_compression(),
            );
            if let Ok(c) = deb.control() {
                let _ = crate::debian::control::parse_control(&c.control);
            }
            let _ = deb.file_list().map_err(|e| e.to_string());
            for mut r in [deb.control_tar(), deb.data_tar()].into_iter().flatten() {
                let _ = io::copy(&mut r, &mut io::sink());
            }
        }

        #[test]
        fn the_samples_are_valid() {
            for suffix in ["", ".gz", ".xz", ".zst"] {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("sample.deb");
                fs::write(&path, sample_as(suffix)).unwrap();
                let deb = Deb::open(&path).unwrap();
                assert_eq!(deb.control().unwrap().control, CONTROL);
                assert_eq!(
                    deb.file_list().unwrap(),
                    ["/.", "/usr", "/usr/bin", "/usr/bin/foo"]
                );
            }
        }

        proptest! {
            #![proptest_config(mutate::config())]

            #[test]
            fn arbitrary_bytes(bytes in mutate::bytes(512)) {
                read_all(&bytes);
                let mut ar = AR_MAGIC.to_vec();
                ar.extend(&bytes);
                read_all(&ar);
            }

            #[test]
            fn mutated_plain(bytes in mutate::mutated(sample(false))) {
                read_all(&bytes);
            }

            #[test]
            fn mutated_gzip(bytes in mutate::mutated(sample(true))) {
                read_all(&bytes);
            }

            #[test]
            fn mutated_xz(bytes in mutate::mutated(sample_as(".xz"))) {
                read_all(&bytes);
            }

            #[test]
            fn mutated_zstd(bytes in mutate::mutated(sample_as(".zst"))) {
                read_all(&bytes);
            }
        }
    }
}
