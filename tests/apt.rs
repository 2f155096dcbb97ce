//! The resolver against the host's own apt: its archive lists and
//! `apt-get install --simulate`. Each test skips when the host has no apt
//! lists, except on CI (`CI` set), where ci/setup ran `apt-get update` and
//! a missing list is a failure.
use std::path::Path;

use imgbuild::debian::order::install_order;
use imgbuild::debian::package::Package;
use imgbuild::debian::resolve::{Options, Universe, Variant};
use imgbuild::debian::testutil::{
    check_consistent, host_list_texts, host_lists, host_status, names, parse_packages, req,
};

/// The host's archive lists, or None (after saying why) where there are
/// none; on CI their absence fails the test.
fn lists_or_skip(test: &str) -> Option<Vec<Package>> {
    let lists = host_lists();
    if lists.is_none() {
        let why = "no /var/lib/apt/lists/*_Packages on this host (run `apt-get update`, as ci/setup does)";
        assert!(std::env::var_os("CI").is_none(), "{test}: {why}");
        eprintln!("{test}: skipping, {why}");
    }
    lists
}

/// Against the host's real archive lists, when it has any.
#[test]
fn host_archive() {
    let Some(universe) = lists_or_skip("host_archive") else {
        return;
    };
    let start = std::time::Instant::now();
    let u = Universe::new(&universe, "amd64");
    let indexed = start.elapsed();
    let opts = Options {
        variant: Some(Variant::Minbase),
        ..Options::default()
    };
    let start = std::time::Instant::now();
    let r = u.resolve(&[], &[], &opts).unwrap();
    let minbase = start.elapsed();
    check_consistent(&universe, &[], &r);
    assert!(r.packages.iter().any(|p| p.name == "dpkg"));
    let groups = install_order(&r.packages);
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), r.packages.len());
    // Debian's Essential set has no Pre-Depends inside a Depends cycle:
    // every pre-dependency lands in an earlier group.
    for (k, g) in groups.iter().enumerate() {
        for p in g {
            for d in p.pre_depends.iter().flatten() {
                let at = groups.iter().position(|g| {
                    g.iter()
                        .any(|q| q.name == d.name || q.provides.iter().any(|pr| pr.name == d.name))
                });
                assert!(
                    at.is_none_or(|at| at < k),
                    "{} pre-depends on {}",
                    p.name,
                    d.name
                );
            }
        }
    }
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    eprintln!(
        "minbase groups: {sizes:?}; first: {:?}",
        groups[0].iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    eprintln!(
        "{} packages indexed in {indexed:?}; minbase: {} packages in {minbase:?}, {} install groups",
        universe.len(),
        r.packages.len(),
        groups.len()
    );
    // A closure of several hundred packages from nothing.
    let big: Vec<&str> = [
        "texlive-latex-base",
        "imagemagick",
        "ffmpeg",
        "apache2",
        "php-cli",
    ]
    .into_iter()
    .filter(|n| u.versions(n).is_some())
    .collect();
    let opts = Options {
        recommends: true,
        ..Options::default()
    };
    let start = std::time::Instant::now();
    let r = u.resolve(&[], &req(&big), &opts).unwrap();
    let took = start.elapsed();
    check_consistent(&universe, &[], &r);
    eprintln!(
        "{big:?} with Recommends: {} packages in {took:?}",
        r.packages.len()
    );
    // (How long it takes is measured in bench/, not asserted here.)
    assert!(r.packages.len() > 100, "{} packages", r.packages.len());
    // On top of the host's own status.
    let installed = host_status();
    let want = [
        "apache2",
        "libapache2-mod-php",
        "php-intl",
        "php-cli",
        "postgresql",
    ];
    let want: Vec<&str> = want
        .into_iter()
        .filter(|n| u.versions(n).is_some())
        .collect();
    for recommends in [false, true] {
        let opts = Options {
            recommends,
            ..Options::default()
        };
        let start = std::time::Instant::now();
        let r = u.resolve(&installed, &req(&want), &opts).unwrap();
        let took = start.elapsed();
        check_consistent(&universe, &installed, &r);
        eprintln!(
            "{want:?} (recommends: {recommends}): {} packages in {took:?}",
            r.packages.len()
        );
    }
}

/// A dpkg status file listing `pkgs` as installed, from the archive's
/// own stanzas: apt tells versions apart by a hash of their fields, so
/// a rewritten stanza would look like another build of that version.
fn status_text(pkgs: &[Package]) -> String {
    let mut out = String::new();
    for text in host_list_texts().unwrap() {
        for stanza in text.split("\n\n") {
            let field = |k: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix(": "))
            };
            let hit = pkgs
                .iter()
                .any(|p| field("Package") == Some(&p.name) && field("Version") == Some(&p.version));
            if hit && !out.contains(&format!("Package: {}\n", field("Package").unwrap())) {
                out.push_str(stanza.trim_end());
                out.push_str("\nStatus: install ok installed\n\n");
            }
        }
    }
    out
}

