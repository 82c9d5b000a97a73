//! Matching an image to keyring keys the way the kubelet's `pkg/credentialprovider` does: keys
//! with optional scheme, port and path prefix, `*` globs per host label, Docker Hub's aliases.

use super::MAX_HOST_BYTES;

/// The keyring key for a secret's registry entry: scheme stripped, `/v1/` and `/v2/` reduced
/// to the host (the docker client treats them as the host itself).
pub(super) fn keyring_key(loc: &str) -> Option<String> {
    let rest = loc
        .strip_prefix("https://")
        .or_else(|| loc.strip_prefix("http://"))
        .unwrap_or(loc);
    let u = SchemelessUrl::parse(rest);
    if u.host.is_empty() || u.host.len() > MAX_HOST_BYTES || !port_ok(u.host) {
        return None;
    }
    let mut path = u.path;
    if path.starts_with("/v2/") || path.starts_with("/v1/") {
        path = &path[3..];
    }
    if path.is_empty() || path == "/" {
        Some(u.host.to_owned())
    } else {
        Some(format!("{}{}", u.host, path))
    }
}

/// Go's url.Parse rejects a non-numeric port.
fn port_ok(host: &str) -> bool {
    let after_bracket = host.rsplit_once(']').map_or(host, |(_, a)| a);
    match after_bracket.rsplit_once(':') {
        Some((_, p)) => p.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

/// `host[:port]` and `/path` of a schemeless URL, as `url.Parse("https://" + s)` splits them.
pub(super) struct SchemelessUrl<'a> {
    host: &'a str,
    path: &'a str,
}

impl<'a> SchemelessUrl<'a> {
    pub(super) fn parse(s: &'a str) -> Self {
        let end = s.find(['?', '#']).unwrap_or(s.len());
        let s = &s[..end];
        let (authority, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        SchemelessUrl { host, path }
    }

    /// Host labels and port (`net.SplitHostPort`; without a port the whole host is split).
    fn parts(&self) -> (Vec<&'a str>, &'a str) {
        let (host, port) = split_host_port(self.host).unwrap_or((self.host, ""));
        (host.split('.').collect(), port)
    }
}

fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hp.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((h, port));
    }
    let (h, p) = hp.rsplit_once(':')?;
    if h.contains(':') {
        return None; // "too many colons"
    }
    Some((h, p))
}

/// The kubelet's `URLsMatch`: same port, same number of host labels each matching the glob
/// label, and the key's path a prefix of the image's path.
pub(super) fn urls_match(glob: &SchemelessUrl<'_>, target: &SchemelessUrl<'_>) -> bool {
    let (gparts, gport) = glob.parts();
    let (tparts, tport) = target.parts();
    gport == tport
        && gparts.len() == tparts.len()
        && target.path.starts_with(glob.path)
        && gparts
            .iter()
            .zip(&tparts)
            .all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()).unwrap_or(false))
}

/// The kubelet's `isDefaultRegistryMatch`.
pub(super) fn is_default_registry_match(image: &str) -> bool {
    let (first, rest) = match image.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (image, None),
    };
    if first.is_empty() {
        return false;
    }
    rest.is_none()
        || first == "docker.io"
        || first == "index.docker.io"
        || !first.contains(['.', ':'])
}

/// Go's `filepath.Match` on one host label (no separators): `*`, `?`, `[...]` with ranges and
/// `^` negation, `\` escapes. `None` for a malformed pattern (which matches nothing).
///
/// Ported from Go's chunk-by-chunk algorithm rather than written as a backtracking recursion:
/// keys come from Secrets, and a recursion over `*` takes exponential time on keys such as
/// `a*a*a*…b` and overflows the stack on a long run of `*`. This is O(pattern × label) and
/// uses no recursion.
pub(super) fn glob_match(mut p: &[u8], mut s: &[u8]) -> Option<bool> {
    'pattern: while !p.is_empty() {
        let (star, chunk, rest) = scan_chunk(p);
        p = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest of the label.
            return Some(true);
        }
        // The last chunk must use up the label; an earlier one may leave some for the next.
        let (t, ok) = match_chunk(chunk, s)?;
        if ok && (t.is_empty() || !p.is_empty()) {
            s = t;
            continue;
        }
        if star {
            for i in 0..s.len() {
                let (t, ok) = match_chunk(chunk, &s[i + 1..])?;
                if ok {
                    if p.is_empty() && !t.is_empty() {
                        continue;
                    }
                    s = t;
                    continue 'pattern;
                }
            }
        }
        // Go reports a bad pattern even when the match already failed.
        while !p.is_empty() {
            let (_, chunk, rest) = scan_chunk(p);
            p = rest;
            match_chunk(chunk, b"")?;
        }
        return Some(false);
    }
    Some(s.is_empty())
}

/// Go's `scanChunk`: leading stars, then the pattern up to the next star outside a class.
fn scan_chunk(p: &[u8]) -> (bool, &[u8], &[u8]) {
    let stars = p.iter().take_while(|b| **b == b'*').count();
    let p = &p[stars..];
    let mut in_range = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' if i + 1 < p.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &p[..i], &p[i..])
}

/// Go's `matchChunk`: matches a star-free chunk at the start of `s`; returns the rest of `s` and
/// whether it matched. Keeps reading the chunk after a mismatch so that a malformed one is
/// always `None`.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Option<(&'a [u8], bool)> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let r = if failed {
                    None
                } else {
                    let r = s[0];
                    s = &s[1..];
                    Some(r)
                };
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let lo = class_char(&mut chunk)?;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        chunk = &chunk[1..];
                        hi = class_char(&mut chunk)?;
                    }
                    if r.is_some_and(|r| lo <= r && r <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == b'\\' {
                    chunk = &chunk[1..];
                    *chunk.first()?
                } else {
                    c
                };
                if !failed {
                    if s[0] != literal {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Some(if failed { (&[][..], false) } else { (s, true) })
}

/// Go's `getEsc`: one character of a class, `\` escapes honoured; `-`, `]` and the end are
/// malformed here.
fn class_char(chunk: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = chunk.split_first()?;
    let (c, rest) = match b {
        b'-' | b']' => return None,
        b'\\' => rest.split_first().map(|(c, r)| (*c, r))?,
        _ => (b, rest),
    };
    // Go also rejects a class char that ends the pattern (`[a`).
    if rest.is_empty() {
        return None;
    }
    *chunk = rest;
    Some(c)
}
