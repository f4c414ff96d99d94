//! Source validation: arbitrary JSON bodies through `SourceSpec::from_json`
//! (create and patch), and every validator on arbitrary strings, with the
//! invariants the rest of chump relies on.
#![no_main]

use chump_jobs::source::{
    parse_source_id, validate_branch, validate_dns_label, validate_dns_subdomain, validate_git_url,
    validate_repo_path, Merge, SourceSpec, ValidationRules, MAX_SOURCE_ID,
};
use libfuzzer_sys::fuzz_target;

fn base() -> SourceSpec {
    SourceSpec {
        namespace: "production".into(),
        deployment_name: "helloworld".into(),
        git_url: "https://example.com/org/repo.git".into(),
        branch: "main".into(),
        deploy_path: "deploy".into(),
        container_name: "app".into(),
        image_version_file: "deploy/deployment.yaml".into(),
        interval_seconds: None,
        suspended: false,
        prune: true,
        auto_rollback: None,
        service_account: None,
    }
}

/// Every accepted repo path stays inside the repository.
fn check_repo_path(s: &str) {
    if validate_repo_path(s).is_ok() {
        assert!(!s.starts_with('/'), "accepted absolute path {s:?}");
        assert!(!s.contains('\0'), "accepted NUL in {s:?}");
        assert!(!s.contains('\\'), "accepted backslash in {s:?}");
        let mut depth: i64 = 0;
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    depth -= 1;
                    assert!(depth >= 0, "accepted {s:?}, which climbs out with '..'");
                }
                _ => depth += 1,
            }
        }
    }
}

fn check_branch(s: &str) {
    if validate_branch(s).is_ok() {
        assert!(!s.is_empty());
        assert!(!s.contains(".."), "accepted branch {s:?} with '..'");
        assert!(!s.contains("@{"), "accepted branch {s:?} with '@{{'");
        assert!(
            !s.starts_with('-') && !s.starts_with('/'),
            "accepted branch {s:?}"
        );
        assert!(
            !s.chars()
                .any(|c| c.is_control()
                    || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')),
            "accepted branch {s:?} with a forbidden character"
        );
    }
}

fn check_spec(spec: &SourceSpec) {
    check_repo_path(&spec.deploy_path);
    check_repo_path(&spec.image_version_file);
    check_branch(&spec.branch);
    assert!(validate_dns_label(&spec.namespace).is_ok());
    assert!(validate_dns_label(&spec.container_name).is_ok());
    assert!(validate_dns_subdomain(&spec.deployment_name).is_ok());
    // A spec that was accepted is accepted again (validate goes through JSON).
    spec.validate(ValidationRules::default())
        .expect("an accepted spec validates again");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        let rules = ValidationRules::default();
        if let Ok(spec) = SourceSpec::from_json(&body, Merge::Full, rules) {
            check_spec(&spec);
        }
        let base = base();
        if let Ok(spec) = SourceSpec::from_json(&body, Merge::Patch(&base), rules) {
            check_spec(&spec);
        }
        let _ = SourceSpec::from_json(
            &body,
            Merge::Full,
            ValidationRules {
                allow_file_urls: true,
                ..Default::default()
            },
        );
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_repo_path(text);
    check_branch(text);
    let _ = validate_dns_label(text);
    let _ = validate_dns_subdomain(text);
    if validate_git_url(text, ValidationRules::default()).is_ok() {
        assert!(
            validate_git_url(
                text,
                ValidationRules {
                    allow_file_urls: true,
                    ..Default::default()
                }
            )
            .is_ok(),
            "allowing file URLs rejected {text:?}"
        );
        assert!(!text.chars().any(|c| c.is_whitespace() || c.is_control()));
    }
    match parse_source_id(text) {
        Ok(id) => assert!((1..=MAX_SOURCE_ID).contains(&id), "id {id} out of range"),
        Err(msg) => assert!(msg.len() < 512, "an id error quotes too much input"),
    }
});
