//! Hiding credentials before a value leaves the process.
//!
//! Git URLs may carry credentials (`https://user:token@host/repo.git`). They are
//! needed to talk to the remote and nowhere else: every URL that reaches the
//! API, a log line, an error message or a history entry goes through
//! [`redact_url`] first.

/// What replaces a secret.
pub const MASK: &str = "***";

/// Returns `url` with any userinfo (`user:password@`) in its authority replaced
/// by `***`. scp-like addresses (`git@host:path`) keep their user name, which
/// is conventionally not a secret (`git@`), unless it also carries a password.
///
/// The function never fails: a string that is not a URL is returned with any
/// `user:password@` prefix of its authority masked all the same.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &url[rest_start..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            return format!("{}{}@{}", &url[..rest_start], MASK, &rest[at + 1..]);
        }
        return url.to_string();
    }
    // scp-like: [user[:password]@]host:path — the userinfo ends at the last
    // '@' before the path.
    let head = url.split('/').next().unwrap_or(url);
    if let Some(at) = head.rfind('@') {
        let userinfo = &url[..at];
        if userinfo.contains([':', '@']) {
            return format!("{}@{}", MASK, &url[at + 1..]);
        }
    }
    url.to_string()
}

/// Replaces every occurrence of each secret in `text` by `***`.
///
/// Used on messages that come from outside (a git error, kustomize's stderr)
/// and may quote a URL or a token verbatim.
pub fn redact_secrets<S: AsRef<str>>(text: &str, secrets: &[S]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        let secret = secret.as_ref();
        if secret.len() >= 3 {
            out = out.replace(secret, MASK);
        }
    }
    out
}

/// The secrets a git URL carries (user name and password of its userinfo),
/// for [`redact_secrets`].
pub fn url_secrets(url: &str) -> Vec<String> {
    let authority = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())]
        }
        None => url,
    };
    let Some(at) = authority.rfind('@') else {
        return Vec::new();
    };
    let userinfo = &authority[..at];
    let mut secrets = vec![userinfo.to_string()];
    if let Some((user, password)) = userinfo.split_once(':') {
        secrets.push(password.to_string());
        if url.contains("://") {
            secrets.push(user.to_string());
        }
        // Percent-decoded forms can appear in error messages too.
        if let Ok(decoded) = percent_decode(password) {
            secrets.push(decoded);
        }
    } else if url.contains("://") {
        if let Ok(decoded) = percent_decode(userinfo) {
            secrets.push(decoded);
        }
    } else {
        // scp-like `git@host:path`: the user name is not a secret.
        secrets.clear();
    }
    secrets.retain(|s| s.len() >= 3);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_userinfo_of_urls() {
        assert_eq!(
            redact_url("https://user:s3cret@example.com/a/b.git"),
            "https://***@example.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://ghp_token@example.com/a.git"),
            "https://***@example.com/a.git"
        );
        assert_eq!(
            redact_url("ssh://git@example.com:22/a.git"),
            "ssh://***@example.com:22/a.git"
        );
        assert_eq!(
            redact_url("https://example.com/a@b.git"),
            "https://example.com/a@b.git"
        );
    }

    #[test]
    fn scp_like_keeps_user_but_not_password() {
        assert_eq!(
            redact_url("git@example.com:org/a.git"),
            "git@example.com:org/a.git"
        );
        assert_eq!(
            redact_url("me:pw@example.com:org/a.git"),
            "***@example.com:org/a.git"
        );
    }

    #[test]
    fn secrets_of_a_url_are_masked_in_text() {
        let url = "https://bob:p%40ss@example.com/a.git";
        let secrets = url_secrets(url);
        let text = "fatal: could not read from bob:p%40ss and p@ss";
        let out = redact_secrets(text, &secrets);
        assert!(!out.contains("p%40ss") && !out.contains("p@ss"), "{out}");
    }

    /// An scp-like address whose password holds a raw `@`: the URL form
    /// masks up to the last `@` of the authority, the scp-like form must not
    /// stop at the first one and show the rest of the password.
    #[test]
    fn scp_like_password_with_an_at_sign_is_masked_whole() {
        let out = redact_url("me:p@ss@example.com:org/a.git");
        assert!(!out.contains("ss@"), "{out}");
        assert_eq!(out, "***@example.com:org/a.git");
    }
}
