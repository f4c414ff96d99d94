//! Property tests for the validators and parsers that stand between users
//! (or repositories, or webhook senders) and the rest of chump.
//!
//! Case counts are kept modest so the suite stays fast on a small machine.
//! The branch-name property compares chump's rules with the real
//! `git check-ref-format --branch`.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use chump_jobs::image::{same_image, ImageRef};
use chump_jobs::redact::redact_url;
use chump_jobs::source::{
    classify_git_url, parse_source_id, validate_branch, validate_dns_label, validate_git_url,
    validate_repo_path, GitUrlKind, ValidationRules, MAX_SOURCE_ID,
};
use chump_jobs::webhook::normalize_repo_url;
use proptest::prelude::*;

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        // PROPTEST_CASES raises the count for a longer hunt.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// A valid DNS-1123 label of 1 to 63 characters.
fn dns_label() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]",
        "[a-z0-9][a-z0-9-]{0,61}[a-z0-9]",
        // Long ones, near the bound.
        "[a-z][a-z0-9-]{55,61}[a-z0-9]",
    ]
}

/// A host name: lower-case labels with a dot.
fn host() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[a-z][a-z0-9]{0,8}", 1..3),
        "(com|org|io|example)",
    )
        .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")))
}

/// A repository path on a host: lower-case components (never ending in
/// `.git` by themselves).
fn repo_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9][a-z0-9_-]{0,10}", 1..4).prop_map(|parts| parts.join("/"))
}

/// A branch name git accepts: components of letters, digits, `_`, `-`, `.`
/// (not leading), joined by `/`.
fn valid_branch() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}[A-Za-z0-9_]", 1..4)
        .prop_map(|parts| parts.join("/"))
        .prop_filter("no '..' and no '.lock' component", |s| {
            !s.contains("..") && !s.split('/').any(|p| p.ends_with(".lock"))
        })
}

/// Short strings over an alphabet rich in the characters git's ref rules are
/// about, to compare with `git check-ref-format`.
fn ref_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => "[a-zA-Z0-9]",
            1 => Just("/".to_string()),
            1 => Just(".".to_string()),
            1 => Just("-".to_string()),
            1 => Just("@".to_string()),
            1 => Just("{".to_string()),
            1 => "[ ~^:?*\\[\\\\\t\x7f_}!#$%&+=,;'\"<>|]",
            1 => Just(".lock".to_string()),
        ],
        1..12,
    )
    .prop_map(|parts| parts.concat())
}

/// Relative paths made of `..`, `.`, empty and ordinary components.
fn path_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => Just("..".to_string()),
            1 => Just(".".to_string()),
            1 => Just(String::new()),
            4 => "[a-z]{1,3}",
            1 => Just("...".to_string()),
            1 => Just("..a".to_string()),
        ],
        1..8,
    )
    .prop_map(|parts| parts.join("/"))
}

/// A valid image reference and its parts.
#[derive(Debug, Clone)]
struct Image {
    text: String,
    registry: Option<String>,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn image() -> impl Strategy<Value = Image> {
    let registry = prop::option::of(prop_oneof![
        host(),
        (host(), 1u16..65535).prop_map(|(h, p)| format!("{h}:{p}")),
        Just("localhost:5000".to_string()),
        Just("localhost".to_string()),
    ]);
    let path = prop::collection::vec("[a-z0-9]{1,6}([._-][a-z0-9]{1,6})?", 1..4)
        .prop_map(|parts| parts.join("/"));
    let tag = prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}");
    let digest = prop::option::of("[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")));
    (registry, path, tag, digest)
        .prop_filter(
            "a one-part path may not look like a registry",
            |(registry, path, _, _)| {
                // Without a registry, a first component with '.' would be
                // taken for one.
                registry.is_some()
                    || !path.contains('/')
                    || !path.split('/').next().unwrap_or("").contains('.')
            },
        )
        .prop_map(|(registry, path, tag, digest)| {
            let mut text = String::new();
            if let Some(r) = &registry {
                text.push_str(r);
                text.push('/');
            }
            text.push_str(&path);
            if let Some(t) = &tag {
                text.push(':');
                text.push_str(t);
            }
            if let Some(d) = &digest {
                text.push('@');
                text.push_str(d);
            }
            Image {
                text,
                registry,
                path,
                tag,
                digest,
            }
        })
}

