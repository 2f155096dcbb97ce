//! `debian:` images: the packages come from the lock (or are resolved
//! now), are downloaded into the store's cache, and are installed by the
//! target's own dpkg inside the sandbox; what that changed is one layer.
//!
//! A new Debian base (`variant: minbase`) is bootstrapped as debootstrap
//! and mmdebstrap do: merged-/usr links, every Essential package's files
//! extracted, then dpkg (now in the tree) installs them for real with its
//! maintainer scripts, and then the rest, group by group so that a
//! Pre-Depends is configured before its dependant is unpacked.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::debian::fetch::{Archive, ArchivePackage, ParsedIndexes, Progress};
use crate::debian::lock::{Lock, LockedImage, LockedPackage};
use crate::debian::package::Package;
use crate::debian::resolve::{Index, Options as ResolveOptions, Request, Universe, Variant};
use crate::debian::sources::{Mirror, default_mirror, read_apt_sources};
use crate::oci::image::ImageRecord;
use crate::spec::{DebianSpec, Image};

use super::{BuildError, Session};

/// What a Debian layer's snapshot leaves out, besides a run step's
/// residue: logs, caches and backups that dpkg, apt and debconf write on
/// every run. (`etc/machine-id` is kept, emptied, as systemd wants it.)
pub const DEBIAN_RESIDUE: &[&str] = &[
    "run/*",
    "tmp/*",
    "var/cache/apt/**",
    "var/cache/ldconfig/aux-cache",
    "var/lib/apt/lists/*",
    "var/log/*.log",
    "var/log/apt/*",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "etc/hostname",
    "etc/resolv.conf",
    "**/__pycache__",
];

/// The archive's indexes, read once per mirror, suite and architecture in
/// a build.
#[derive(Default)]
pub struct Archives {
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
}

pub struct Loaded {
    pub archive: Archive,
    /// The newest Release date of the suites read, and the first's codename.
    pub date: i64,
    pub codename: String,
    /// Every package of the suites' indexes, and (same index) the
    /// repository each came from: one copy, as the resolver wants them.
    pub packages: Vec<Package>,
    pub bases: Vec<Arc<str>>,
    /// The resolver's index of `packages` by architecture, built once for
    /// every image of the session.
    indexes: Mutex<HashMap<String, Arc<Index>>>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // ~60k packages are ~1M small allocations: freeing them takes
        // ~0.1 s, which a command would spend just before it exits. A
        // thread of its own does it (and is cut short by the exit).
        let packages = std::mem::take(&mut self.packages);
        let indexes = std::mem::take(&mut self.indexes);
        let _ = std::thread::Builder::new()
            .name("free-packages".into())
            .spawn(move || drop((packages, indexes)));
    }
}

impl Loaded {
    /// The resolver's index of the packages for `arch`, built on first use.
    pub fn index(&self, arch: &str) -> Arc<Index> {
        let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        indexes
            .entry(arch.to_string())
            .or_insert_with(|| Arc::new(Index::new(&self.packages, arch)))
            .clone()
    }
}

/// Why a Debian layer could not be resolved, fetched or installed.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("starting the downloader: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Fetch(#[from] crate::debian::fetch::FetchError),
    #[error(transparent)]
    Sources(#[from] crate::debian::sources::SourcesError),
    #[error(transparent)]
    Lock(#[from] crate::debian::lock::LockError),
    #[error("--locked, and there is no {}; run `imgbuild lock` and commit it", path.display())]
    NoLock { path: PathBuf },
    /// A package request in `packages:` that does not parse.
    #[error(transparent)]
    Request(crate::debian::resolve::ResolveError),
    #[error("debian: {0}")]
    Resolve(crate::debian::resolve::ResolveError),
    #[error("{}: {source}", path.display())]
    Control {
        path: PathBuf,
        source: crate::debian::control::ControlError,
    },
    #[error(transparent)]
    Deb(#[from] crate::debian::deb::DebError),
    #[error(transparent)]
    Unpack(#[from] crate::layer::unpack::UnpackError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("essential package {name} missing")]
    EssentialMissing { name: String },
    #[error(transparent)]
    Run(#[from] super::RunError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(
        "what it installs depends on the packages in `{parent}`: build `{parent}` first, then lock"
    )]
    ParentNotBuilt { parent: String },
    #[error(
        "--locked, and {} was written over other packages below this image than `{parent}` has now (a package's version changed); run `imgbuild lock` and commit it",
        path.display()
    )]
    LockedOverOtherPackages { path: PathBuf, parent: String },
}

