//! Webhook payloads: arbitrary bytes through every provider's push parser,
//! and repository URL normalisation.
#![no_main]

use chump_jobs::webhook::{normalize_repo_url, parse_push, Provider};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for provider in [
        Provider::GitHub,
        Provider::GitLab,
        Provider::Gitea,
        Provider::Generic,
    ] {
        if let Ok(push) = parse_push(provider, data) {
            assert!(!push.repo_urls.is_empty(), "a push without a repository");
            assert!(!push.branch.is_empty(), "a push without a branch");
            assert!(!push.branch.starts_with("refs/heads/") || provider == Provider::Generic);
            for url in &push.repo_urls {
                check_normalized(url);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_normalized(text);
    }
});

fn check_normalized(url: &str) {
    if let Some(n) = normalize_repo_url(url) {
        let (host, path) = n.split_once('/').expect("host/path");
        assert!(!host.is_empty() && !path.is_empty(), "{url:?} -> {n:?}");
        assert_eq!(n, n.to_ascii_lowercase());
        assert!(!n.ends_with('/'), "{url:?} -> {n:?} ends with '/'");
    }
}
