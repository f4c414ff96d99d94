//! Image references: parsing never panics; an accepted reference prints back
//! to a string that parses to the same reference; `same_image` is reflexive
//! and symmetric.
#![no_main]

use chump_jobs::image::{same_image, ImageRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Two references from one input: split at the first newline.
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));

    for s in [a, b] {
        if let Ok(parsed) = ImageRef::parse(s) {
            let shown = parsed.to_string();
            let again = ImageRef::parse(&shown)
                .unwrap_or_else(|e| panic!("{s:?} parsed, but its display {shown:?} did not: {e}"));
            assert_eq!(parsed, again, "display round trip of {s:?}");
            assert_eq!(again.to_string(), shown);
            // Normalising is idempotent. (Its display need not parse back
            // to itself: a lower-cased registry like `abc` no longer looks
            // like a registry; normalized() is for comparing only.)
            let norm = parsed.normalized();
            assert_eq!(
                norm.normalized(),
                norm,
                "normalized() of {s:?} is not idempotent"
            );
            assert!(
                same_image(s, &shown),
                "{s:?} is not the same image as its display"
            );
        }
        assert!(same_image(s, s), "same_image is not reflexive for {s:?}");
    }
    assert_eq!(
        same_image(a, b),
        same_image(b, a),
        "same_image is not symmetric for {a:?} / {b:?}"
    );
});