fn err(image: &str, source: impl Into<DebianError>) -> BuildError {
    BuildError::Debian {
        image: image.to_string(),
        source: Box::new(source.into()),
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DebianError + '_ {
    move |source| DebianError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The build platform's Debian architecture name.
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "x86" => "i386",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A small runtime for the archive's async client, on this thread (the
/// build runs on plain threads).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, DebianError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DebianError::Runtime)?;
    Ok(rt.block_on(f))
}

impl Archives {
    /// The verified indexes for `d`, read now or earlier in this build.
    pub fn load(&self, cache: &Path, d: &DebianSpec) -> Result<Arc<Loaded>, DebianError> {
        let arch = d
            .architecture
            .clone()
            .unwrap_or_else(|| native_arch().into());
        let key = format!("{:?} {} {arch}", d.mirror, d.suite);
        if let Some(l) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(l.clone());
        }
        let mirror = mirror_for(d)?;
        let keyrings = keyrings_for(d);
        let mut archive = Archive::new(&mirror, &d.suite, &keyrings, cache)?;
        archive.parallel = 8;
        let indexes: ParsedIndexes = block_on(archive.parsed_indexes(&arch, now()))??;
        let date = indexes.date();
        let codename = indexes
            .releases
            .first()
            .map(|(_, r)| r.codename.clone())
            .unwrap_or_default();
        let (packages, bases) = indexes.into_lists();
        let loaded = Arc::new(Loaded {
            archive,
            date,
            codename,
            packages,
            bases,
            indexes: Mutex::default(),
        });
        // The resolver wants the index next: it is built (~50 ms) while
        // the caller gets the parent image's packages ready.
        let early = loaded.clone();
        let _ = std::thread::Builder::new()
            .name("index-packages".into())
            .spawn(move || early.index(&arch));
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, loaded.clone());
        Ok(loaded)
    }
}

/// `mirror:`, else the host's apt sources, else IMGBUILD_DEBIAN_MIRROR.
pub fn mirror_for(d: &DebianSpec) -> Result<Mirror, DebianError> {
    if let Some(m) = &d.mirror {
        return Ok(Mirror::from_url(m)?);
    }
    let sources = read_apt_sources(Path::new("/etc/apt")).unwrap_or_default();
    let env = std::env::var(crate::env::IMGBUILD_DEBIAN_MIRROR).ok();
    Ok(default_mirror(&sources, env.as_deref())?)
}

/// `keyring:`, else the host's debian-archive-keyring.
pub fn keyrings_for(d: &DebianSpec) -> Vec<PathBuf> {
    match &d.keyring {
        Some(k) => vec![k.clone()],
        None => vec![PathBuf::from(
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        )],
    }
}

/// Resolves what `d` adds over `installed` against the archive.
pub fn resolve(
    image: &str,
    d: &DebianSpec,
    loaded: &Loaded,
    installed: &[Package],
) -> Result<LockedImage, BuildError> {
    let arch = d
        .architecture
        .clone()
        .unwrap_or_else(|| native_arch().into());
    let requests: Vec<Request> = d
        .packages
        .iter()
        .map(|p| p.parse::<Request>())
        .collect::<Result<_, _>>()
        .map_err(|e| err(image, DebianError::Request(e)))?;
    let options = ResolveOptions {
        recommends: d.recommends,
        variant: d.minbase.then_some(Variant::Minbase),
        architecture: arch.clone(),
    };
    let index = loaded.index(&arch);
    let universe = Universe::with_index(&loaded.packages, &index);
    let chosen = universe
        .resolve_positions(installed, &requests, &options)
        .map_err(|e| err(image, DebianError::Resolve(e)))?;
    // A position gives the repository too (several suites are merged).
    let packages = chosen
        .into_iter()
        .map(|i| {
            let p = &loaded.packages[i];
            LockedPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                path: p.filename.clone(),
                base: loaded.bases[i].to_string(),
                sha256: p.sha256.clone(),
                size: p.size,
            }
        })
        .collect();
    let date = loaded.date;
    let codename = loaded.codename.clone();
    Ok(LockedImage {
        inputs: String::new(),
        suite: d.suite.clone(),
        codename,
        architecture: arch,
        release_date: crate::debian::release::format_date(date),
        epoch: date,
        packages,
    })
}

/// The packages a dpkg status file lists as installed.
pub fn installed_in(root: &Path) -> Result<Vec<Package>, DebianError> {
    let path = root.join("var/lib/dpkg/status");
    match std::fs::read_to_string(&path) {
        Ok(text) => crate::debian::control::parse_status(&text)
            .map_err(|source| DebianError::Control { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(DebianError::Io { path, source }),
    }
}

/// A Debian layer to install: what the image asks for, as locked, over
/// which layers, and under which key.
#[derive(Clone, Copy)]
pub(super) struct Install<'i> {
    pub spec: &'i DebianSpec,
    pub index: usize,
    pub below: &'i [crate::oci::image::LayerDesc],
    pub locked: &'i LockedImage,
    pub key: &'i str,
}

/// Download progress, passed to the build's reporter.
struct Downloads<'r> {
    image: &'r str,
    reporter: &'r dyn super::Reporter,
}