/// What `apt-get install --simulate` would install on top of `status`.
fn apt_simulate(status: &Path, recommends: bool, list: &[&str]) -> Vec<String> {
    let mut cmd = std::process::Command::new("apt-get");
    cmd.args(["install", "--simulate", "-o", "Debug::NoLocking=1", "-o"])
        .arg(format!("Dir::State::status={}", status.display()))
        .arg(format!("-oAPT::Install-Recommends={recommends}"))
        .args(list);
    let out = cmd.output().expect("apt-get runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "apt-get install --simulate {list:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .map(|l| {
            let name = l.split(' ').next().unwrap();
            let version = l.split('(').nth(1).unwrap().split(' ').next().unwrap();
            format!("{name}={version}")
        })
        .collect();
    got.sort();
    got
}

/// The resolver against apt itself (the README's evidence that they
/// agree): minbase from nothing and a few starting points, each of which
/// must give apt's exact set of packages and versions.
#[test]
fn apt_cross_check() {
    let Some(universe) = lists_or_skip("apt_cross_check") else {
        return;
    };
    let u = Universe::new(&universe, "amd64");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    // Minbase from nothing: apt is asked for the same roots.
    let mut roots: Vec<&str> = universe
        .iter()
        .filter_map(|p| {
            let newest = &universe[u.versions(&p.name)?[0]];
            (newest.essential || newest.priority == "required").then_some(p.name.as_str())
        })
        .collect();
    roots.sort_unstable();
    roots.dedup();
    let opts = Options {
        variant: Some(Variant::Minbase),
        ..Options::default()
    };
    let minbase = u.resolve(&[], &[], &opts).unwrap();
    let mut ours = names(&minbase);
    ours.sort();
    let theirs = apt_simulate(&empty, false, &roots);
    assert!(
        theirs.len() > 50,
        "apt installs only {theirs:?} for minbase"
    );
    assert_eq!(
        ours,
        theirs,
        "minbase differs from apt's: only apt: {:?}, only us: {:?}",
        theirs
            .iter()
            .filter(|w| !ours.contains(w))
            .collect::<Vec<_>>(),
        ours.iter()
            .filter(|g| !theirs.contains(g))
            .collect::<Vec<_>>()
    );
    // That minbase as a dpkg status: an image-like parent.
    let base = dir.path().join("base");
    std::fs::write(&base, status_text(&minbase.packages)).unwrap();
    // (requests, whether Recommends are compared too). Not compared:
    // the host's own status, where apt upgrades requested packages that
    // are installed (we keep them), and texlive/imagemagick/ffmpeg
    // with Recommends, where apt 2.6 picks x-terminal-emulator's
    // provider by cache order (zutty) and we by name (alacritty).
    let cases: [(&[&str], bool); 6] = [
        (&["apache2", "libapache2-mod-php8.2", "php8.2-intl"], true),
        (&["git", "curl", "vim", "build-essential"], true),
        (&["postgresql", "nginx", "php8.2-fpm", "php8.2-pgsql"], true),
        (
            &["mailutils", "python3-pip", "openjdk-17-jre-headless"],
            true,
        ),
        (&["texlive-latex-base", "imagemagick", "ffmpeg"], false),
        (
            &["systemd", "openssh-server", "sudo", "locales", "tzdata"],
            true,
        ),
    ];
    let mut differ = Vec::new();
    for (list, with_recommends) in cases {
        for status in [&base, &empty] {
            let installed = std::fs::read_to_string(status)
                .map(|t| parse_packages(&t, true))
                .unwrap();
            for recommends in [false, true] {
                if recommends && !with_recommends {
                    continue;
                }
                let want = apt_simulate(status, recommends, list);
                let opts = Options {
                    recommends,
                    ..Options::default()
                };
                let start = std::time::Instant::now();
                let mut got = names(&u.resolve(&installed, &req(list), &opts).unwrap());
                let took = start.elapsed();
                got.sort();
                let only_apt: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
                let only_us: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
                eprintln!(
                    "{list:?} on {} installed, recommends {recommends}: apt {} / us {} ({took:?})",
                    installed.len(),
                    want.len(),
                    got.len()
                );
                if !only_apt.is_empty() || !only_us.is_empty() {
                    eprintln!("  only apt: {only_apt:?}\n  only us: {only_us:?}");
                    differ.push(list);
                }
            }
        }
    }
    assert!(differ.is_empty(), "apt differs for {differ:?}");
}