/// Lexically normalises `path` (no file system): `None` when a `..` climbs
/// above the first component (the root for absolute paths).
fn lexical_normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if depth == 0 {
                    return None;
                }
                out.pop();
                depth -= 1;
            }
            Component::CurDir => {}
            Component::Normal(part) => {
                out.push(part);
                depth += 1;
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Whether a lexical walk of `s` (split at `/`) ever climbs above its start.
fn climbs_out(s: &str) -> bool {
    let mut depth: i64 = 0;
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

fn git_accepts_branch(name: &str) -> bool {
    // Outside any repository, so `@{-1}` and friends cannot resolve.
    let dir = std::env::temp_dir();
    let out = Command::new("git")
        .args(["check-ref-format", "--branch", name])
        .current_dir(&dir)
        .env("GIT_CEILING_DIRECTORIES", &dir)
        .env_remove("GIT_DIR")
        .output()
        .expect("run git check-ref-format");
    out.status.success()
}

// ---------------------------------------------------------------------------
// DNS labels
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_dns_labels_are_accepted(label in dns_label()) {
        prop_assert!(validate_dns_label(&label).is_ok(), "{label:?}");
    }

    #[test]
    fn dns_labels_with_a_bad_character_are_rejected(
        label in dns_label(),
        bad in "[A-Z_. /@:]",
        at in any::<prop::sample::Index>(),
    ) {
        let mut s = label.clone();
        s.insert_str(at.index(label.len() + 1), &bad);
        prop_assert!(validate_dns_label(&s).is_err(), "{s:?}");
    }

    #[test]
    fn dns_labels_starting_or_ending_with_a_dash_are_rejected(label in "[a-z0-9-]{0,20}") {
        let (lead, trail) = (format!("-{label}"), format!("{label}-"));
        prop_assert!(validate_dns_label(&lead).is_err(), "{:?}", lead);
        prop_assert!(validate_dns_label(&trail).is_err(), "{:?}", trail);
    }

    #[test]
    fn dns_labels_longer_than_63_are_rejected(label in "[a-z][a-z0-9]{63,100}") {
        prop_assert!(validate_dns_label(&label).is_err(), "{} chars", label.len());
    }
}

#[test]
fn dns_label_bounds() {
    assert!(validate_dns_label("").is_err());
    assert!(validate_dns_label(&"a".repeat(63)).is_ok());
    assert!(validate_dns_label(&"a".repeat(64)).is_err());
}

// ---------------------------------------------------------------------------
// Branches
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_branches_are_accepted(name in valid_branch()) {
        prop_assert!(validate_branch(&name).is_ok(), "{name:?}: {:?}", validate_branch(&name));
    }

    #[test]
    fn branches_with_a_forbidden_sequence_are_rejected(
        name in valid_branch(),
        bad in prop_oneof![
            Just(".."), Just("@{"), Just(" "), Just("~"), Just("^"), Just(":"),
            Just("?"), Just("*"), Just("["), Just("\\"), Just("\t"), Just("\n"),
            Just("\u{0}"), Just("\u{7f}"), Just("\u{1b}"),
        ],
        at in any::<prop::sample::Index>(),
    ) {
        // Insert at a char boundary (the generated names are ASCII).
        let mut s = name.clone();
        s.insert_str(at.index(name.len() + 1), bad);
        prop_assert!(validate_branch(&s).is_err(), "{s:?} was accepted");
    }

    #[test]
    fn branch_rules_agree_with_git(name in ref_like()) {
        // `@` alone is git's shorthand for HEAD (which `--branch` resolves
        // inside a repository); chump refuses it on purpose.
        prop_assume!(name != "@");
        let ours = validate_branch(&name).is_ok();
        let git = git_accepts_branch(&name);
        prop_assert_eq!(ours, git, "{:?}: chump {}, git {}", name, ours, git);
    }
}