impl Progress for Downloads<'_> {
    fn advanced(&self, bytes: u64) {
        self.reporter.download_progress(self.image, bytes);
    }
}

impl Session<'_> {
    /// What `image` installs: its lock entry when images.lock is current,
    /// else resolved now over `installed` (the parent's dpkg status).
    pub(super) fn debian_packages(
        &self,
        image: &Image,
        d: &DebianSpec,
        parent_root: &dyn Fn() -> Result<PathBuf, BuildError>,
    ) -> Result<LockedImage, BuildError> {
        let path = crate::debian::lock::path_for(self.spec);
        let lock = Lock::read(&path).map_err(|e| err(&image.name, e))?;
        match lock
            .as_ref()
            .map(|l| (l, l.image(&path, self.spec, &image.name)))
        {
            // Current only when made over the packages below as they are
            // now: images.yaml can be unchanged while the parent's dpkg
            // status moved (a new parent tree, a package's new version).
            Some((l, Ok(locked))) => {
                let before = self.installed_below(image, l)?;
                if before.is_some_and(|b| lock_inputs(image, d, &b) == locked.inputs) {
                    return Ok(locked.clone());
                }
                if self.opts.locked {
                    let parent = self.spec.parent_of(&image.name).unwrap_or_default();
                    return Err(err(
                        &image.name,
                        DebianError::LockedOverOtherPackages {
                            path,
                            parent: parent.to_string(),
                        },
                    ));
                }
            }
            Some((_, Err(e))) if self.opts.locked => return Err(err(&image.name, e)),
            None if self.opts.locked => {
                return Err(err(&image.name, DebianError::NoLock { path }));
            }
            _ => {}
        }
        let loaded = self
            .archives
            .load(&self.store.debian_cache_dir(), d)
            .map_err(|e| err(&image.name, e))?;
        let installed = installed_in(&parent_root()?).map_err(|e| err(&image.name, e))?;
        resolve(&image.name, d, &loaded, &installed)
    }

    /// Downloads `locked`'s packages into the cache (verified), and their
    /// paths in the same order.
    fn debian_download(
        &self,
        image: &Image,
        d: &DebianSpec,
        locked: &LockedImage,
        reporter: &dyn super::Reporter,
    ) -> Result<Vec<PathBuf>, BuildError> {
        let cache = self.store.debian_cache_dir();
        let mirror = mirror_for(d).map_err(|e| err(&image.name, e))?;
        let archive = Archive::new(&mirror, &d.suite, &keyrings_for(d), &cache)
            .map_err(|e| err(&image.name, e))?;
        let wanted: Vec<ArchivePackage> = locked
            .packages
            .iter()
            .map(|l| ArchivePackage {
                package: Package {
                    filename: l.path.clone(),
                    size: l.size,
                    sha256: l.sha256.clone(),
                    ..Package::bare(&l.name, &l.version, &l.architecture)
                },
                suite: Arc::from(locked.suite.as_str()),
                base: Arc::from(l.base.as_str()),
            })
            .collect();
        let missing: Vec<&LockedPackage> = locked
            .packages
            .iter()
            .filter(|p| !archive.deb_path(&p.sha256).exists())
            .collect();
        if !missing.is_empty() {
            let bytes = missing.iter().map(|p| p.size).sum();
            reporter.download_started(&image.name, missing.len(), bytes);
        }
        let progress = Downloads {
            image: &image.name,
            reporter,
        };
        let got = block_on(archive.download(&wanted, &progress))
            .map_err(|e| err(&image.name, e))?
            .map_err(|e| err(&image.name, e));
        if !missing.is_empty() {
            reporter.download_finished(&image.name);
        }
        got
    }

    /// Installs `install.locked` over `install.below` and writes the change
    /// as a layer.
    pub(super) fn debian_install(
        &self,
        image: &Image,
        install: &Install<'_>,
        reporter: &dyn super::Reporter,
    ) -> Result<(super::LayerRecord, super::Phases), BuildError> {
        let Install {
            spec: d,
            index,
            below,
            locked,
            key,
        } = *install;
        let name = &image.name;
        let mut phases = super::Phases::default();
        let mut clock = std::time::Instant::now();
        let mut lap = || {
            let t = clock.elapsed().as_secs_f64();
            clock = std::time::Instant::now();
            t
        };
        // Before downloading: a layer this place cannot make right is refused at once.
        let isolation = self.isolation(name)?;
        self.refuse_if_lacking(name, "Debian", isolation, reporter)?;
        let debs = self.debian_download(image, d, locked, reporter)?;
        phases.download = Some(lap());
        // Each package's own control data decides the order (and the
        // Essential set): the lock needs only what identifies the file.
        let mut pkgs = Vec::with_capacity(debs.len());
        for (deb, l) in debs.iter().zip(&locked.packages) {
            let control = crate::debian::deb::control(deb).map_err(|e| err(name, e))?;
            let mut p =
                crate::debian::control::parse_control(&control.control).map_err(|source| {
                    let path = deb.clone();
                    err(name, DebianError::Control { path, source })
                })?;
            p.filename = format!("{}.deb", l.sha256);
            pkgs.push(p);
        }
        let scratch = self.scratch(name, "debian-", below, isolation)?;
        reporter.isolation(name, isolation, scratch.is_overlay());
        // The tree of this layer's chain is wanted next when nothing else
        // of the image goes over it: by its run steps, its children, tests.
        let follow = if image.layers.is_empty() {
            self.follow(name, scratch.lower(), reporter)
        } else {
            None
        };
        // The packages, by hard links in the store (no copies), for the
        // sandbox to show at /run/imgbuild-debs.
        let shown = self.store.temp_dir("debs-")?;
        for (deb, p) in debs.iter().zip(&pkgs) {
            let to = shown.path().join(&p.filename);
            std::fs::hard_link(deb, &to)
                .or_else(|_| std::fs::copy(deb, &to).map(|_| ()))
                .map_err(|source| BuildError::Io { path: to, source })?;
        }
        if !d.debconf.is_empty() {
            let f = shown.path().join("debconf.selections");
            std::fs::write(&f, d.debconf.join("\n") + "\n")
                .map_err(|source| BuildError::Io { path: f, source })?;
        }
        let order = crate::debian::order::install_order(&pkgs);
        let essential = essential_closure(&pkgs);
        let filter = d.path_filter();
        if d.minbase {
            bootstrap(
                scratch.writable(),
                &essential,
                &debs,
                &pkgs,
                locked,
                &filter,
            )
            .map_err(|e| err(name, e))?;
        }
        scratch.ready().map_err(|e| err(name, e))?;
        phases.prepare = lap();
        let epoch = if self.opts.stamp.epoch_given {
            self.opts.stamp.epoch
        } else {
            locked.epoch
        };
        let mut script = install_script(d.minbase, &essential, &order, !d.debconf.is_empty());
        if d.own_path_rules {
            // Before the first dpkg: it reads the file from the tree, and
            // child images' installs (apt in a `run:` step too) keep it.
            script = format!(
                "set -e\nmkdir -p /etc/dpkg/dpkg.cfg.d\ncat > /{} <<'IMGBUILD_PATHS'\n{}IMGBUILD_PATHS\n{script}",
                crate::debian::paths::CONFIG_PATH,
                filter.config_file()
            );
        }
        let env: Vec<(String, String)> = [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("DEBIAN_FRONTEND", "noninteractive"),
            ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
            ("DEBCONF_NOWARNINGS", "yes"),
            ("LC_ALL", "C.UTF-8"),
            ("LANG", "C.UTF-8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("SOURCE_DATE_EPOCH".to_string(), epoch.to_string())])
        .collect();
        let mut step = scratch.step(
            &script,
            &super::run::Context {
                env,
                workdir: None,
                user: None,
            },
            true,
            &super::run::Secrets::none(),
        );
        step.binds.push(crate::sandbox::Bind {
            host: shown.path().to_path_buf(),
            name: "imgbuild-debs".into(),
        });
        let tail = super::run::Tail::default();
        let code = crate::sandbox::run(&step, isolation, &|_, line| {
            reporter.step_output(name, line);
            tail.push(line);
        })
        .map_err(|e| err(name, e))?;
        if code != 0 {
            return Err(BuildError::Step {
                image: name.clone(),
                command: "dpkg --install (the image's Debian packages)".into(),
                code,
                output: tail.text(),
            });
        }
        phases.steps = lap();
        let (mut entries, _report) = scratch
            .snapshot_with(isolation, self.opts.threads, DEBIAN_RESIDUE)
            .map_err(|source| BuildError::Layer {
                image: name.clone(),
                layer: index,
                src: "debian".into(),
                source,
            })?;
        phases.snapshot = lap();
        if d.minbase {
            // /var/lock points at /run/lock, which a booted system's
            // tmpfiles make and no package ships; containers do not boot.
            if let Some(i) = entries.0.iter().position(|e| e.path == "run") {
                entries.0.insert(
                    i + 1,
                    crate::layer::Entry {
                        path: "run/lock".into(),
                        kind: crate::layer::EntryKind::Dir,
                        mode: 0o1777,
                        uid: 0,
                        gid: 0,
                    },
                );
            }
        }
        let names: Vec<&str> = locked.packages.iter().map(|p| p.name.as_str()).collect();
        let created_by = format!(
            "imgbuild: debian {} ({} packages: {})",
            locked.codename,
            names.len(),
            names.join(" ")
        );
        let w = super::layers::LayerWrite {
            image,
            index,
            what: "debian",
            key,
            created_by,
            epoch,
            follow: follow.map(|f| (f, below)),
        };
        let record = self.write_entries(&entries, w, reporter)?;
        phases.write = lap();
        Ok((record, phases))
    }
}

/// The key of a Debian layer: the layers below, exactly which files are
/// installed, the answers given, and how the layer is written.
pub fn key(
    below: &[crate::oci::image::LayerDesc],
    d: &DebianSpec,
    locked: &LockedImage,
    compression: crate::layer::LayerCompression,
    epoch: i64,
    chroot: bool,
) -> String {
    let mut input = serde_json::json!({
        "v": 3,
        "below": below.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
        "debs": locked.packages.iter().map(|p| &p.sha256).collect::<Vec<_>>(),
        "minbase": d.minbase,
        "debconf": d.debconf,
        "compression": compression.to_string(),
        "epoch": epoch,
    });
    // Only under chroot, so the keys of namespace and userns builds (the
    // same bytes) stay as they were: without /proc, maintainer scripts skip
    // work (systemd's tmpfiles: etc/mtab, var/lib/systemd), so a shared
    // cache must not hand one for the other.
    if chroot {
        input["isolation"] = "chroot".into();
    }
    // Only when set, so that keys without filters stay as they were: the
    // rules decide which files dpkg writes.
    if !d.path_rules.is_empty() {
        input["path_rules"] = serde_json::to_value(&d.path_rules).unwrap_or_default();
    }
    crate::oci::digest::sha256_hex(&crate::oci::image::canonical_json(&input))
}

/// The Essential packages and everything they depend on (as mmdebstrap's
/// essential set): what a bootstrap extracts before dpkg can run.
fn essential_closure(pkgs: &[Package]) -> Vec<&Package> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, p) in pkgs.iter().enumerate() {
        by_name.insert(&p.name, i);
        for prov in &p.provides {
            by_name.entry(&prov.name).or_insert(i);
        }
    }
    let mut take = vec![false; pkgs.len()];
    let mut todo: Vec<usize> = (0..pkgs.len()).filter(|&i| pkgs[i].essential).collect();
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut take[i], true) {
            continue;
        }
        for alts in pkgs[i].pre_depends.iter().chain(&pkgs[i].depends) {
            // The alternative the resolver chose is the one in the set.
            if let Some(&j) = alts.iter().find_map(|d| by_name.get(d.name.as_str())) {
                todo.push(j);
            }
        }
    }
    pkgs.iter()
        .zip(take)
        .filter(|(_, t)| *t)
        .map(|(p, _)| p)
        .collect()
}

