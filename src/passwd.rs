//! Lookups in the text of an image's /etc/passwd and /etc/group. A leaf:
//! callers read the files (from a layer blob or an unpacked root) and pass
//! the text, so this depends on nothing else in the crate.

/// The first line of `text` with at least `min` fields, whose field `key`
/// is `value` and for which `pick` gives a value.
fn find<T>(
    text: &str,
    key: usize,
    value: &str,
    min: usize,
    pick: impl Fn(&[&str]) -> Option<T>,
) -> Option<T> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= min && f[key] == value).then(|| pick(&f))?
    })
}

/// Looks up user `name` in passwd text: (uid, primary gid).
pub fn lookup_user(passwd: &str, name: &str) -> Option<(u32, u32)> {
    find(passwd, 0, name, 4, |f| {
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

/// Looks up group `name` in group text: its gid.
pub fn lookup_group(group: &str, name: &str) -> Option<u32> {
    find(group, 0, name, 3, |f| f[2].parse().ok())
}

/// The primary gid of the first passwd line whose uid field reads `uid`.
pub fn primary_gid(passwd: &str, uid: u32) -> Option<u32> {
    find(passwd, 2, &uid.to_string(), 4, |f| f[3].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let p =
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
        assert_eq!(lookup_user(p, "www-data"), Some((33, 33)));
        assert_eq!(lookup_user(p, "nobody"), None);
        assert_eq!(lookup_group("www-data:x:33:\n", "www-data"), Some(33));
    }
}