#[test]
fn reserved_and_edge_branch_names() {
    for bad in [
        "HEAD", "-x", "/a", "a/", "a//b", "a.", ".a", "a/.b", "a.lock", "a/b.lock",
    ] {
        assert!(validate_branch(bad).is_err(), "{bad:?}");
        assert!(!git_accepts_branch(bad), "git accepts {bad:?}");
    }
    // Stricter than git: `@` alone means HEAD to git.
    assert!(validate_branch("@").is_err());
    for good in [
        "main",
        "release/1.2",
        "feature/x-y_z",
        "a.b",
        "v1.0.0",
        "a@b",
    ] {
        assert!(validate_branch(good).is_ok(), "{good:?}");
        assert!(git_accepts_branch(good), "git rejects {good:?}");
    }
    assert!(validate_branch(&"a".repeat(256)).is_err());
}

// ---------------------------------------------------------------------------
// Repository paths
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn repo_paths_are_accepted_exactly_when_they_stay_inside(p in path_like()) {
        let accepted = validate_repo_path(&p).is_ok();
        let inside = !p.starts_with('/') && !climbs_out(&p);
        prop_assert_eq!(accepted, inside, "{:?}", p);
    }

    #[test]
    fn accepted_repo_paths_stay_inside_the_root(p in path_like()) {
        if validate_repo_path(&p).is_ok() {
            let root = Path::new("/srv/checkout/repo");
            let joined = root.join(&p);
            let normalized = lexical_normalize(&joined);
            prop_assert!(
                normalized.as_deref().is_some_and(|n| n.starts_with(root)),
                "{:?} joined to {:?} normalises to {:?}", p, root, normalized
            );
        }
    }

    #[test]
    fn absolute_and_nul_paths_are_rejected(p in "[a-z/.]{0,20}", at in any::<prop::sample::Index>()) {
        let (slash, backslash) = (format!("/{p}"), format!("\\{p}"));
        prop_assert!(validate_repo_path(&slash).is_err(), "{:?}", slash);
        prop_assert!(validate_repo_path(&backslash).is_err(), "{:?}", backslash);
        let mut with_nul = p.clone();
        with_nul.insert(at.index(p.len() + 1), '\0');
        prop_assert!(validate_repo_path(&with_nul).is_err(), "{with_nul:?}");
    }

    #[test]
    fn arbitrary_accepted_paths_never_escape(p in "\\PC{0,40}") {
        if validate_repo_path(&p).is_ok() {
            prop_assert!(!p.starts_with('/') && !p.contains('\0') && !p.contains('\\'));
            prop_assert!(!climbs_out(&p), "{:?}", p);
        }
    }
}