/// Prepares an empty root for dpkg: merged-/usr links (Debian since
/// bookworm), dpkg's database, and every Essential package's files but
/// those `filter` leaves out (as dpkg, which installs them again, would).
fn bootstrap(
    root: &Path,
    essential: &[&Package],
    debs: &[PathBuf],
    pkgs: &[Package],
    locked: &LockedImage,
    filter: &crate::debian::paths::PathFilter,
) -> Result<(), DebianError> {
    for dir in [
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "etc",
    ] {
        let p = root.join(dir);
        std::fs::create_dir_all(&p).map_err(io_at(&p))?;
    }
    let mut links = vec!["bin", "sbin", "lib"];
    if locked.architecture == "amd64" {
        links.push("lib64");
        let p = root.join("usr/lib64");
        std::fs::create_dir_all(&p).map_err(io_at(&p))?;
    }
    for l in links {
        let p = root.join(l);
        std::os::unix::fs::symlink(format!("usr/{l}"), &p).map_err(io_at(&p))?;
    }
    for (f, text) in [
        ("var/lib/dpkg/status", String::new()),
        ("var/lib/dpkg/available", String::new()),
        ("var/lib/dpkg/arch", format!("{}\n", locked.architecture)),
    ] {
        let p = root.join(f);
        std::fs::write(&p, text).map_err(io_at(&p))?;
    }
    let opts = crate::layer::unpack::UnpackOptions::for_current_user();
    for e in essential {
        let i = pkgs.iter().position(|p| p.name == e.name).ok_or_else(|| {
            DebianError::EssentialMissing {
                name: e.name.clone(),
            }
        })?;
        let stream = crate::debian::deb::data_tar(&debs[i])?;
        if filter.is_empty() {
            crate::layer::unpack::apply_tar(stream, &debs[i], root, &opts)?;
        } else {
            let skip = |path: &str, dir: bool| filter.skips(path, dir);
            crate::layer::unpack::apply_tar_except(stream, &debs[i], root, &opts, &skip)?;
        }
    }
    Ok(())
}

