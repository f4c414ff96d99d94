//! Who a source is to its remote: a keyed hash of the credentials in its
//! URL, so that sources share cached state only when they present the same
//! credentials — without keeping or writing the credentials themselves.
//!
//! The key is 32 random bytes made once per cache root and kept in
//! `<root>/git/identity-key` (mode 0600), so cache directories keep their
//! names across restarts. Without the key, the hash of a guessed token
//! cannot be checked against a cache directory's name.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The per-cache-root key of credential hashes.
pub(super) struct IdentityKey([u8; 32]);

impl IdentityKey {
    /// Reads the key at `path`, or makes one there (created 0600 under a
    /// temporary name and linked into place, so two processes agree on
    /// one key and none reads a half-written one).
    pub(super) fn load_or_create(path: &Path) -> Result<IdentityKey, String> {
        if let Some(key) = read_key(path)? {
            return Ok(key);
        }
        let dir = path.parent().ok_or("the key path has no directory")?;
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| format!("cannot read random bytes: {e}"))?;
        let tmp = tmp_path(path);
        let _ = std::fs::remove_file(&tmp);
        let written = (|| -> std::io::Result<()> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(hex::encode(key).as_bytes())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", tmp.display()));
        }
        // A hard link fails when another process made the key first: use
        // theirs.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(IdentityKey(key)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(path)?
                .ok_or_else(|| format!("{} vanished while it was made", path.display())),
            Err(e) => Err(format!("cannot create {}: {e}", path.display())),
        }
    }

    /// A tag for the credentials of `url` (its user and password): hex of
    /// their HMAC-SHA256, or `None` for a URL without credentials.
    pub(super) fn tag(&self, url: &gix::Url) -> Option<String> {
        let (user, password) = (url.user(), url.password());
        if user.is_none() && password.is_none() {
            return None;
        }
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [user, password] {
            match part {
                Some(p) => {
                    mac.update(b"1");
                    mac.update(&(p.len() as u64).to_be_bytes());
                    mac.update(p.as_bytes());
                }
                None => mac.update(b"0"),
            }
        }
        Some(hex::encode(mac.finalize().into_bytes()))
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn read_key(path: &Path) -> Result<Option<IdentityKey>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("{} is not a key chump made", path.display()))?;
            Ok(Some(IdentityKey(bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gix::bstr::ByteSlice;

    fn url(s: &str) -> gix::Url {
        gix::url::parse(s.as_bytes().as_bstr()).unwrap()
    }

    #[test]
    fn tags_differ_by_credentials_and_key_and_survive_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("git/identity-key");
        let key = IdentityKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let a = key.tag(&url("https://bob:right@h/r.git")).unwrap();
        assert_eq!(Some(a.clone()), key.tag(&url("https://bob:right@h/r.git")));
        assert_ne!(Some(a.clone()), key.tag(&url("https://bob:wrong@h/r.git")));
        assert_ne!(
            Some(a.clone()),
            key.tag(&url("https://alice:right@h/r.git"))
        );
        assert_ne!(
            key.tag(&url("https://ab@h/r.git")),
            key.tag(&url("https://a:b@h/r.git"))
        );
        assert_eq!(key.tag(&url("https://h/r.git")), None);
        assert!(!a.contains("right"));
        let again = IdentityKey::load_or_create(&path).unwrap();
        assert_eq!(
            Some(a.clone()),
            again.tag(&url("https://bob:right@h/r.git"))
        );
        let other = IdentityKey::load_or_create(&dir.path().join("other/key")).unwrap();
        assert_ne!(Some(a), other.tag(&url("https://bob:right@h/r.git")));
    }
}