// ---------------------------------------------------------------------------
// Git URLs
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_git_urls_are_accepted(
        h in host(),
        path in repo_path(),
        port in prop::option::of(1u16..65535),
        user in prop::option::of("[a-z][a-z0-9]{0,8}"),
        dotgit in any::<bool>(),
    ) {
        let suffix = if dotgit { ".git" } else { "" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let userinfo = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        let https = format!("https://{userinfo}{h}{port}/{path}{suffix}");
        let ssh = format!("ssh://{userinfo}{h}{port}/{path}{suffix}");
        let scp = format!("{}@{h}:{path}{suffix}", user.as_deref().unwrap_or("git"));
        let rules = ValidationRules::default();
        prop_assert_eq!(classify_git_url(&https), Ok(GitUrlKind::Https), "{}", https);
        prop_assert_eq!(classify_git_url(&ssh), Ok(GitUrlKind::Ssh), "{}", ssh);
        prop_assert_eq!(classify_git_url(&scp), Ok(GitUrlKind::ScpLike), "{}", scp);
        for url in [&https, &ssh, &scp] {
            prop_assert!(validate_git_url(url, rules).is_ok(), "{}", url);
        }
    }

    #[test]
    fn other_schemes_are_rejected(
        scheme in "[a-z][a-z0-9+.-]{0,10}",
        h in host(),
        path in repo_path(),
    ) {
        let supported = ["https", "http", "ssh", "git+ssh", "ssh+git", "git", "file"];
        prop_assume!(!supported.contains(&scheme.as_str()));
        let url = format!("{scheme}://{h}/{path}");
        prop_assert!(validate_git_url(&url, ValidationRules { allow_file_urls: true, ..ValidationRules::default() }).is_err(), "{}", url);
    }

    #[test]
    fn file_urls_need_the_switch(path in repo_path()) {
        let url = format!("file:///{path}");
        prop_assert!(validate_git_url(&url, ValidationRules::default()).is_err());
        let allowed = ValidationRules { allow_file_urls: true, ..ValidationRules::default() };
        prop_assert!(validate_git_url(&url, allowed).is_ok(), "{}", url);
        let local = format!("/{path}");
        prop_assert!(validate_git_url(&local, ValidationRules::default()).is_err());
    }

    #[test]
    fn urls_with_whitespace_or_control_are_rejected(
        h in host(),
        path in repo_path(),
        bad in "[ \t\r\n\u{0}\u{7f}]",
    ) {
        let url = format!("https://{h}/{path}{bad}x");
        prop_assert!(validate_git_url(&url, ValidationRules::default()).is_err(), "{:?}", url);
    }
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// User names and passwords are upper case and hosts/paths lower case,
    /// so a leak cannot hide behind an accidental substring.
    #[test]
    fn redacted_urls_keep_no_credentials(
        scheme in "(https|http|ssh|git)",
        user in "[A-Z][A-Z0-9]{2,10}",
        password in "[A-Z0-9][A-Z0-9%!$&*+,;=~_.@:-]{2,20}",
        h in host(),
        port in prop::option::of(1u16..65535),
        path in repo_path(),
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        for url in [
            format!("{scheme}://{user}:{password}@{h}{port}/{path}.git"),
            format!("{scheme}://{user}@{h}{port}/{path}"),
            format!("{scheme}://{password}@{h}/{path}"),
        ] {
            let out = redact_url(&url);
            prop_assert!(!out.contains(&user), "{} -> {}", url, out);
            prop_assert!(!out.contains(&password), "{} -> {}", url, out);
            prop_assert!(out.contains(&h), "{} -> {}", url, out);
        }
    }

    #[test]
    fn redacted_scp_like_urls_keep_no_password(
        user in "[A-Z][A-Z0-9]{2,10}",
        password in "[A-Z0-9][A-Z0-9%!$&*+,;=~_.-]{2,20}",
        h in host(),
        path in repo_path(),
    ) {
        let url = format!("{user}:{password}@{h}:{path}.git");
        let out = redact_url(&url);
        prop_assert!(!out.contains(&password), "{} -> {}", url, out);
        prop_assert!(!out.contains(&user), "{} -> {}", url, out);
    }

    #[test]
    fn urls_without_credentials_are_unchanged(h in host(), path in repo_path()) {
        for url in [format!("https://{h}/{path}.git"), format!("git@{h}:{path}.git")] {
            prop_assert_eq!(redact_url(&url), url);
        }
    }
}