/// The shell script that installs, run as root inside the tree.
fn install_script(
    minbase: bool,
    essential: &[&Package],
    order: &[Vec<&Package>],
    debconf: bool,
) -> String {
    let d = "/run/imgbuild-debs";
    let files = |ps: &mut dyn Iterator<Item = &&Package>| {
        ps.map(|p| format!("{d}/{}", p.filename))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let dpkg = "dpkg --force-unsafe-io --force-confold";
    let mut s = String::from("set -e\n");
    // No service starts while packages install (policy-rc.d(8)).
    s.push_str("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d\nchmod 755 /usr/sbin/policy-rc.d\n");
    if minbase {
        // The files are in place; dpkg registers them and runs their
        // scripts. Their dependencies are all here but not configured yet.
        s.push_str(&format!(
            "{dpkg} --force-depends --install {}\n",
            files(&mut essential.iter())
        ));
    }
    // Answers go in before any package that asks is configured: debconf
    // itself first when this install brings it (its own dependencies are
    // Essential), else it is in the parent already.
    let brings_debconf = order
        .iter()
        .flatten()
        .find(|p| p.name == "debconf" && !(minbase && essential.iter().any(|e| e.name == p.name)));
    if debconf {
        if let Some(p) = brings_debconf {
            s.push_str(&format!("{dpkg} --install {d}/{}\n", p.filename));
        }
        s.push_str(&format!("debconf-set-selections {d}/debconf.selections\n"));
    }
    for group in order {
        let rest: Vec<&&Package> = group
            .iter()
            .filter(|p| !(minbase && essential.iter().any(|e| e.name == p.name)))
            .filter(|p| !(debconf && brings_debconf.is_some_and(|b| b.name == p.name)))
            .collect();
        if !rest.is_empty() {
            s.push_str(&format!(
                "{dpkg} --install {}\n",
                files(&mut rest.iter().copied())
            ));
        }
    }
    s.push_str("rm -f /usr/sbin/policy-rc.d\n");
    // systemd makes one at boot when the file is empty.
    s.push_str("if [ -e /etc/machine-id ]; then : > /etc/machine-id; fi\n");
    s
}

/// What `imgbuild lock` did to each image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LockOutcome {
    pub image: String,
    /// `kept`, `resolved` or `updated`.
    pub action: &'static str,
    pub packages: usize,
    /// Packages whose version changed from the old lock, `name old → new`.
    pub changed: Vec<String>,
}

