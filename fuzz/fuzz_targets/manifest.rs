//! The manifest reader: arbitrary text as an `image_version_file`, through
//! the bounded YAML parser and the image-finding rules. Must never panic,
//! hang or blow up memory (alias bombs, deep nesting are refused by limits).
#![no_main]

use chump_jobs::manifest::{desired_image, parse_documents, YamlLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the container name, so both the "named
    // container" and the "not found" paths are reached.
    let (pick, rest) = match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, data),
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let container = match pick % 4 {
        0 => "app",
        1 => "helloworld",
        2 => "nginx",
        _ => "",
    };
    let limits = YamlLimits::default();
    if let Ok(docs) = parse_documents(text, &limits) {
        assert!(docs.len() <= limits.max_documents);
    }
    if let Ok(image) = desired_image(text, container) {
        assert!(
            !image.is_empty(),
            "an accepted desired image is never empty"
        );
    }
});