// ---------------------------------------------------------------------------
// Repository URL normalisation (webhooks)
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_form_of_one_repo_normalises_equal(
        h in host(),
        path in repo_path(),
        port in 1u16..65535,
        token in "[A-Za-z0-9_]{3,20}",
    ) {
        let upper_host = h.to_ascii_uppercase();
        let forms = [
            format!("https://{h}/{path}"),
            format!("https://{h}/{path}.git"),
            format!("https://{h}/{path}/"),
            format!("http://{h}:{port}/{path}.git"),
            format!("https://x-access-token:{token}@{h}/{path}.git"),
            format!("ssh://git@{h}/{path}.git"),
            format!("ssh://git@{h}:{port}/{path}"),
            format!("git://{h}/{path}.git"),
            format!("git@{h}:{path}.git"),
            format!("git@{h}:{path}"),
            format!("{h}:{path}"),
            format!("HTTPS://{upper_host}/{}.git", path.to_ascii_uppercase()),
            format!("  https://{h}/{path}.git  "),
        ];
        let expected = format!("{h}/{path}");
        for form in &forms {
            prop_assert_eq!(normalize_repo_url(form), Some(expected.clone()), "{:?}", form);
        }
    }

    #[test]
    fn different_repos_normalise_differently(
        h in host(),
        a in repo_path(),
        b in repo_path(),
    ) {
        prop_assume!(a != b);
        prop_assert_ne!(
            normalize_repo_url(&format!("https://{h}/{a}.git")),
            normalize_repo_url(&format!("git@{h}:{b}.git"))
        );
    }
}

// ---------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_images_parse_into_their_parts_and_display_back(img in image()) {
        let parsed = ImageRef::parse(&img.text)
            .map_err(|e| TestCaseError::fail(format!("{}: {e}", img.text)))?;
        prop_assert_eq!(parsed.registry(), img.registry.as_deref(), "{}", img.text);
        prop_assert_eq!(parsed.path(), img.path.as_str(), "{}", img.text);
        prop_assert_eq!(parsed.tag(), img.tag.as_deref(), "{}", img.text);
        prop_assert_eq!(parsed.digest(), img.digest.as_deref(), "{}", img.text);
        prop_assert_eq!(parsed.to_string(), img.text.clone());
        prop_assert!(same_image(&img.text, &parsed.to_string()));
    }

    #[test]
    fn any_parsed_reference_round_trips(s in "[a-zA-Z0-9.:/@_{}-]{1,40}") {
        if let Ok(parsed) = ImageRef::parse(&s) {
            let shown = parsed.to_string();
            let again = ImageRef::parse(&shown)
                .map_err(|e| TestCaseError::fail(format!("{s:?} -> {shown:?}: {e}")))?;
            prop_assert_eq!(again, parsed);
        }
    }

    #[test]
    fn same_image_is_reflexive_and_symmetric(a in image(), b in image()) {
        prop_assert!(same_image(&a.text, &a.text));
        prop_assert_eq!(same_image(&a.text, &b.text), same_image(&b.text, &a.text));
    }

    #[test]
    fn docker_hub_short_names_are_the_full_names(name in "[a-z0-9]{1,10}", tag in "[a-z0-9][a-z0-9.]{0,7}") {
        let full = format!("docker.io/library/{name}:latest");
        prop_assert!(same_image(&name, &full), "{} / {}", name, full);
        let (short, long) = (format!("{name}:{tag}"), format!("index.docker.io/library/{name}:{tag}"));
        prop_assert!(same_image(&short, &long), "{} / {}", short, long);
    }
}

// ---------------------------------------------------------------------------
// Source ids
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ids_in_range_parse(id in 1..=MAX_SOURCE_ID) {
        prop_assert_eq!(parse_source_id(&id.to_string()), Ok(id));
    }

    #[test]
    fn ids_out_of_range_are_rejected(id in prop_oneof![i64::MIN..=0, (MAX_SOURCE_ID + 1)..=i64::MAX]) {
        prop_assert!(parse_source_id(&id.to_string()).is_err());
    }

    #[test]
    fn non_numeric_ids_are_rejected(s in "[^0-9]\\PC{0,20}") {
        prop_assume!(!s.starts_with('+'));
        prop_assert!(parse_source_id(&s).is_err(), "{:?}", s);
    }
}