impl Session<'_> {
    /// Resolves every `debian:` image of the graph into a lock. Entries of
    /// `old` whose inputs still hold are kept, unless `update` names them:
    /// `Some(&[])` refreshes all, `Some(names)` the images that install any
    /// of those packages.
    pub fn lock(
        &self,
        old: Option<&Lock>,
        update: Option<&[String]>,
    ) -> Result<(Lock, Vec<LockOutcome>), BuildError> {
        let all: Vec<String> = self.spec.images.keys().cloned().collect();
        let order = self.closure(&all)?;
        let mut lock = Lock::new(crate::debian::lock::inputs(self.spec));
        let mut outcomes = Vec::new();
        // What each Debian image has installed once built: (name, version,
        // architecture) of its parent's and its own packages.
        let mut after: HashMap<String, Vec<Package>> = HashMap::new();
        for name in order {
            let image = self.image(&name)?;
            let Some(d) = &image.debian else { continue };
            let before: Vec<Package> = match self.debian_ancestor(image)? {
                Some(a) => after.get(&a).cloned().unwrap_or_default(),
                None => self.root_status(image)?,
            };
            let inputs = lock_inputs(image, d, &before);
            let previous = old.and_then(|l| l.images.get(&name));
            let asked = match update {
                None => false,
                Some([]) => true,
                Some(names) => {
                    previous.is_some_and(|p| p.packages.iter().any(|x| names.contains(&x.name)))
                }
            };
            let keep = previous.filter(|p| p.inputs == inputs && !asked);
            let (mut locked, action) = match keep {
                Some(p) => (p.clone(), "kept"),
                None => {
                    let loaded = self
                        .archives
                        .load(&self.store.debian_cache_dir(), d)
                        .map_err(|e| err(&name, e))?;
                    // The resolver needs what installed packages provide.
                    // (A signed archive's names: no need for SipHash here.)
                    let index: HashMap<(&str, &str, &str), &Package, foldhash::fast::RandomState> =
                        loaded
                            .packages
                            .iter()
                            .map(|p| {
                                (
                                    (p.name.as_str(), p.version.as_str(), p.architecture.as_str()),
                                    p,
                                )
                            })
                            .collect();
                    let full: Vec<Package> = before
                        .iter()
                        .map(|b| {
                            let id = (b.name.as_str(), b.version.as_str(), b.architecture.as_str());
                            index.get(&id).map_or_else(|| b.clone(), |p| (*p).clone())
                        })
                        .collect();
                    let locked = resolve(&name, d, &loaded, &full)?;
                    (
                        locked,
                        if previous.is_some() {
                            "updated"
                        } else {
                            "resolved"
                        },
                    )
                }
            };
            locked.inputs = inputs;
            let changed = previous
                .map(|p| {
                    let old: HashMap<&str, &str> = p
                        .packages
                        .iter()
                        .map(|x| (x.name.as_str(), x.version.as_str()))
                        .collect();
                    locked
                        .packages
                        .iter()
                        .filter_map(|x| match old.get(x.name.as_str()) {
                            Some(v) if *v == x.version => None,
                            Some(v) => Some(format!("{} {v} → {}", x.name, x.version)),
                            None => Some(format!("{} (new) {}", x.name, x.version)),
                        })
                        .collect()
                })
                .unwrap_or_default();
            after.insert(name.clone(), installed_after(before, &locked));
            outcomes.push(LockOutcome {
                image: name.clone(),
                action,
                packages: locked.packages.len(),
                changed,
            });
            lock.images.insert(name, locked);
        }
        Ok((lock, outcomes))
    }

    /// What is installed below `image` as `lock` sees it: the dpkg status
    /// of its Debian chain's root parent, then each Debian ancestor's
    /// locked packages. None when an ancestor has no entry in `lock`.
    fn installed_below(
        &self,
        image: &Image,
        lock: &Lock,
    ) -> Result<Option<Vec<Package>>, BuildError> {
        let (at, chain) = self.debian_chain(image)?;
        let mut before = self.root_status(at)?;
        for a in chain.iter().rev() {
            let Some(locked) = lock.images.get(a) else {
                return Ok(None);
            };
            before = installed_after(before, locked);
        }
        Ok(Some(before))
    }

    /// Why `--locked` would refuse `image`'s Debian packages, decided as
    /// [`Self::debian_packages`] decides it but without building or fetching:
    /// `root` gives the record of a Debian chain's root parent when it is
    /// known now (None: it changes, and what it installs is compared when
    /// it is built). None: images.lock pins them (or `image` has no `debian:`).
    pub(super) fn debian_unpinned(
        &self,
        image: &Image,
        lock: &Result<Option<Lock>, crate::debian::lock::LockError>,
        root: &dyn Fn(&Image) -> Option<ImageRecord>,
    ) -> Result<Option<String>, BuildError> {
        use crate::debian::lock::LockError;
        let Some(d) = &image.debian else {
            return Ok(None);
        };
        let path = crate::debian::lock::path_for(self.spec);
        let lock = match lock {
            Ok(Some(l)) => l,
            Ok(None) => {
                return Ok(Some(format!(
                    "Debian packages: there is no {}",
                    path.display()
                )));
            }
            Err(e) => return Ok(Some(format!("Debian packages: {e}"))),
        };
        let locked = match lock.image(&path, self.spec, &image.name) {
            Ok(l) => l,
            Err(LockError::Stale { .. }) => {
                return Ok(Some(
                    "Debian packages: images.yaml's `debian:` sections changed since images.lock was written".into(),
                ));
            }
            Err(LockError::Missing { .. }) => {
                return Ok(Some(
                    "Debian packages: images.lock has no entry for this image".into(),
                ));
            }
            Err(e) => return Ok(Some(format!("Debian packages: {e}"))),
        };
        let (at, chain) = self.debian_chain(image)?;
        let mut before = match &at.parent {
            crate::spec::Parent::Scratch => Vec::new(),
            _ => match root(at) {
                Some(r) => match self.status_of(&image.name, &r)? {
                    Some(s) => s,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        for a in chain.iter().rev() {
            let Some(l) = lock.images.get(a) else {
                return Ok(Some(format!(
                    "Debian packages: images.lock has no entry for `{a}`, which this image installs over"
                )));
            };
            before = installed_after(before, l);
        }
        if lock_inputs(image, d, &before) == locked.inputs {
            return Ok(None);
        }
        let parent = self.spec.parent_of(&image.name).unwrap_or_default();
        Ok(Some(format!(
            "Debian packages: images.lock was written over other packages below this image than `{parent}` has now (a package's version changed)"
        )))
    }

    /// The dpkg status of an image in the store, read from its layers'
    /// facts (kept per layer blob) rather than an unpacked tree. None: a
    /// layer's blob is not here (a pulled parent's, fetched when built).
    fn status_of(
        &self,
        image: &str,
        record: &ImageRecord,
    ) -> Result<Option<Vec<Package>>, BuildError> {
        let mut facts = Vec::new();
        for desc in record.layers.iter() {
            match crate::sbom::layers::facts(self.store, desc) {
                Ok(f) => facts.push(f),
                Err(_) => return Ok(None),
            }
        }
        let merged = crate::sbom::layers::merge(&facts);
        match merged.get("var/lib/dpkg/status") {
            Some(crate::sbom::layers::Fact::DpkgStatus(text)) => {
                crate::debian::control::parse_status(text)
                    .map(Some)
                    .map_err(|source| {
                        err(
                            image,
                            DebianError::Control {
                                path: "var/lib/dpkg/status".into(),
                                source,
                            },
                        )
                    })
            }
            _ => Ok(Some(Vec::new())),
        }
    }

    /// `image`'s Debian chain: the root parent below its Debian ancestors,
    /// and those ancestors, nearest first.
    fn debian_chain<'i>(
        &'i self,
        image: &'i Image,
    ) -> Result<(&'i Image, Vec<String>), BuildError> {
        let mut chain = Vec::new();
        let mut at = image;
        while let Some(a) = self.debian_ancestor(at)? {
            at = self.image(&a)?;
            chain.push(a);
        }
        Ok((at, chain))
    }

    /// The nearest ancestor of `image` that installs Debian packages.
    fn debian_ancestor(&self, image: &Image) -> Result<Option<String>, BuildError> {
        let parent = |n| self.spec.parent_of(n);
        Ok(crate::graph::ancestors(&image.name, parent)
            .find(|n| self.spec.images[*n].debian.is_some())
            .map(str::to_string))
    }

    /// The dpkg status of a Debian chain's root parent (an imported or
    /// pulled image, built before): what the chain starts from.
    fn root_status(&self, image: &Image) -> Result<Vec<Package>, BuildError> {
        let parent = match &image.parent {
            crate::spec::Parent::Scratch => return Ok(Vec::new()),
            crate::spec::Parent::Image(p) => p.clone(),
            crate::spec::Parent::Registry(r) => r.to_string(),
        };
        let record = match &image.parent {
            // Built now when this store never built it (a CI job's fresh
            // store): from the layer cache when the session shares one.
            crate::spec::Parent::Image(p) => match self.last_build(p)? {
                Some(r) => Some(r.image),
                None => match self
                    .build(std::slice::from_ref(p), &super::report::Silent)?
                    .remove(p)
                {
                    Some(Ok(o)) => Some(o.record),
                    Some(Err(e)) => return Err(e),
                    None => None,
                },
            },
            // Pulled now (or found in the store): its packages decide.
            crate::spec::Parent::Registry(r) => self
                .pull_parents(std::slice::from_ref(&image.name))?
                .remove(r),
            crate::spec::Parent::Scratch => None,
        };
        let Some(record) = record else {
            let parent = parent.clone();
            return Err(err(&image.name, DebianError::ParentNotBuilt { parent }));
        };
        let root = self.rootfs(&parent, &record.layers.to_vec())?;
        installed_in(&root).map_err(|e| err(&image.name, e))
    }
}

/// What images.lock records as an image's inputs: its `debian:`, its parent,
/// and the packages installed below it; the entry is current while they
/// hash the same.
fn lock_inputs(image: &Image, d: &DebianSpec, before: &[Package]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(crate::oci::image::canonical_json(&serde_json::json!({
        "debian": crate::debian::lock::debian_value(d),
        "from": match &image.parent {
            crate::spec::Parent::Scratch => String::new(),
            crate::spec::Parent::Image(p) => p.clone(),
            crate::spec::Parent::Registry(r) => r.to_string(),
        },
        "installed": before.iter().map(|p| format!("{} {} {}", p.name, p.version, p.architecture)).collect::<Vec<_>>(),
    })));
    hex::encode(h.finalize())
}

/// `before` with `locked`'s packages installed, by name.
fn installed_after(before: Vec<Package>, locked: &LockedImage) -> Vec<Package> {
    let mut mine = before;
    for p in &locked.packages {
        mine.retain(|m| m.name != p.name);
        mine.push(Package::bare(&p.name, &p.version, &p.architecture));
    }
    mine.sort_by(|a, b| a.name.cmp(&b.name));
    mine
}
